#!/usr/bin/python3
"""tests/py/test_output_guards.py — an output never destroys an input, and bad command
lines or bad files get one line saying what is wrong.

Output over input: with --force, debug forward --save, debug scan --out and eval
--save-windows are each pointed at every file the command reads (a copy of the model,
tokenizer, text data, token data through FILE.h5:/tokens, adapters checkpoint; a file of
an HF model directory; the tokenizer found beside the model when none is given): each
must exit non-zero with one stderr line naming the path, and every input's bytes must
be unchanged (hashed before and after). The same commands with --force onto a fresh
path succeed, so the refusals are about the inputs. recipes copy onto the bundled
recipe it copies is refused and leaves that file (same inode: a rename would change it).
Then: data stats --bos past int32 and --bos with --tokenizer, data prepare to a name
npt cannot read back as tokens, a tokenizer of another model vs one truncated
mid-token, --vocab-size larger than the tokenizer, inspect --plot into a missing
directory (an error of the command, not a checkpoint problem), a malformed --set
(exit 2, before the recipe is read) and missing or empty input files named as such.
Run from the repo root: /usr/bin/python3 tests/py/test_output_guards.py
"""
import hashlib
import json
import os
import shutil
import sys
import tempfile

from harness import (HF656, NPT, STORIES260K_BIN as BIN, TOK512 as TOK, VALID_TEXT as TEXT, built, check, exit_code,
                     run_npt)

SAFE = "recipes/stories260k-safe.json"


def npt(*args, env=None):
    p = run_npt(*args, timeout=300, env=env)
    return p.returncode, p.stdout, p.stderr


def digest(path):
    """sha256 of a file, or of every file of a directory by name."""
    if os.path.isdir(path):
        return {n: digest(os.path.join(path, n)) for n in sorted(os.listdir(path))}
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


PRISTINE = {}  # input path -> a copy of it, to put back if a guard fails, so one failure does not cascade


def keep_pristine(path):
    spare = path + ".pristine"
    (shutil.copytree if os.path.isdir(path) else shutil.copy)(path, spare)
    PRISTINE[path] = spare


