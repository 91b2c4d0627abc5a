"""Every bad input of the README's "Bad input and what it gets" table, through the command
line: the exit code and the message the user sees, and never a traceback.

``CASES`` holds one entry per table row, under the row's first-column text; a test checks
that the README lists each of them, so the table and the tests cannot drift apart.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import titlecat.data
from titlecat.cli import main

from conftest import _write_csv, _write_jsonl, tiny_rows, tiny_test_rows

ROBUSTNESS = Path(__file__).resolve().parents[1] / "docs" / "robustness.md"  # the bad-input table
SMALL = ["--model", "mlp", "--no-tracking", "--set", "text.buckets=2000", "--set", "text.bigram_buckets=500",
         "--set", "model.embedding_dim=16", "--set", "model.hidden_sizes=[32]", "--set", "train.epochs=1"]
LONG_TITLE = "Zapatillas Nike Air Max " * 420  # 10,080 characters
ODD_TITLES = ["", "   \t ", "😀🎉🔥", LONG_TITLE]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A tiny model trained on a file holding a 10,000-character title."""
    d = tmp_path_factory.mktemp("bad-input")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TITLECAT_CACHE", str(d / "cache"))
        train = _write_jsonl(d / "train.jsonl", tiny_rows() + [{"title": LONG_TITLE, "category": "SNEAKERS"}])
        assert main(["train", "--train", str(train), "--output", str(d / "bundle"), *SMALL]) == 0
    return d / "bundle"


def _train_file(tmp_path: Path, bad_line, name: str = "train.jsonl") -> Path:
    """The tiny training rows with ``bad_line`` as line 3."""
    return _write_jsonl(tmp_path / name, tiny_rows()[:2] + [bad_line] + tiny_rows()[2:])


