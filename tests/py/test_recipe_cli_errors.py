#!/usr/bin/python3
"""tests/py/test_recipe_cli_errors.py — `npt validate` and `npt recipes` end to end:
exit codes, one "path: message" line per error, --json, --set, model-shape checks
(against the MANIFEST's stories260K shape: dim 64, hidden 172, 5 layers), list / show /
copy / keys, and docs/recipes.md in sync with `npt recipes keys`. Named *errors* so that
`make asan` runs it against the ASan build. Run from the repo root.
"""
import json
import os
import subprocess
import sys
import tempfile
from harness import NPT, built, check, exit_code, run_npt, temp_files


def npt(*args, env=None):
    e = dict(os.environ)
    e.pop("NPT_RECIPES_DIR", None)
    if env:
        e.update(env)
    p = run_npt(*args, timeout=120, env=e)
    return p.returncode, p.stdout, p.stderr


def bundled_names():
    return sorted(f[:-5] for f in os.listdir("recipes") if f.endswith(".json"))


def test_help():
    for args in (["validate", "--help"], ["recipes", "--help"], ["recipes", "copy", "-h"]):
        rc, out, _ = npt(*args)
        check(rc == 0 and "usage: npt" in out, f"npt {' '.join(args)} exits 0 with usage")


def test_validate_bundled():
    for name in bundled_names():
        # the demo's recipes name files the demo makes (demo-out/): before it has run, the
        # recipe itself is checked without opening them
        early = name.startswith("demo-") and not os.path.isdir("demo-out")
        rc, out, err = npt("validate", name, *(["--schema-only"] if early else []))
        check(rc == 0 and out.splitlines()[0].endswith(f"{name}.json: OK"), f"npt validate {name}: OK, exit 0")
        if rc:
            print("NOTE:", err.strip())
    rc, out, _ = npt("validate", "stories260k-safe")
    check("(dim 64, hidden 172, 5 layers)" in out, "validate loads the model and shows its shape")


def write(d, name, text):
    p = os.path.join(d, name)
    with open(p, "w") as f:
        f.write(text)
    return p


def test_validate_errors(d):
    bad = write(d, "bad.json", """// three problems
{
  "model": "../shared/models/stories260K/stories260K.bin",
  "learning_rate": 5e-5,
  "npt": {"rank": "sixteen"},
  "train": {"lr": "fast"}
}
""")
    rc, out, err = npt("validate", bad)
    lines = err.strip().splitlines()
    check(rc == 1, "invalid recipe exits 1")
    check(len(lines) == 4 and lines[-1] == f"{bad}: 3 errors", f"three error lines and a count line (got {len(lines)})")
    check('learning_rate: unknown key; did you mean "train.lr"? (the seed\'s --learning_rate is train.lr)' in lines,
          "seed flag hint printed")
    check('npt.rank: expected an integer >= 1, got string "sixteen"' in lines, "rank type error: expected vs got")
    check('train.lr: expected a number > 0, got string "fast"' in lines, "lr type error: expected vs got")
    check(out == "", "nothing on stdout for an invalid recipe")

    rc, out, _ = npt("validate", bad, "--json")
    j = json.loads(out)
    check(rc == 1 and j["ok"] is False and len(j["errors"]) == 3 and j["resolved"] is None,
          "--json: ok false, three errors, no resolved recipe")
    paths = sorted(e["path"] for e in j["errors"])
    check(paths == ["learning_rate", "npt.rank", "train.lr"], f"--json error paths {paths}")

    syn = write(d, "syntax.json", '{\n  "model": "x",\n  "npt": {"rank": 4,}\n}\n')
    rc, out, err = npt("validate", syn, "--json")
    j = json.loads(out)
    e = j["errors"][0] if j["errors"] else {}
    # `  "npt": {"rank": 4,}`: the trailing comma is line 3, column 20
    check(rc == 1 and e.get("line") == 3 and e.get("column") == 20 and e.get("path") == f"{syn}:3:20",
          "--json syntax error has line 3, column 20")
    rc, _, err = npt("validate", syn)
    check(err.startswith(f"{syn}:3:20: JSON syntax error: trailing comma"), "text syntax error is FILE:LINE:COL: ...")


