"""Bundles written before the model protocol still load and predict the very same numbers
(``tests/fixtures/bundles-0.1.0``, written by titlecat at commit 0f41a62)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import titlecat

OLD = Path(__file__).resolve().parent / "fixtures" / "bundles-0.1.0"
EXPECTED = json.loads((OLD / "expected.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", ["mlp", "tfidf", "ensemble"])
def test_a_bundle_of_the_earlier_titlecat_loads_and_predicts_as_it_did(name, tmp_path):
    clf = titlecat.load(OLD / name)
    np.testing.assert_allclose(clf.predict_proba(EXPECTED["titles"]), EXPECTED["probabilities"][name],
                               rtol=1e-5, atol=1e-6)
    assert isinstance(clf, titlecat.Ensemble) == (name == "ensemble")
    # saved again by today's titlecat: the same predictions, and the same files but two: the TF-IDF
    # model no longer writes the featurizer.json it never read, an ensemble writes its labels.json
    again = clf.save(tmp_path / name)
    np.testing.assert_allclose(titlecat.load(again).predict_proba(EXPECTED["titles"]),
                               EXPECTED["probabilities"][name], rtol=1e-5, atol=1e-6)
    changed = {"mlp": set(), "tfidf": {"featurizer.json"}, "ensemble": {"labels.json"}}[name]
    assert {p.name for p in again.iterdir()} ^ {p.name for p in (OLD / name).iterdir()} == changed


def test_a_refitted_bundle_of_the_earlier_titlecat_keeps_its_validation_logits(tmp_path):
    shutil.copytree(OLD / "mlp", tmp_path / "mlp")
    clf = titlecat.load(tmp_path / "mlp")
    assert clf.held_out is not None and clf.held_out.logits.shape[1] == len(clf.labels)