def _train(path: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["train", "--train", str(path), "--output", str(tmp_path / "out"), *SMALL, *extra]


def _truncated_gzip(tmp_path: Path) -> Path:
    path = _write_jsonl(tmp_path / "train.jsonl.gz", tiny_rows() * 20, gz=True)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _unclosed_quote(tmp_path: Path) -> Path:
    path = tmp_path / "train.csv"
    path.write_text('title,label_quality,language,category\nCasco,reliable,spanish,A\n"unclosed,' + "x" * 200_000)
    return path


def _symlink_loop(tmp_path: Path) -> Path:
    loop = tmp_path / "train.jsonl"
    loop.symlink_to(loop)  # a link to itself
    return loop


def _with_bom(path: Path) -> Path:
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # as Excel writes a UTF-8 file
    return path


def _directory(tmp_path: Path) -> Path:
    (tmp_path / "train.jsonl").mkdir()
    return tmp_path / "train.jsonl"


def _unreadable(tmp_path: Path, monkeypatch) -> Path:
    path = _write_jsonl(tmp_path / "train.jsonl", tiny_rows())

    def denied(file, *args, **kwargs):  # as open() does for a file without read permission (tests may run as root)
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(titlecat.data, "open", denied, raising=False)
    return path


# README row -> (arguments, exit code, what stderr says: ``{f}`` is the file given)
CASES = {
    "malformed JSON line": lambda t, mp: (
        _train(f := _train_file(t, '{"title": "Casco", "category": '), t), 2,
        [f"{f}:3: malformed JSON (unexpected end of data", "(use --skip-bad-rows to skip such rows)"]),
    "missing title": lambda t, mp: (
        _train(f := _train_file(t, {"category": "SNEAKERS"}), t), 2, [f"{f}:3: missing title"]),
    "empty title": lambda t, mp: (
        _train(f := _train_file(t, {"title": "  ", "category": "SNEAKERS"}), t), 2, [f"{f}:3: empty title"]),
    "missing category": lambda t, mp: (
        _train(f := _train_file(t, {"title": "Casco Moto"}), t), 2, [f"{f}:3: missing category"]),
    "undecodable bytes": lambda t, mp: (
        _train(f := _train_file(t, b'{"title": "Casco \xff Moto", "category": "A"}'), t), 2,
        [f"{f}:3: bytes that are not UTF-8 at column 18"]),
    "bad rows with --skip-bad-rows": lambda t, mp: (
        _train(f := _train_file(t, '{"title": "Casco", "category": '), t, "--skip-bad-rows"), 0,
        [f"titlecat: skipped 1 bad rows in {f}: {f}:3: malformed JSON"]),
    "truncated gzip": lambda t, mp: (
        _train(f := _truncated_gzip(t), t), 2, [f"{f}:", "compressed file is damaged or truncated", "re-download it"]),
    "CSV with the wrong header": lambda t, mp: (
        _train(f := _write_csv(t / "train.csv", ["titulo", "label_quality", "language", "category"],
                               [["Casco", "reliable", "spanish", "A"]]), t), 2,
        [f"{f}:1: CSV header 'titulo,label_quality,language,category' lacks title; expected title,"]),
    "CSV with an unclosed quote": lambda t, mp: (
        _train(f := _unclosed_quote(t), t), 2,
        [f"{f}:3: not readable as CSV (field larger than field limit (131072)); an unclosed quote makes the rest"]),
    "10,000-character title": lambda t, mp: (
        _train(_write_jsonl(t / "train.jsonl", tiny_rows() + [{"title": LONG_TITLE, "category": "SNEAKERS"}]), t),
        0, []),
    "test category absent from training": lambda t, mp: (
        _train(_write_jsonl(t / "train.jsonl", tiny_rows()), t, "--test",
               str(_write_jsonl(t / "test.jsonl", tiny_test_rows() + [{"title": "Guitarra", "category": "GUITARS"}]))),
        0, ["titlecat: 1 test rows have categories never seen in training (GUITARS); they count as errors"]),
    "empty file": lambda t, mp: (
        _train(f := _write_jsonl(t / "train.jsonl", []), t), 2, [f"{f}: no rows"]),
    "directory instead of a file": lambda t, mp: (
        _train(f := _directory(t), t), 2, [f"{f}: is a directory, expected a .jsonl(.gz) or .csv(.gz) file"]),
    "missing file": lambda t, mp: (
        _train(f := (t / "nowhere.jsonl"), t), 2, [f"{f}: file not found"]),
    "unreadable file": lambda t, mp: (
        _train(f := _unreadable(t, mp), t), 2, [f"{f}: Permission denied"]),
    "unknown file type": lambda t, mp: (
        _train(f := _write_jsonl(t / "train.txt", tiny_rows()), t), 2,
        [f"{f}: unknown file type; expected .jsonl, .jsonl.gz, .csv or .csv.gz"]),
    "negative dropout": lambda t, mp: (
        _train(_write_jsonl(t / "train.jsonl", tiny_rows()), t, "--set", "model.dropout=-0.1"), 2,
        ["--set: model.dropout: Input should be greater than or equal to 0"]),
    "unknown model name": lambda t, mp: (
        ["train", "--model", "nosuch", "--train", str(_write_jsonl(t / "train.jsonl", tiny_rows())), "--output",
         str(t / "out")], 2, ["unknown model 'nosuch'; known: cnn, ensemble, mlp"]),
    "unknown key": lambda t, mp: (
        _train(_write_jsonl(t / "train.jsonl", tiny_rows()), t, "--set", "model.dropuot=0.1"), 2,
        ["--set: model.dropuot: unknown key"]),
    "symbolic link loop as a data file": lambda t, mp: (
        _train(f := _symlink_loop(t), t), 2, [f"{f}: cannot be resolved (", "a loop of symbolic links?"]),
    "hidden layer width below 1": lambda t, mp: (
        _train(_write_jsonl(t / "train.jsonl", tiny_rows()), t, "--set", "model.hidden_sizes=[0]"), 2,
        ["--set: model.hidden_sizes.0: Input should be greater than or equal to 1"]),
    "a single category": lambda t, mp: (
        _train(f := _write_jsonl(t / "train.jsonl", [{**r, "category": "SNEAKERS"} for r in tiny_rows()]), t), 2,
        [f"{f}: every training row has the category 'SNEAKERS'; a classifier needs at least two categories"]),
    "byte-order mark (CSV or JSON lines from Excel)": lambda t, mp: (
        _train(_with_bom(_write_csv(t / "train.csv", ["title", "label_quality", "language", "category"],
                                    [{**r, "language": "spanish"} for r in tiny_rows()])), t,
               "--validation", str(_with_bom(_write_jsonl(t / "val.jsonl", tiny_rows())))), 0, []),
    "learning rate so high the training diverges": lambda t, mp: (
        _train(_write_jsonl(t / "train.jsonl", tiny_rows()), t, "--set", "train.lr=1e30"), 2,
        ["titlecat: error: training diverged: ", "with train.lr=1e+30; nothing of it is saved",
         "try a lower train.lr"]),
    "value of the wrong type": lambda t, mp: (
        _train(_write_jsonl(t / "train.jsonl", tiny_rows()), t, "--set", "train.epochs=many"), 2,
        ["--set: train.epochs: Input should be a valid integer"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_a_clear_answer(case, tmp_path, monkeypatch, capsys):
    args, code, says = CASES[case](tmp_path, monkeypatch)

    assert main(args) == code

    cap = capsys.readouterr()
    assert "Traceback" not in cap.out + cap.err
    if code == 2:
        assert cap.err.startswith("titlecat: error: "), cap.err
        assert len(cap.err.strip().splitlines()) == 1, cap.err  # one line
        assert not (tmp_path / "out").exists()  # nothing half-written
    else:
        assert (tmp_path / "out" / "bundle.json").is_file()
    for text in says:
        assert text in cap.err, f"{text!r} not in {cap.err!r}"


@pytest.mark.parametrize("title", ODD_TITLES, ids=["empty", "whitespace", "emoji", "10k-chars"])
def test_odd_titles_get_a_category_from_the_command_line(bundle, title, capsys):
    assert main(["predict", "--model", str(bundle), "--json", "--top-k", "2", title]) == 0
    out = capsys.readouterr().out
    (obj,) = [json.loads(line) for line in out.splitlines()]
    assert obj["title"] == title and len(obj["categories"]) == 2
    assert all(0 < p <= 1 for p in obj["probabilities"])


def test_the_docs_table_lists_every_case():
    text = ROBUSTNESS.read_text(encoding="utf-8")
    section = text.split("## Bad input and what it gets", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1].strip() for line in section.splitlines() if re.match(r"\|\s*[^-\s|]", line)][1:]
    assert set(CASES) | {"empty, blank, emoji-only or 10,000-character title to `predict`"} <= set(rows), \
        set(CASES) - set(rows)


def test_a_symbolic_link_loop_as_predict_input_is_a_clear_error(bundle, tmp_path, capsys):
    loop = _symlink_loop(tmp_path)
    assert main(["predict", "--model", str(bundle), "--input", str(loop), "--output", str(tmp_path / "sub.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"titlecat: error: {loop}: cannot be resolved (") and "Traceback" not in err
    assert not (tmp_path / "sub.csv").exists()


def test_evaluate_json_is_valid_json_when_every_category_is_unseen(bundle, tmp_path, capsys):
    """The loss has nothing to average over (NaN): printed as null, never as NaN."""
    data = _write_jsonl(tmp_path / "other.jsonl", [{"title": "Guitarra criolla", "category": "GUITARS"},
                                                   {"title": "Mesa de luz", "category": "TABLES"}])
    assert main(["evaluate", "--model", str(bundle), "--data", str(data), "--json"]) == 0
    out = capsys.readouterr().out

    def refuse(constant):
        raise AssertionError(f"{constant} in JSON output")

    obj = json.loads(out, parse_constant=refuse)
    assert obj["loss"] is None and obj["balanced_accuracy"] == 0.0
