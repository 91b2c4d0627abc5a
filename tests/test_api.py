"""The library API, as fastText's: ``train(...) -> Classifier``, ``predict`` for one title or
a list, ``evaluate`` on a labelled file; bad arguments fail early with clear errors.

One tiny MLP is trained per module (a few seconds on a CPU).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import titlecat
from titlecat import Config, ConfigError

from conftest import _write_jsonl, tiny_rows, tiny_test_rows

SMALL = ["train.epochs=2", "text.buckets=2000", "model.embedding_dim=16", "model.hidden_sizes=[32]"]
ONE_EPOCH = SMALL[1:] + ["train.epochs=1"]  # for the runs that only check which files are read, and when
ODD_TITLES = ["", "   \t  ", "😀🎉🔥", "Zapatillas " * 910]  # empty, whitespace, emoji only, ~10,000 chars


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("api")
    with pytest.MonkeyPatch.context() as mp:  # the autouse isolation fixture is function-scoped
        mp.setenv("TITLECAT_CACHE", str(d / "cache"))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
        train_file = _write_jsonl(d / "train.jsonl.gz", tiny_rows(), gz=True)
        test_file = _write_jsonl(d / "test.jsonl.gz", tiny_test_rows(), gz=True)
        clf = titlecat.train(train_file, test_file, model="mlp", tracking=False, overrides=SMALL)
    return SimpleNamespace(clf=clf, train=train_file, test=test_file)


@pytest.fixture
def clf(trained):
    return trained.clf


# ---- predict ------------------------------------------------------------------------------------


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
    with pytest.raises(ValueError, match="titles must be strings"):
        clf.predict(bad)


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


# ---- evaluate -----------------------------------------------------------------------------------


def test_evaluate_reports_the_scores(clf, trained):
    out = clf.evaluate(trained.test)
    assert {"balanced_accuracy", "accuracy", "loss", "n"} <= set(out)
    assert out["n"] == len(tiny_test_rows())
    assert 0.0 <= out["accuracy"] <= 1.0 and 0.0 <= out["balanced_accuracy"] <= 1.0
    assert np.isfinite(out["loss"]) and out["loss"] > 0
    assert out["unseen_categories"] == {}
    # the same numbers as predicting the titles and comparing by hand
    rows = tiny_test_rows()
    pred = [lab[0] for lab in clf.predict([r["title"] for r in rows])[0]]
    assert out["accuracy"] == pytest.approx(np.mean([p == r["category"] for p, r in zip(pred, rows)]))
    # and the same as the single test evaluation of the training run
    assert out["balanced_accuracy"] == pytest.approx(clf.info.test_balanced_accuracy, abs=1e-12)


def test_unseen_category_is_reported_and_counted_as_an_error(clf, tmp_path):
    rows = tiny_test_rows() + [
        {"title": "Guitarra Criolla Fonseca Modelo 25", "category": "GUITARS", "language": "spanish"},
        {"title": "Guitarra Eléctrica Fender Stratocaster", "category": "GUITARS", "language": "spanish"},
    ]
    path = _write_jsonl(tmp_path / "with_unseen.jsonl", rows)

    out = clf.evaluate(path)

    assert out["unseen_categories"] == {"GUITARS": 2}
    assert out["n"] == len(rows)
    pred = [lab[0] for lab in clf.predict([r["title"] for r in rows])[0]]
    assert "GUITARS" not in pred
    correct = [p == r["category"] for p, r in zip(pred, rows)]
    assert out["accuracy"] == pytest.approx(np.mean(correct))
    # balanced accuracy is the mean recall over the five categories of the file, GUITARS's being 0
    categories = sorted({r["category"] for r in rows})
    assert len(categories) == 5
    recalls = [np.mean([c for c, r in zip(correct, rows) if r["category"] == cat]) for cat in categories]
    assert out["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    assert out["balanced_accuracy"] <= 4 / 5


def test_evaluate_writes_the_category_report(clf, trained, tmp_path):
    report = tmp_path / "report.csv"
    clf.evaluate(trained.test, report=report)
    lines = report.read_text().splitlines()
    assert lines[0].startswith("category,precision,recall,f1,support")
    assert len(lines) == 1 + len(clf.labels)


# ---- train --------------------------------------------------------------------------------------


def test_unknown_keyword_argument_raises_type_error(trained):
    with pytest.raises(TypeError):
        titlecat.train(trained.train, trained.test, model="mlp", tracking=False, epochs=3)
    with pytest.raises(TypeError):
        titlecat.train(trained.train, trained.test, model="mlp", trackign=False)


def test_model_name_differing_from_the_config_raises_config_error(tmp_path):
    cfg = Config.default("mlp")
    missing = tmp_path / "never-read.jsonl"  # the error comes before any data is read
    with pytest.raises(ConfigError, match="mlp") as err:
        titlecat.train(missing, model="transformer-that-is-not-mlp", config=cfg, tracking=False)
    assert "transformer-that-is-not-mlp" in str(err.value)
    yaml_cfg = tmp_path / "mlp.yaml"
    cfg.to_yaml(yaml_cfg)
    with pytest.raises(ConfigError, match="model.name"):
        titlecat.train(missing, model="other", config=yaml_cfg, tracking=False)


@pytest.fixture
def read_log(monkeypatch):
    """Records, in order, every file ``train`` tokenises and when training (``fit``) runs."""
    events: list[str] = []
    import titlecat.classifier
    import titlecat.dataset
    from titlecat.models.network import NeuralModel

    real_tokenize, real_fit = titlecat.dataset.tokenize_file, NeuralModel.fit

    def tokenize_spy(path, *args, **kwargs):
        events.append(str(path))
        return real_tokenize(path, *args, **kwargs)

    def fit_spy(*args, **kwargs):
        events.append("<fit>")
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(titlecat.dataset, "tokenize_file", tokenize_spy)  # training and validation files
    monkeypatch.setattr(titlecat.classifier, "tokenize_file", tokenize_spy)  # the test file
    monkeypatch.setattr(NeuralModel, "fit", fit_spy)
    return events


def test_train_reads_test_once_after_training(trained, read_log):
    clf = titlecat.train(trained.train, trained.test, model="mlp", tracking=False, overrides=ONE_EPOCH)
    # two trainings (the shipped MLP config refits: train.refit), then the one test read
    assert read_log == [str(trained.train), "<fit>", "<fit>", str(trained.test)]
    assert clf.info.test_n == len(tiny_test_rows())


def test_train_with_a_validation_file(trained, tmp_path, read_log):
    val_rows = [r | {"title": r["title"] + " Original"} for r in tiny_rows()[::4]]  # 11 rows, all 4 categories
    val = _write_jsonl(tmp_path / "val.jsonl", val_rows)

    clf = titlecat.train(trained.train, trained.test, validation=val, model="mlp", tracking=False,
                         overrides=ONE_EPOCH)

    assert read_log == [str(trained.train), str(val), "<fit>", "<fit>", str(trained.test)]
    assert clf.info.n_train == len(tiny_rows())  # nothing carved from training
    assert clf.info.n_val == len(val_rows)
    assert clf.info.test_n == len(tiny_test_rows())
    assert clf.info.best_epoch == 1


def test_train_without_test_never_reads_it(trained, read_log):
    clf = titlecat.train(trained.train, model="mlp", tracking=False, overrides=ONE_EPOCH)
    assert read_log == [str(trained.train), "<fit>", "<fit>"]
    assert clf.info.test_balanced_accuracy is None
    labels, _ = clf.predict("Casco Moto")
    assert labels[0] in clf.labels.classes_
