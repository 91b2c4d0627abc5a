"""Every bad input of the README's "Bad input and what it gets" table, through the command
line: the exit code and the message the user sees, and never a traceback.

``CASES`` holds one entry per table row, under the row's first-column text; a test checks
that the README lists each of them, so the table and the tests cannot drift apart.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
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


def _file_as_folder(tmp_path: Path) -> Path:
    (tmp_path / "a-file").write_text("not a folder")
    return tmp_path / "a-file" / "out"


def _loop_output(tmp_path: Path) -> Path:
    loop = tmp_path / "out-loop"
    loop.symlink_to(loop)
    return loop


def _a_folder(tmp_path: Path) -> Path:
    (tmp_path / "configs").mkdir()
    return tmp_path / "configs"


def _read_only_folder(tmp_path: Path, mp) -> Path:
    """A folder that refuses new files, as a read-only mount does (mode bits do not stop root)."""
    import errno
    import tempfile

    real = tempfile.mkdtemp

    def refuse(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve() == (tmp_path / "ro").resolve():
            raise OSError(errno.EROFS, "Read-only file system", str(dir))
        return real(*args, dir=dir, **kwargs)

    (tmp_path / "ro").mkdir()
    mp.setattr(tempfile, "mkdtemp", refuse)
    return tmp_path / "ro" / "out"


def _case_variants(tmp_path: Path) -> Path:
    rows = tiny_rows() + [{**r, "category": r["category"].lower()} for r in tiny_rows() if r["category"] == "SNEAKERS"]
    return _write_jsonl(tmp_path / "train.jsonl", rows)


def _config(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_bytes(content)
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
    "`--output` under an existing file": lambda t, mp: (
        ["train", "--train", str(_write_jsonl(t / "train.jsonl", tiny_rows())), "--output",
         str(o := _file_as_folder(t)), *SMALL], 2,
        [f"{o}: cannot be created: {(t / 'a-file').resolve()} is a file, not a folder"]),
    "`--output` through a symbolic link loop": lambda t, mp: (
        ["train", "--train", str(_write_jsonl(t / "train.jsonl", tiny_rows())), "--output",
         str(o := _loop_output(t)), *SMALL], 2,
        [f"{o}: cannot be resolved (", "a loop of symbolic links?"]),
    "`--output` in a read-only folder": lambda t, mp: (
        ["train", "--train", str(_write_jsonl(t / "train.jsonl", tiny_rows())), "--output",
         str(o := _read_only_folder(t, mp)), *SMALL], 2,
        [f"{o}: cannot be written ({(t / 'ro').resolve()}: Read-only file system); choose an output directory"]),
    "categories that differ only by case": lambda t, mp: (
        _train(f := _case_variants(t), t), 0,
        [f"titlecat: warning: {f}: 2 categories differ from another only by case, and are separate classes: "
         "'SNEAKERS' (11 rows) / 'sneakers' (11 rows); set data.merge_label_variants=true"]),
    "validation titles that are also training titles": lambda t, mp: (
        _train(f := _write_jsonl(t / "train.jsonl", tiny_rows()), t, "--validation", str(f)), 0,
        [f"titlecat: warning: {len(tiny_rows())} of {len(tiny_rows())} validation titles (100.0%) also appear "
         f"among the training rows, in {f} (the same file as the training rows): the validation score is inflated"]),
    "config file that is not UTF-8": lambda t, mp: (
        _train(_write_jsonl(t / "train.jsonl", tiny_rows()), t, "--config",
               str(f := _config(t, b"model:\n  name: mlp\n  dropout: 0.1 \xff\n"))), 2,
        [f"{f}:3: bytes that are not UTF-8 (0xff); save the config as UTF-8 text"]),
    "config file that is a directory": lambda t, mp: (
        _train(_write_jsonl(t / "train.jsonl", tiny_rows()), t, "--config", str(f := _a_folder(t))), 2,
        [f"{f}: is a directory, expected a YAML config file"]),
    "YAML key given twice": lambda t, mp: (
        _train(_write_jsonl(t / "train.jsonl", tiny_rows()), t, "--config",
               str(f := _config(t, b"model:\n  name: mlp\ntrain:\n  epochs: 1\n  epochs: 2\n"))), 2,
        [f"{f}:5: not valid YAML (key 'epochs' given twice (first on line 4))"]),
    "`MLFLOW_TRACKING_URI=sqlite:///` (no file)": lambda t, mp: (
        mp.setenv("MLFLOW_TRACKING_URI", "sqlite:///") or
        [a for a in _train(_write_jsonl(t / "train.jsonl", tiny_rows()), t) if a != "--no-tracking"], 2,
        ["MLFLOW_TRACKING_URI=sqlite:/// names no database file; give one, e.g. sqlite:///mlflow.db"]),
    "test titles that are also training titles": lambda t, mp: (
        _train(f := _write_jsonl(t / "train.jsonl", tiny_rows()), t, "--test", str(f)), 0,
        [f"titlecat: warning: {len(tiny_rows())} of {len(tiny_rows())} test titles (100.0%) also appear among the "
         f"training rows ({f}); the test score is inflated by them"]),
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


def test_the_output_is_checked_before_the_data_is_read(tmp_path, capsys):
    """A training file that is broken on line 3 is not even read: the output is refused first."""
    broken = _train_file(tmp_path, '{"title": "Casco", "category": ')
    assert main(["train", "--train", str(broken), "--output", str(_file_as_folder(tmp_path)), *SMALL]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "malformed JSON" not in err


def test_predict_refuses_an_unknown_language(bundle, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--model", str(bundle), "--language", "spanih", "Casco Moto"])
    assert exit_.value.code == 2
    assert "argument --language: invalid choice: 'spanih' (choose from" in capsys.readouterr().err


def test_predict_refuses_stdin_that_is_not_utf8(bundle):
    proc = subprocess.run([sys.executable, "-m", "titlecat.cli", "predict", "--model", str(bundle)],
                          input=b"Casco Moto\nZapa\xfftillas\n", capture_output=True)
    assert proc.returncode == 2 and proc.stdout == b""
    assert proc.stderr.decode() == ("titlecat: error: <stdin>:2: bytes that are not UTF-8 at column 5; give titles "
                                    "as UTF-8 text\n")
    ok = subprocess.run([sys.executable, "-m", "titlecat.cli", "predict", "--model", str(bundle)],
                        input="\ufeffCasco Moto\r\nZapatillas Nike\r\n".encode(), capture_output=True)
    assert ok.returncode == 0 and len(ok.stdout.decode().splitlines()) == 2, ok.stderr


def test_predict_skip_bad_rows_writes_the_readable_rows_and_names_the_missing_ids(bundle, tmp_path, capsys):
    test = tmp_path / "test.csv"
    test.write_bytes(b"id,title,language\n1,Casco Moto,spanish\n2,Zapa\xfftillas,spanish\n3,Celular,spanish\n")
    sub = tmp_path / "sub.csv"
    assert main(["predict", "--model", str(bundle), "--input", str(test), "--output", str(sub)]) == 2
    assert "(use --skip-bad-rows to skip such rows)" in capsys.readouterr().err and not sub.exists()

    assert main(["predict", "--model", str(bundle), "--input", str(test), "--output", str(sub),
                 "--skip-bad-rows"]) == 0
    cap = capsys.readouterr()
    assert [line.split(",")[0] for line in sub.read_text().splitlines()] == ["id", "1", "3"]
    assert cap.err.startswith(f"titlecat: warning: skipped 1 bad rows of {test}; their ids are NOT in the "
                              f"submission: {test}:3: bytes that are not UTF-8")
    assert main(["predict", "--model", str(bundle), "--skip-bad-rows", "Casco"]) == 2
    assert "--skip-bad-rows is for --input files" in capsys.readouterr().err
