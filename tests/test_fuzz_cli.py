"""Fuzzing the command line (hypothesis): random small data files and random argument
combinations for ``train``, ``evaluate`` and ``predict``.  Whatever a user types, the answer is
exit code 0 with a valid result, or exit code 2 with one ``titlecat: error:`` line -- never a
traceback, never another exit code.

The example counts are small (a training is a second or two): CI runs every example here in
about a minute; raise ``TITLECAT_FUZZ_EXAMPLES`` locally to search longer.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from titlecat.cli import main

from conftest import tiny_rows

N = int(os.environ.get("TITLECAT_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=N or 12, deadline=None, derandomize=not N,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TINY = ["--set", "text.buckets=500", "--set", "text.bigram_buckets=100", "--set", "model.embedding_dim=8",
        "--set", "model.hidden_sizes=[8]", "--set", "train.epochs=1", "--no-tracking"]

# ---- data files: mostly good rows, some broken ones, in any of the formats -------------------------

good_row = st.sampled_from(tiny_rows()).map(lambda r: {**r, "language": "spanish", "label_quality": "reliable"})
odd_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
bad_row = st.one_of(
    st.builds(lambda t: {"title": t, "category": "SNEAKERS"}, odd_text),  # blank or odd titles
    st.builds(lambda c: {"title": "Casco Moto", "category": c}, st.one_of(odd_text, st.integers(), st.none())),
    st.just({"category": "SNEAKERS"}),  # no title
    st.builds(lambda lang, q: {"title": "Casco", "category": "MOTORCYCLE_HELMETS", "language": lang,
                               "label_quality": q},
              st.sampled_from(["portuguese", "", "xx", None]), st.sampled_from(["unreliable", "", "??", None])),
    st.just("not json at all"), st.just(b"\xff\xfe broken bytes"), st.just(""),
)
rows = st.lists(st.one_of(good_row, good_row, good_row, bad_row), max_size=30)
formats = st.sampled_from(["jsonl", "jsonl.gz", "csv", "csv.gz"])


def _line(row) -> bytes:
    if isinstance(row, bytes):
        return row
    return (row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)).encode("utf-8")


def write_file(folder: Path, name: str, fmt: str, items: list, bom: bool = False) -> Path:
    path = folder / f"{name}.{fmt}"
    if fmt.startswith("jsonl"):
        data = b"".join(_line(r) + b"\n" for r in items)
    else:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["title", "label_quality", "language", "category"])
        for r in items:
            if isinstance(r, dict):
                w.writerow([r.get("title", ""), r.get("label_quality", ""), r.get("language", ""),
                            r.get("category", "")])
            else:
                buf.write(_line(r).decode("utf-8", "replace") + "\n")
        data = buf.getvalue().encode("utf-8")
    data = (b"\xef\xbb\xbf" if bom else b"") + data
    path.write_bytes(gzip.compress(data) if fmt.endswith(".gz") else data)
    return path


def run(argv: list[str]) -> tuple[int, str, str]:
    """``titlecat ARGV`` in this process: (exit code, stdout, stderr); an exception escaping
    ``main`` fails the test (that is the traceback a user would see)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse
            code = e.code
    return code, out.getvalue(), err.getvalue()


def assert_clean(code: int, out: str, err: str, argv: list[str]) -> None:
    assert "Traceback" not in out + err, (argv, err)
    assert code in (0, 2), (argv, code, err)
    errors = [line for line in err.splitlines() if line.startswith("titlecat: error: ")]
    if code == 2:
        assert len(errors) == 1 and err.rstrip("\n").endswith(errors[0]), (argv, err)  # the last line, once
    else:
        assert errors == [], (argv, err)


# ---- train -------------------------------------------------------------------------------

train_flags = st.lists(st.sampled_from([
    ["--skip-bad-rows"], ["--val-fraction", "0.3"], ["--val-fraction", "0.9"], ["--val-fraction", "-1"],
    ["--val-fraction", "abc"], ["--language", "spanish"], ["--language", "portuguese"],
    ["--label-quality", "unreliable"], ["--unreliable-weight", "0.5"], ["--unreliable-weight", "7"],
    ["--set", "train.batch_size=1"], ["--set", "train.epochs=0"], ["--set", "text.max_tokens=1"],
    ["--set", "model.hidden_sizes=[]"], ["--set", "model.dropout=1.5"], ["--set", "train.lr=1e30"],
    ["--set", "nosuch.key=1"], ["--set", "train.epochs"], ["--set", "data.merge_label_variants=true"],
    ["--set", "train.refit=false"], ["--model", "tfidf"], ["--model", "nosuch"], ["--device", "cuda"],
    ["--bogus"], ["--config", "{missing}"], ["--validation", "{train}"], ["--test", "{train}"],
    ["--test", "{missing}"], ["--output", "{train}"],
]), max_size=4)