def test_validate_model_checks(d):
    # MANIFEST: stories260K has dim 64, hidden_dim 172, 5 layers.
    rc, _, err = npt("validate", "stories260k-safe", "--set", "npt.rank=65")
    check(rc == 1 and "npt.rank: 65 is larger than this model allows" in err, "rank 65 > dim 64 refused")
    rc, _, err = npt("validate", "stories260k-safe", "--set", "npt.rank=64")
    check(rc == 0, "rank 64 accepted")
    rc, _, err = npt("validate", "stories260k-safe", "--set=npt.layers=[0,5]")
    check(rc == 1 and "npt.layers: layer 5 does not exist; the model has 5 layers (0..4)" in err,
          "layer 5 of a 5-layer model refused")
    # windows longer than the model's context (512 in stories260K's header): an error for validate and train
    # (as --seq-len for eval and debug), not a warning before a run of positions the model never saw
    rc, _, err = npt("validate", "stories260k-safe", "--set", "data.seq_len=1024")
    check(rc == 1 and "data.seq_len: 1024 is longer than the model's context (512)" in err and "at most 512" in err,
          f"validate: data.seq_len 1024 beyond the context 512 is an error: exit {rc}, {err.strip()[:200]!r}")
    rc, _, err = npt("validate", "stories260k-safe", "--set", "data.seq_len=512")
    check(rc == 0, f"data.seq_len 512 = the context is accepted (exit {rc})")
    out_dir = os.path.join(d, "long-windows")
    rc, _, err = npt("train", "stories260k-safe", "--set", "data.seq_len=1024", "--set", "train.max_steps=1",
                     "--set", "train.warmup_steps=0", "--set", f"output_dir={out_dir}")
    lines = err.strip().splitlines()
    check(rc == 1 and len(lines) == 1 and lines[0].startswith("npt train: error: data.seq_len: 1024")
          and "(512)" in lines[0] and "at most 512" in lines[0] and not os.path.exists(out_dir),
          f"train: data.seq_len 1024 beyond the context 512 refused before any work, one line: exit {rc}, {lines[:2]}")
    rc, _, err = npt("validate", "stories260k-safe", "--set", "data.train=/nonexistent/train.txt")
    check(rc == 1 and err.startswith("data.train: /nonexistent/train.txt: No such file"), "missing data file named")
    # train names the recipe key of a missing data file too, before the model or any data is loaded
    out_dir = os.path.join(d, "missing-valid")
    rc, _, err = npt("train", "stories260k-safe", "--set", "data.valid=/nonexistent/valid.txt", "--set",
                     f"output_dir={out_dir}")
    lines = err.strip().splitlines()
    check(rc == 1 and lines[-1].startswith("npt train: error: data.valid: /nonexistent/valid.txt: No such file")
          and not os.path.exists(out_dir), f"train: a missing data.valid is named by its key: exit {rc}, {lines[-1:]}")
    missing = write(d, "missing-model.json", '{"model": "no/such/model.bin", "data": {"train": "x"}}')
    rc, _, err = npt("validate", missing)
    check(rc == 1 and "model: no/such/model.bin: No such file" in err, "missing model file named")
    rc, out, _ = npt("validate", missing, "--schema-only")
    check(rc == 0 and "OK" in out, "--schema-only skips file and model checks")
    # A schema error and a missing file in one recipe: both are listed by one validate.
    both = write(d, "both.json", '{"model": "no/such/model.bin", "train": {"lr": "fast"}, "data": {"train": "x"}}')
    rc, _, err = npt("validate", both)
    lines = err.strip().splitlines()
    check(rc == 1 and 'train.lr: expected a number > 0, got string "fast"' in lines
          and any(l.startswith("model: no/such/model.bin: No such file") for l in lines)
          and any(l.startswith("data.train: x: No such file") for l in lines) and lines[-1] == f"{both}: 3 errors",
          f"schema error and missing files reported together: {lines}")
    # the same for a data.sources entry (its list was dropped with the recipe before)
    src = write(d, "sources.json", '{"model": "no/such/model.bin", "data": {"seq_len": "abc", '
                '"sources": [{"path": "no/such/source.txt"}]}}')
    rc, _, err = npt("validate", src)
    lines = err.strip().splitlines()
    check(rc == 1 and any(l.startswith("data.seq_len: expected an integer") for l in lines)
          and any(l.startswith("data.sources[0].path: no/such/source.txt: No such file") for l in lines)
          and lines[-1] == f"{src}: 3 errors",
          f"schema error and a missing data.sources path reported together: {lines}")
    rc, _, err = npt("validate", both, "--schema-only")
    check(rc == 1 and err.strip().splitlines()[-1] == f"{both}: 1 error", "--schema-only: the schema error alone")
    rc, out, err = npt("validate", "stories260k-safe", "--set", "train.lr=3e-4")
    check(rc == 0 and "warning: train.lr: 3e-4 exceeds the safe-mode cap; using 1e-4" in err,
          "safe-mode lr cap warning printed, still valid")
    rc, _, err = npt("validate", "stories260k-safe", "--set", "train.learning_rate=1")
    check(rc == 1 and 'train.learning_rate: unknown key; did you mean "lr"?' in err, "--set unknown key: did you mean")


def test_validate_usage():
    rc, _, err = npt("validate")
    check(rc == 2 and "which recipe" in err, "no recipe: exit 2")
    rc, _, err = npt("validate", "npt-safe", "--bogus")
    check(rc == 2 and "unknown option '--bogus'" in err, "unknown option: exit 2")
    rc, _, err = npt("validate", "npt-safe", "npt-full")
    check(rc == 2, "two recipes: exit 2")
    rc, _, err = npt("validate", "no-such-recipe")
    check(rc == 1 and "no-such-recipe" in err and "no bundled recipe" in err, "unknown recipe name: exit 1, named")
    rc, _, err = npt("validate", "npt-safe", "--set")
    check(rc == 2 and "--set needs a value" in err, "--set without a value: exit 2")


