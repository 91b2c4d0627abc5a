"""The ``Classifier`` API, as fastText's: ``predict`` for one title or a list, top-``k`` labels
and probabilities; bad arguments fail early with clear errors.

The classifier is conftest's ``trained`` tiny MLP, trained once for the session.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny_rows, tiny_test_rows

ODD_TITLES = ["", "   \t  ", "😀🎉🔥", "Zapatillas " * 910]  # empty, whitespace, emoji only, ~10,000 chars


@pytest.mark.parametrize("k", [1, 2, 3])
def test_predict_one_title(clf, k):
    labels, probs = clf.predict("Casco Moto Integral Negro Talle M", k=k)
    assert isinstance(labels, tuple) and len(labels) == k
    assert all(lab in clf.labels.classes_ for lab in labels)
    assert len(set(labels)) == k
    assert isinstance(probs, np.ndarray) and probs.shape == (k,)
    assert np.all(probs > 0) and np.all(probs <= 1)
    assert np.all(np.diff(probs) <= 0), "probabilities are sorted, highest first"


def test_top_k_probabilities_are_the_model_probabilities(clf):
    title = "Celular Samsung Galaxy A20 32gb Libre"
    labels, probs = clf.predict(title, k=len(clf.labels))
    full = clf.predict_proba([title])[0]
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    for lab, p in zip(labels, probs):
        assert p == full[clf.labels.classes_.index(lab)]


def test_predict_list_equals_predicting_one_by_one(clf):
    titles = [r["title"] for r in tiny_test_rows()[::2]] + [r["title"] for r in tiny_rows()[:2]] + ODD_TITLES
    labels, probs = clf.predict(titles, k=3)
    assert isinstance(labels, list) and len(labels) == len(titles)
    assert probs.shape == (len(titles), 3)
    for i, t in enumerate(titles):
        one_labels, one_probs = clf.predict(t, k=3)
        assert labels[i] == one_labels, t
        np.testing.assert_allclose(probs[i], one_probs, rtol=1e-5, atol=1e-7)


def test_predict_accepts_any_sequence(clf):
    titles = ["Casco Moto Abierto", "Cámara Digital Canon"]
    assert clf.predict(tuple(titles))[0] == clf.predict(titles)[0]
    assert clf.predict(iter(titles))[0] == clf.predict(titles)[0]


def test_k_larger_than_the_classes_is_clipped(clf):
    n = len(clf.labels)
    labels, probs = clf.predict("Zapatillas Nike Air", k=n + 10)
    assert len(labels) == n and probs.shape == (n,)
    assert sorted(labels) == sorted(clf.labels.classes_)
    many_labels, many_probs = clf.predict(["a", "b"], k=1000)
    assert many_probs.shape == (2, n) and all(len(x) == n for x in many_labels)


@pytest.mark.parametrize("k", [0, -1])
def test_k_below_one_raises(clf, k):
    with pytest.raises(ValueError, match="k must be >= 1"):
        clf.predict("Casco Moto", k=k)


def test_empty_list_raises(clf):
    with pytest.raises(ValueError, match="at least one title"):
        clf.predict([])


@pytest.mark.parametrize("bad", [["Casco Moto", None], [3], ["ok", b"bytes"], [["nested"]]])
def test_non_string_item_raises(clf, bad):
    with pytest.raises(TypeError, match="titles must be strings"):
        clf.predict(bad)


@pytest.mark.parametrize("bad", [None, 123, {"title": "Casco Moto"}, b"Casco Moto", 1.5])
def test_predict_of_something_that_is_not_titles_is_a_type_error(clf, bad):
    """A dict is iterable (its keys would be predicted), bytes too (their values): both refused."""
    with pytest.raises(TypeError, match=r"predict\(\) takes a title \(str\) or a list of titles, got "):
        clf.predict(bad)


@pytest.mark.parametrize("k", [1.5, "3", None, True])
def test_predict_k_that_is_not_an_integer_is_a_type_error(clf, k):
    with pytest.raises(TypeError, match="k must be an integer"):
        clf.predict("Casco Moto", k=k)


def test_predict_in_an_unknown_language_is_refused(clf):
    with pytest.raises(ValueError, match="unknown language 'spanih'; known: spanish, portuguese"):
        clf.predict("Casco Moto", language="spanih")
    assert clf.predict(["Casco Moto"], language="portuguese")[0]  # a known one is fine
    labels, _ = clf.predict((t for t in ["Casco Moto", "Zapatillas Nike"]))  # any iterable of titles
    assert len(labels) == 2


@pytest.mark.parametrize("title", ODD_TITLES, ids=["empty", "whitespace", "emoji", "10k-chars"])
def test_odd_titles_get_a_valid_label(clf, title):
    labels, probs = clf.predict(title, k=2)
    assert len(labels) == 2 and all(lab in clf.labels.classes_ for lab in labels)
    assert np.all(np.isfinite(probs)) and np.all(probs > 0) and np.all(probs <= 1)
    assert probs[0] >= probs[1]


def test_a_10k_title_is_cut_to_max_tokens(clf):
    long = "Zapatillas " * 910
    assert len(long) >= 10_000
    # the title is cut to text.max_tokens tokens, so a longer run of the same word changes nothing
    np.testing.assert_allclose(clf.predict_proba([long]), clf.predict_proba(["Zapatillas " * 200]), atol=1e-6)
