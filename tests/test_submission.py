"""titlecat.submission: the challenge submission ``id,category`` for every row of a test file,
streamed in chunks (``Classifier.predict_file``, ``titlecat predict --input``), from conftest's
``joint`` bilingual MLP."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from conftest import REAL_DATA, TEST_HEADER, _write_csv
from titlecat.cli import main

SAMPLE = REAL_DATA / "meli2019-original" / "test.head.csv"


def _read_submission(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_submission_on_real_sample_has_every_id_once_in_order(joint, tmp_path):
    if not SAMPLE.is_file():
        pytest.skip(f"{SAMPLE} not found")
    clf, bundle = joint
    out = tmp_path / "sub" / "submission.csv"
    rc = main(["predict", "--model", str(bundle), "--input", str(SAMPLE), "--output", str(out),
               "--chunk-size", "300"])  # 4 chunks, the last one partial
    assert rc == 0
    rows = _read_submission(out)
    assert rows[0] == ["id", "category"]
    ids = [r[0] for r in rows[1:]]
    assert ids == [str(i) for i in range(1000)] and len(set(ids)) == 1000
    assert {r[1] for r in rows[1:]} <= set(clf.labels.classes_)
    # chunking does not change predictions
    whole = tmp_path / "whole.csv"
    stats = clf.predict_file(SAMPLE, whole, chunk_size=5000)
    assert _read_submission(whole) == rows
    assert stats.rows == 1000 and stats.languages == {"portuguese": 503, "spanish": 497}


def test_submission_predicts_empty_titles_and_matches_predict(joint, tmp_path):
    clf, bundle = joint
    rows = [["a9", "Tênis Nike Air Max Masculino", "portuguese"], ["b2", "", "spanish"],
            ["c3", "Casco Moto Integral Negro", "spanish"], ["d4", "!!!", "portuguese"]]
    test = _write_csv(tmp_path / "test.csv", TEST_HEADER, rows)
    stats = clf.predict_file(test, tmp_path / "sub.csv", chunk_size=3)
    sub = _read_submission(tmp_path / "sub.csv")
    assert [r[0] for r in sub[1:]] == ["a9", "b2", "c3", "d4"] and all(r[1] for r in sub[1:])
    assert stats.empty_titles == 1
    for (rid, title, lang), (_, cat) in zip(rows, sub[1:]):
        assert clf.predict(title, language=lang)[0][0] == cat


def test_submission_errors(joint, tmp_path, capsys):
    _, bundle = joint
    no_id = _write_csv(tmp_path / "noid.csv", ["title", "language"], [["Casco Moto", "spanish"]])
    assert main(["predict", "--model", str(bundle), "--input", str(no_id), "--output", str(tmp_path / "s.csv")]) == 2
    assert "no id" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()
    assert main(["predict", "--model", str(bundle), "--input", str(no_id)]) == 2
    assert "--output" in capsys.readouterr().err
    assert main(["predict", "--model", str(bundle), "--input", str(no_id), "--output", str(tmp_path / "s.csv"),
                 "--top-k", "3"]) == 2
    assert "--top-k" in capsys.readouterr().err
    # titles on the command line still work
    assert main(["predict", "--model", str(bundle), "--language", "spanish", "Casco Moto Integral"]) == 0
    assert "MOTORCYCLE_HELMETS" in capsys.readouterr().out


@pytest.mark.parametrize("ids, says", [
    (["1", "7", "3", "7"], ":5: id '7' already on line 3; a submission holds every id once"),
    (["1", " ", "3", "4"], ":3: empty id; a submission needs an id for every row"),
], ids=["duplicate", "empty"])
def test_a_submission_holds_every_id_once(joint, tmp_path, capsys, ids, says):
    _, bundle = joint
    rows = [[i, t, "spanish"] for i, t in zip(ids, ["Casco Moto", "Zapatillas Nike", "Celular", "Mesa"])]
    test = _write_csv(tmp_path / "test.csv", TEST_HEADER, rows)
    assert main(["predict", "--model", str(bundle), "--input", str(test), "--output", str(tmp_path / "s.csv"),
                 "--chunk-size", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"titlecat: error: {test}{says}") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "s.csv").exists()