def test_stdout_full():
    """Output that cannot be written (a full disk) is an error, not a silent exit 0."""
    for args in (["recipes", "list"], ["recipes", "show", "npt-safe"], ["validate", "npt-safe"], ["--help"]):
        with open("/dev/full", "w") as full:
            p = subprocess.run([NPT, *args], stdout=full, stderr=subprocess.PIPE, text=True)
        check(p.returncode == 1 and "writing standard output failed" in p.stderr,
              f"npt {' '.join(args)} > /dev/full: exit {p.returncode} (want 1): {p.stderr.strip()[-120:]}")


def test_recipes(d):
    names = bundled_names()
    rc, out, _ = npt("recipes")
    listed = [l.split()[0] for l in out.splitlines() if l.startswith("  ")]
    check(rc == 0 and listed == names, f"npt recipes lists {names}")
    rc, out, _ = npt("recipes", "list", "--json")
    j = json.loads(out)
    check(rc == 0 and [r["name"] for r in j] == names and all(r["valid"] and r["description"] for r in j),
          "list --json: every bundled recipe valid with a description")

    rc, out, _ = npt("recipes", "show", "npt-safe")
    with open("recipes/npt-safe.json") as f:
        check(rc == 0 and out == f.read(), "show prints the file verbatim, comments included")
    rc, _, err = npt("recipes", "show", "nope")
    check(rc == 1 and "nope: no bundled recipe of that name" in err, "show of an unknown name: exit 1")

    dest = os.path.join(d, "mine.json")
    rc, out, _ = npt("recipes", "copy", "npt-safe", dest)
    with open(dest) as f, open("recipes/npt-safe.json") as g:
        check(rc == 0 and f.read() == g.read(), "copy writes an identical file")
    with open(dest, "w") as f:
        f.write("// my edits\n")
    rc, _, err = npt("recipes", "copy", "npt-full", dest)
    with open(dest) as f:
        check(rc == 1 and "already exists" in err and f.read() == "// my edits\n",
              "copy refuses to overwrite and leaves the file alone")
    rc, _, _ = npt("recipes", "copy", "npt-full", dest, "--force")
    with open(dest) as f, open("recipes/npt-full.json") as g:
        check(rc == 0 and f.read() == g.read(), "copy --force overwrites")
    sub = os.path.join(d, "into")
    os.mkdir(sub)
    rc, _, _ = npt("recipes", "copy", "stories260k-safe", sub)
    check(rc == 0 and os.listdir(sub) == ["stories260k-safe.json"], "copy into a directory keeps the name")
    check(not temp_files(d), "no temporary files left behind")
    rc, _, err = npt("recipes", "copy", "npt-safe", "/nonexistent-dir/x.json")
    check(rc == 1 and "cannot create" in err, "copy to an unwritable place: exit 1")
    rc, _, err = npt("recipes", "copy", "npt-safe")
    check(rc == 2 and "usage: npt recipes copy" in err, "copy without DEST: exit 2")
    rc, _, err = npt("recipes", "frobnicate")
    check(rc == 2 and "unknown subcommand" in err, "unknown subcommand: exit 2")

    own = os.path.join(d, "own")
    os.mkdir(own)
    write(own, "only-one.json", '{"model": "m", "description": "just me"}')
    rc, out, _ = npt("recipes", "list", env={"NPT_RECIPES_DIR": own})
    check(rc == 0 and "only-one" in out and "just me" in out and "npt-safe" not in out, "NPT_RECIPES_DIR is used")
    rc, _, err = npt("recipes", env={"NPT_RECIPES_DIR": os.path.join(d, "nowhere")})
    check(rc == 1 and "NPT_RECIPES_DIR" in err, "a missing NPT_RECIPES_DIR is an error")


def test_keys():
    rc, out, _ = npt("recipes", "keys")
    rows = [l for l in out.splitlines() if l.startswith("| `")]
    check(rc == 0 and out.startswith("| key | default |") and len(rows) == 55, f"keys: Markdown table of 55 keys ({len(rows)})")
    check("| `train.lr` | `1e-4` | a number > 0 |" in out, "keys row for train.lr: default and range")
    rc, out2, _ = npt("recipes", "keys", "--json")
    j = json.loads(out2)
    check(rc == 0 and len(j) == 55 and {"key", "type", "default", "allowed", "doc"} <= set(j[0]), "keys --json")
    with open("docs/recipes.md") as f:
        docs = f.read()
    check(out.strip() in docs, "docs/recipes.md holds the current `npt recipes keys` table")


def main():
    if not built(NPT):
        return 1
    with tempfile.TemporaryDirectory() as d:
        test_help()
        test_validate_bundled()
        test_validate_errors(d)
        test_validate_model_checks(d)
        test_validate_usage()
        test_stdout_full()
        test_recipes(d)
        test_keys()
    return exit_code()


if __name__ == "__main__":
    sys.exit(main())
