#!/usr/bin/python3
"""tests/py/test_validate_data.py — what `npt validate` says about a recipe's data, so that
a recipe it passes is not one `npt train` refuses at once because of the data.

Bad token data: a .u16 of an odd number of bytes, a .u16 shorter than one window,
data.format "hdf5" on a text file, a data.valid_fraction leaving no training window, an
HDF5 dataset that does not exist: validate exits 1 with a "key: message" line naming the
file, all of them at once in one run; the message is the one train gives (checked for
the first ones against `npt train`). A token file with ids beyond the vocabulary passes
validate (it reads no ids, as documented) and train refuses it.
data.valid the same file as a training source: refused by validate and by train, under
data.valid, naming both settings, for data.train spelled differently ("./x"), through a
symlink, for one of data.sources, and for the same HDF5 dataset ("x.h5" and
"x.h5:/tokens"), for a file inside a training folder and a folder holding a training
file; another dataset of the same HDF5 file is accepted.
The summary of a valid recipe with data.sources lists each source with its weight, and
the validation data (data.valid or data.valid_fraction).
Run from the repo root: /usr/bin/python3 tests/py/test_validate_data.py
"""
import json
import os
import shutil
import sys
import tempfile

import h5py
import numpy as np

from harness import NPT, STORIES260K_BIN, TOK512, VALID_TEXT, built, check, exit_code, run_npt, set_flags


def npt(*args, cache):
    env = dict(os.environ, NPT_CACHE_DIR=cache)
    p = run_npt(*args, timeout=300, env=env)
    return p.returncode, p.stdout, p.stderr


def make_files(d):
    """The recipe (text data: validate does not tokenize it) and the data files."""
    recipe = os.path.join(d, "r.json")
    with open(recipe, "w") as f:
        json.dump({"model": STORIES260K_BIN, "tokenizer": TOK512, "npt": {"rank": 4},
                   "data": {"train": VALID_TEXT, "seq_len": 32}, "train": {"max_steps": 2, "batch_size": 2},
                   "output_dir": os.path.join(d, "run")}, f)
    p = lambda name: os.path.join(d, name)
    with open(p("odd.u16"), "wb") as f:
        f.write(b"\x01\x00\x02")
    np.array([1, 5, 6], "<u2").tofile(p("tiny.u16"))
    np.array([1, 7, 8], "<u2").tofile(p("tiny2.u16"))
    np.array([1, 600, 3, 4] * 100, "<u2").tofile(p("oov.u16"))  # 600 >= stories260K's vocabulary of 512
    np.array([1, 5, 6, 7] * 100, "<u2").tofile(p("ok.u16"))
    with h5py.File(p("t.h5"), "w") as h:
        h["tokens"] = np.array([1, 5, 6, 7] * 100, "<i4")
        h["other"] = np.array([1, 8, 9, 10] * 100, "<i4")
    return recipe, p


def error_lines(err):
    return [l for l in err.splitlines() if l.strip()]


def test_bad_token_data(recipe, p, cache):
    cases = [("odd", ["data.train=" + p("odd.u16")], "data.train", "not a whole number of uint16 tokens"),
             ("short", ["data.train=" + p("tiny.u16")], "data.train", "fewer than one window"),
             ("hdf5 format on text", ["data.format=hdf5"], "data.train", "not an HDF5 token dataset"),
             ("no training window", ["data.train=" + p("ok.u16"), "data.valid_fraction=0.999"], "data.train",
              "leaves no training window"),
             ("missing dataset", ["data.train=" + p("t.h5") + ":/nope"], "data.train", "has no dataset /nope")]
    for label, sets, key, words in cases:
        rc, out, err = npt("validate", recipe, *set_flags(sets), cache=cache)
        lines = error_lines(err)
        check(rc == 1 and "OK" not in out and any(l.startswith(key + ": ") and words in l for l in lines),
              f"validate refuses {label} data: exit {rc} (want 1), '{key}: ...{words}...': {err.strip()[:200]!r}")
        if label in ("odd", "short", "hdf5 format on text"):  # the same words as train's own refusal
            rc, _, err = npt("train", recipe, *set_flags(sets), cache=cache)
            check(rc != 0 and words in err, f"control: npt train refuses {label} data too (exit {rc})")
    # every data problem in one run, each under its own key
    srcs = json.dumps([{"path": p("odd.u16")}, {"path": p("ok.u16")}, {"path": p("tiny.u16"), "weight": 2}])
    rc, _, err = npt("validate", recipe, *set_flags(["data.train=", "data.sources=" + srcs, "data.valid=" + p("tiny2.u16")]),
                     cache=cache)
    lines = error_lines(err)
    want = ["data.sources[0].path: ", "data.sources[2].path: ", "data.valid: "]
    check(rc == 1 and all(any(l.startswith(w) for l in lines) for w in want)
          and not any(l.startswith("data.sources[1]") for l in lines),
          f"validate lists the bad sources all at once under their keys, not the good one: {lines}")
    # ids are not scanned by validate (a pass over the corpus); train finds them
    rc, out, err = npt("validate", recipe, *set_flags(["data.train=" + p("oov.u16")]), cache=cache)
    check(rc == 0 and "OK" in out, f"validate does not scan token ids (documented): exit {rc} {err.strip()[:120]!r}")
    rc, _, err = npt("train", recipe, *set_flags(["data.train=" + p("oov.u16")]), cache=cache)
    check(rc != 0 and "outside the model's vocabulary" in err, f"control: train refuses the out-of-vocabulary id (exit {rc})")
    rc, out, err = npt("validate", recipe, *set_flags(["data.train=" + p("ok.u16"), "data.valid=" + p("t.h5") + ":/other"]),
                       cache=cache)
    check(rc == 0 and "OK" in out, f"control: good token and HDF5 data validate: exit {rc} {err.strip()[:200]!r}")