def restore(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
        shutil.copytree(PRISTINE[path], path)
    else:
        shutil.copy(PRISTINE[path], path)


def one_line(err):
    lines = err.strip().splitlines()
    return lines[0] if len(lines) == 1 else None


def expect_refused(argv, out, inputs, words=None):
    """npt argv must refuse to write out (exit 1, one line naming out and containing
    words), every input path's bytes unchanged."""
    before = {p: digest(p) for p in inputs}
    rc, stdout, err = npt(*argv)
    line = one_line(err)
    changed = [p for p in inputs if digest(p) != before[p]]
    for p in changed:
        restore(p)
    verb = " ".join(argv[:2] if argv[0] == "debug" else argv[:1])
    check(rc == 1 and line is not None and out in line and (words is None or words in line) and not changed,
          f"npt {verb} {argv[-3]} {out} --force: exit {rc} (want 1), one line naming it: {line!r}"
          f"{'; CHANGED ' + str(changed) if changed else ''}")


def expect_written(argv, out):
    if os.path.exists(out):
        os.remove(out)
    rc, _, err = npt(*argv)
    check(rc == 0 and os.path.isfile(out) and os.path.getsize(out) > 0,
          f"control: npt {' '.join(argv[:2] if argv[0] == 'debug' else argv[:1])} ... --force onto a fresh path {os.path.basename(out)} writes it "
          f"(exit {rc}) {err.strip()[-160:]!r}")


def make_inputs(tmp):
    """Copies of every input, so a failed guard destroys only the copy."""
    m, t, d = os.path.join(tmp, "model.bin"), os.path.join(tmp, "tok.bin"), os.path.join(tmp, "data.txt")
    shutil.copy(BIN, m)
    shutil.copy(TOK, t)
    with open(TEXT, "rb") as f, open(d, "wb") as g:
        g.write(f.read(60000))
    h5 = os.path.join(tmp, "tokens.h5")
    rc, _, err = npt("data", "prepare", d, "-o", h5, "--tokenizer", t, "--quiet")
    check(rc == 0, f"fixture: data prepare to .h5 ({err.strip()[-120:]})")
    run = os.path.join(tmp, "run")
    rc, _, err = npt("train", SAFE, "--set", f"output_dir={run}", "--set", "train.max_steps=2",
                     "--set", "train.warmup_steps=1", "--set", "threads=1", "--set", f"model={m}",
                     "--set", f"tokenizer={t}", "--set", f"data.train={d}", "--set", "data.seq_len=32")
    a = os.path.join(tmp, "adapters.h5")
    ok = rc == 0 and os.path.isfile(os.path.join(run, "final.h5"))
    check(ok, f"fixture: a 2-step run for an adapters checkpoint ({err.strip()[-160:]})")
    if ok:
        shutil.copy(os.path.join(run, "final.h5"), a)
    for p in (m, t, d, h5, a):
        keep_pristine(p)
    return m, t, d, h5, a


def test_output_over_input(tmp):
    m, t, d, h5, a = make_inputs(tmp)
    base = ["--model", m, "--tokenizer", t]
    ins = [m, t, d, h5, a]
    fwd_prompt = ["debug", "forward", *base, "--adapters", a, "--prompt", "hi"]
    fwd_data = ["debug", "forward", *base, "--data", d, "--sample", "0", "--seq-len", "32"]
    scan = ["debug", "scan", *base, "--adapters", a, "--data", d, "--samples", "1", "--seq-len", "32"]
    ev = ["eval", *base, "--adapters", a, "--data", d, "--windows", "1", "--seq-len", "32"]
    for target in (m, t, a):
        expect_refused(fwd_prompt + ["--save", target, "--force"], target, ins, "is the input")
    expect_refused(fwd_data + ["--save", d, "--force"], d, ins, "is the input")
    for cmd, flag in ((scan, "--out"), (ev, "--save-windows")):
        for target in (m, t, d, a):
            expect_refused(cmd + [flag, target, "--force"], target, ins, "is the input")
    # token data given as FILE.h5:/DATASET reads FILE.h5
    for cmd, flag in ((["debug", "scan", *base, "--samples", "1", "--seq-len", "32"], "--out"),
                      (["eval", *base, "--windows", "1", "--seq-len", "32"], "--save-windows")):
        expect_refused(cmd + ["--data", h5 + ":/tokens", flag, h5, "--force"], h5, ins, "is the input")
    fresh = os.path.join(tmp, "fresh.out")
    expect_written(scan + ["--out", fresh, "--force"], fresh)
    expect_written(ev + ["--save-windows", fresh, "--force"], fresh)


def test_model_directories(tmp):
    """Inputs that are not named on the command line: an HF directory's files, and the
    tokenizer found beside a llama2.c model."""
    hf = os.path.join(tmp, "hf")
    shutil.copytree(HF656, hf)
    d = os.path.join(tmp, "dir-data.txt")
    with open(TEXT, "rb") as f, open(d, "wb") as g:
        g.write(f.read(60000))
    keep_pristine(hf)
    keep_pristine(d)
    ev = ["eval", "--model", hf, "--data", d, "--windows", "1", "--seq-len", "32"]
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        target = os.path.join(hf, name)
        expect_refused(ev + ["--save-windows", target, "--force"], target, [hf, d], "input directory")
    target = os.path.join(hf, "tokenizer.json")
    expect_refused(["debug", "scan", "--model", hf, "--data", d, "--samples", "1", "--seq-len", "32",
                    "--out", target, "--force"], target, [hf, d], "input directory")
    target = os.path.join(hf, "model.safetensors")
    expect_refused(["debug", "forward", "--model", hf, "--prompt", "hi", "--save", target, "--force"], target, [hf])
    fresh = os.path.join(tmp, "hf-windows.u32")
    expect_written(ev + ["--save-windows", fresh, "--force"], fresh)

    beside = os.path.join(tmp, "beside")
    os.mkdir(beside)
    shutil.copy(BIN, os.path.join(beside, "stories260K.bin"))
    shutil.copy(TOK, os.path.join(beside, "tok512.bin"))
    m, t = os.path.join(beside, "stories260K.bin"), os.path.join(beside, "tok512.bin")
    keep_pristine(m)
    keep_pristine(t)
    for argv in (["eval", "--model", m, "--data", d, "--windows", "1", "--seq-len", "32", "--save-windows"],
                 ["debug", "scan", "--model", m, "--data", d, "--samples", "1", "--seq-len", "32", "--out"],
                 ["debug", "forward", "--model", m, "--prompt", "hi", "--save"]):
        expect_refused(argv + [t, "--force"], t, [m, t, d], "is the input")


def test_recipe_copy(tmp):
    src = os.path.abspath(SAFE)
    ino = os.stat(src).st_ino
    rc, _, err = npt("recipes", "copy", "stories260k-safe", SAFE, "--force")
    line = one_line(err)
    check(rc == 1 and line is not None and SAFE in line and os.stat(src).st_ino == ino,
          f"recipes copy stories260k-safe {SAFE} --force (onto its source): exit {rc} (want 1), {line!r}, "
          f"file left in place: {os.stat(src).st_ino == ino}")
    rdir = os.path.join(tmp, "recipes")
    os.mkdir(rdir)
    mine = os.path.join(rdir, "stories260k-safe.json")
    shutil.copy(SAFE, mine)
    env = dict(os.environ, NPT_RECIPES_DIR=rdir)
    for dest in (mine, rdir):  # a directory DEST means DEST/NAME.json: the source again
        ino = os.stat(mine).st_ino
        rc, _, err = npt("recipes", "copy", "stories260k-safe", dest, "--force", env=env)
        line = one_line(err)
        check(rc == 1 and line is not None and mine in line and os.stat(mine).st_ino == ino,
              f"recipes copy onto its source as {'a directory' if dest == rdir else 'a file'}: exit {rc}, {line!r}")
    other = os.path.join(tmp, "copy.json")
    rc, _, err = npt("recipes", "copy", "stories260k-safe", other, "--force", env=env)
    check(rc == 0 and digest(other) == digest(mine), f"control: recipes copy to another path works (exit {rc})")


def test_data_flags(tmp):
    u16 = os.path.join(tmp, "stats.u16")
    rc, _, err = npt("data", "prepare", TEXT, "-o", u16, "--tokenizer", TOK, "--quiet")
    check(rc == 0, f"fixture: data prepare to .u16 ({err.strip()[-120:]})")
    rc, _, err = npt("data", "stats", u16, "--bos", "2147483648")
    line = one_line(err)
    printable = all(32 <= ord(c) < 127 for c in err.strip())
    check(rc == 2 and line is not None and "--bos" in line and "2147483647" in line and printable,
          f"data stats --bos 2147483648: exit {rc} (want 2), one printable line with the range: {err.strip()!r}")
    rc, out, err = npt("data", "stats", u16, "--bos", "2147483647")
    check(rc == 0 and "BOS = 2147483647" in out, f"data stats --bos 2147483647 (INT32_MAX) is accepted (exit {rc})")
    rc, out, err = npt("data", "stats", u16, "--bos", "1", "--tokenizer", TOK)
    line = one_line(err)
    check(rc == 2 and out == "" and line is not None and "--bos" in line and "--tokenizer" in line,
          f"data stats --bos with --tokenizer: exit {rc} (want 2), {line!r}")
    for name in ("x.foo", "x.txt", "noext"):
        out_path = os.path.join(tmp, name)
        rc, _, err = npt("data", "prepare", TEXT, "-o", out_path, "--tokenizer", TOK, "--quiet")
        line = one_line(err)
        check(rc == 2 and line is not None and out_path in line and all(e in line for e in (".u16", ".bin", ".u32", ".h5"))
              and not os.path.exists(out_path),
              f"data prepare -o {name}: exit {rc} (want 2), names the token file names, nothing written: {line!r}")
    u32 = os.path.join(tmp, "x.u32")
    rc, _, _ = npt("data", "prepare", TEXT, "-o", u32, "--tokenizer", TOK, "--quiet")
    rc2, out, _ = npt("data", "stats", u32)
    check(rc == 0 and rc2 == 0 and "tokens" in out, f"control: -o x.u32 is written and read back (exit {rc}, {rc2})")


def test_tokenizer_size(tmp):
    rc, _, err = npt("generate", "--model", HF656, "--tokenizer", TOK, "--steps", "3")
    line = one_line(err)
    check(rc == 1 and line is not None and "holds 512 tokens, fewer than the model's vocabulary" in line
          and "another model" in line and "truncated" not in line,
          f"generate with another model's (smaller) tokenizer: exit {rc}, {line!r}")
    with open(TOK, "rb") as f:
        body = f.read()
    cut = os.path.join(tmp, "cut.bin")
    with open(cut, "wb") as f:
        f.write(body[:1000])  # mid-token (the records are 8 bytes + piece)
    rc, _, err = npt("generate", "--model", BIN, "--tokenizer", cut, "--steps", "3")
    line = one_line(err)
    check(rc == 1 and line is not None and "is truncated" in line and cut in line,
          f"a tokenizer cut mid-token is still truncated: exit {rc}, {line!r}")
    out = os.path.join(tmp, "never.u16")
    rc, _, err = npt("data", "prepare", TEXT, "-o", out, "--tokenizer", TOK, "--vocab-size", "99999999", "--quiet")
    line = one_line(err)
    check(rc == 1 and line is not None and "--vocab-size 99999999" in line and "512" in line
          and "truncated" not in line and not os.path.exists(out),
          f"data prepare --vocab-size larger than the tokenizer names the flag: exit {rc}, {line!r}")


def test_plot_error(tmp, ckpt):
    rc, _, _ = npt("inspect", ckpt)
    check(rc == 0, f"control: the checkpoint has no problems (inspect exits {rc})")
    bad = os.path.join(tmp, "nosuch", "p.svg")
    rc, out, err = npt("inspect", ckpt, "--plot=" + bad)
    line = one_line(err)
    check(rc == 1 and line is not None and line.startswith("npt inspect: error: cannot write the plot")
          and os.path.join(tmp, "nosuch") in line and "does not exist" in line,
          f"inspect --plot into a missing directory: exit {rc} (want 1), one stderr line naming it: {line!r}")
    check("no problems found" in out and "PROBLEMS" not in out and bad not in out,
          "... the report is printed and does not list the plot among the checkpoint's problems")
    rc, out, err = npt("inspect", ckpt, "--json", "--plot=" + bad)
    try:
        report = json.loads(out)
    except ValueError:
        report = {}
    check(rc == 1 and one_line(err) is not None and report.get("problems") == [] and "plot" not in report,
          f"... with --json: exit {rc}, one stderr line, problems {report.get('problems')} (want [])")


def test_bad_set(tmp):
    for verb in ("train", "validate"):
        for value in ("train.max_steps", "=3", ""):
            # a recipe that does not exist: the --set error must come before it is read
            rc, out, err = npt(verb, os.path.join(tmp, "no-such-recipe.json"), "--set", value)
            line = one_line(err)
            check(rc == 2 and line is not None and f"npt {verb}: error: --set expects" in line and f"'{value}'" in line,
                  f"npt {verb} --set {value!r}: exit {rc} (want 2), {line!r}")
    rc, _, err = npt("validate", SAFE, "--set", "train.max_steps=5", "--set", "train.warmup_steps=1")
    check(rc == 0, f"control: a well-formed --set still validates (exit {rc}) {err.strip()[:120]!r}")


def test_missing_inputs(tmp):
    empty = os.path.join(tmp, "empty.h5")
    open(empty, "wb").close()
    missing = os.path.join(tmp, "nosuch.h5")
    for argv, path, want in ((["inspect", missing], missing, "does not exist"),
                             (["inspect", empty], empty, "is empty"),
                             (["debug", "replay", missing], missing, "does not exist"),
                             (["debug", "replay", empty], empty, "is empty")):
        rc, _, err = npt(*argv)
        line = one_line(err)
        check(rc == 1 and line is not None and path in line and want in line,
              f"npt {' '.join(argv[:-1])} on a {'missing' if 'nosuch' in path else '0-byte'} file: exit {rc}, {line!r}")


def main():
    if not built(NPT):
        return 1
    with tempfile.TemporaryDirectory(prefix="npt-guards-") as tmp:
        test_output_over_input(tmp)
        test_model_directories(tmp)
        test_recipe_copy(tmp)
        test_data_flags(tmp)
        test_tokenizer_size(tmp)
        test_plot_error(tmp, os.path.join(tmp, "adapters.h5"))
        test_bad_set(tmp)
        test_missing_inputs(tmp)
    return exit_code()


if __name__ == "__main__":
    sys.exit(main())