@FUZZ
@given(items=rows, fmt=formats, bom=st.booleans(), flags=train_flags)
def test_train_answers_cleanly_whatever_it_is_given(monkeypatch, items, fmt, bom, flags):
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        train = write_file(folder, "train", fmt, items, bom)
        names = {"train": str(train), "missing": str(folder / "missing.jsonl")}
        extra = [a.format(**names) for flag in flags for a in flag]
        argv = ["train", "--train", str(train), "--output", str(folder / "out"), *TINY, *extra]
        monkeypatch.setenv("TITLECAT_CACHE", str(folder / "cache"))

        code, out, err = run(argv)

        assert_clean(code, out, err, argv)
        if code == 0 and "--output" not in extra:
            assert (folder / "out" / "bundle.json").is_file()
            assert run(["predict", "--model", str(folder / "out"), "Casco Moto"])[0] == 0


# ---- evaluate and predict, on one small model ----------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fuzz")
    train = write_file(d, "train", "jsonl", [{**r, "language": "spanish"} for r in tiny_rows()])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TITLECAT_CACHE", str(d / "cache"))
        assert main(["train", "--train", str(train), "--output", str(d / "model"), *TINY]) == 0
    return d / "model"


evaluate_flags = st.lists(st.sampled_from([
    ["--json"], ["--skip-bad-rows"], ["--language", "portuguese"], ["--label-quality", "unreliable"],
    ["--report", "{folder}/report.csv"], ["--report", "{folder}"], ["--language", "klingon"],
]), max_size=3)


@FUZZ
@given(items=rows, fmt=formats, flags=evaluate_flags)
def test_evaluate_answers_cleanly_whatever_it_is_given(monkeypatch, model, items, fmt, flags):
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        data = write_file(folder, "test", fmt, items)
        extra = [a.format(folder=folder) for flag in flags for a in flag]
        argv = ["evaluate", "--model", str(model), "--data", str(data), *extra]
        monkeypatch.setenv("TITLECAT_CACHE", str(folder / "cache"))

        code, out, err = run(argv)

        assert_clean(code, out, err, argv)
        if code == 0 and "--json" in extra:
            json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))  # valid, without NaN


predict_flags = st.lists(st.sampled_from([
    ["--json"], ["--top-k", "3"], ["--top-k", "0"], ["--top-k", "-2"], ["--top-k", "100000"], ["--top-k", "x"],
    ["--language", "portuguese"], ["--language", "xx"], ["--chunk-size", "0"], ["--skip-bad-rows"],
]), max_size=3)


@FUZZ
@given(titles=st.lists(odd_text, max_size=4), flags=predict_flags, as_file=st.booleans(), items=rows)
def test_predict_answers_cleanly_whatever_it_is_given(model, titles, flags, as_file, items):
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        extra = [a for flag in flags for a in flag]
        if as_file:  # a submission: the test file's rows need ids
            test = folder / "test.csv"
            titles_of = [r.get("title", "") if isinstance(r, dict) else r for r in items]
            cells = [t if isinstance(t, bytes) else json.dumps(str(t), ensure_ascii=False).encode() for t in titles_of]
            test.write_bytes(b"id,title,language\n" + b"".join(b"%d,%s,spanish\n" % (i, c) for i, c in enumerate(cells)))
            argv = ["predict", "--model", str(model), "--input", str(test), "--output", str(folder / "sub.csv"),
                    *extra]
        else:
            argv = ["predict", "--model", str(model), *extra, "--", *titles] if titles else \
                ["predict", "--model", str(model), *extra, "Casco Moto"]

        code, out, err = run(argv)

        assert_clean(code, out, err, argv)
        if code == 0 and not as_file and "--json" in extra:
            for line in out.splitlines():
                obj = json.loads(line)
                assert len(obj["categories"]) == len(obj["probabilities"]) >= 1