def expect_overlap(recipe, cache, sets, label, valid_shown, key, verbs=("validate", "train")):
    for verb in verbs:
        rc, out, err = npt(verb, recipe, *set_flags(sets), cache=cache)
        line = next((l for l in error_lines(err) if "data.valid: " in l), "")
        check(rc == 1 and valid_shown in line and key in line and "valid_fraction" in line and "OK" not in out,
              f"{verb} refuses data.valid = {label}: exit {rc} (want 1), names data.valid and {key}: {line[:220]!r}")


def test_valid_is_training_data(recipe, p, d, cache):
    here = os.path.relpath(VALID_TEXT)
    dotted = os.path.join(".", here)
    expect_overlap(recipe, cache, ["data.valid=" + dotted], "data.train spelled ./", dotted, "data.train")
    link = p("link.txt")
    os.symlink(os.path.abspath(VALID_TEXT), link)
    expect_overlap(recipe, cache, ["data.valid=" + link], "a symlink to data.train", link, "data.train", ("validate",))
    srcs = json.dumps([{"path": p("ok.u16"), "weight": 0.5}, {"path": VALID_TEXT}])
    expect_overlap(recipe, cache, ["data.train=", "data.sources=" + srcs, "data.valid=" + here],
                   "one of data.sources", here, "data.sources[1].path")
    expect_overlap(recipe, cache, ["data.train=" + p("t.h5"), "data.valid=" + p("t.h5") + ":/tokens"],
                   "the same HDF5 dataset", p("t.h5") + ":/tokens", "data.train", ("validate",))
    rc, out, err = npt("validate", recipe, *set_flags(["data.train=" + p("t.h5"), "data.valid=" + p("t.h5") + ":/other"]),
                       cache=cache)
    check(rc == 0, f"control: another dataset of the same HDF5 file is a valid data.valid (exit {rc}) {err.strip()[:160]!r}")
    other = p("held-out.txt")
    with open(other, "w") as f:
        f.write("Once upon a time there was a held-out story.\n" * 50)
    rc, out, err = npt("validate", recipe, "--set", "data.valid=" + other, cache=cache)
    check(rc == 0, f"control: a different file as data.valid validates (exit {rc}) {err.strip()[:160]!r}")
    # a training folder reads every file below it
    folder = p("corpus")
    os.makedirs(os.path.join(folder, "part2"))
    inside = os.path.join(folder, "part2", "stories.txt")
    shutil.copyfile(VALID_TEXT, inside)
    expect_overlap(recipe, cache, ["data.train=" + folder, "data.valid=" + inside], "a file inside the training folder",
                   inside, "data.train", ("validate",))
    expect_overlap(recipe, cache, ["data.train=" + inside, "data.valid=" + folder], "a folder holding data.train",
                   folder, "data.train", ("validate",))
    rc, out, err = npt("validate", recipe, *set_flags(["data.train=" + os.path.join(folder, "part2"),
                                                        "data.valid=" + other]), cache=cache)
    check(rc == 0, f"control: a held-out file beside a training folder validates (exit {rc}) {err.strip()[:160]!r}")


def test_summary(recipe, p, cache):
    srcs = json.dumps([{"path": VALID_TEXT, "weight": 0.5}, {"path": p("ok.u16")}])
    rc, out, err = npt("validate", recipe, *set_flags(["data.train=", "data.sources=" + srcs, "data.valid_fraction=0.05"]),
                       cache=cache)
    data = next((l for l in out.splitlines() if l.strip().startswith("data ")), "")
    valid = next((l for l in out.splitlines() if l.strip().startswith("valid ")), "")
    check(rc == 0 and "not set" not in data and f"{VALID_TEXT} (weight 0.5)" in data and f"{p('ok.u16')} (weight 1)" in data,
          f"the summary lists data.sources with their weights: {data!r}")
    check("data.valid_fraction 0.05" in valid, f"the summary names data.valid_fraction: {valid!r}")
    rc, out, _ = npt("validate", recipe, "--set", "data.valid=" + p("ok.u16"), cache=cache)
    valid = next((l for l in out.splitlines() if l.strip().startswith("valid ")), "")
    check(rc == 0 and p("ok.u16") in valid, f"the summary names data.valid: {valid!r}")


def main():
    if not built(NPT):
        return 1
    with tempfile.TemporaryDirectory() as d:
        cache = os.path.join(d, "cache")
        recipe, p = make_files(d)
        test_bad_token_data(recipe, p, cache)
        test_valid_is_training_data(recipe, p, d, cache)
        test_summary(recipe, p, cache)
    return exit_code()


if __name__ == "__main__":
    sys.exit(main())
