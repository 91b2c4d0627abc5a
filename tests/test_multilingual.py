"""Spanish + Portuguese: the original challenge format, a joint model, per-language scores and
label-quality weighting.

The bilingual files (conftest's ``bilingual``) are written by the tests in the original
challenge CSV format (``title,label_quality,language,category``): four categories in both
languages, ``BABY_CAR_SEATS`` only in Portuguese, ``MATE_GOURDS`` only in Spanish, every third
row ``unreliable``; ``joint`` is the MLP trained on them.  Their single-module tests are in
``test_data.py`` (reading), ``test_tokenizer.py`` (the language token), ``test_dataset.py`` (the
language-aware split, the unreliable rows' weights) and ``test_submission.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import FAST, REAL_DATA
import titlecat
from titlecat import dataset
from titlecat.cli import main
from titlecat.config import Config, ConfigError, DataConfig, TextConfig, model_names
from titlecat.data import read_records
from titlecat.featurizer import Featurizer
from titlecat.tokenizer import language_token
from titlecat.cache import tokenize_file
from titlecat.models import build_network, networks
from titlecat.loop import fit
from titlecat.vocab import UNK, LabelEncoder

SAMPLE = REAL_DATA / "meli2019-original" / "test.head.csv"

# ---- reading the original format --------------------------------------------------------


def test_reads_real_original_test_sample():
    if not SAMPLE.is_file():
        pytest.skip(f"{SAMPLE} not found")
    recs = list(read_records(SAMPLE, labelled=False))
    assert [r.id for r in recs] == [str(i) for i in range(1000)]
    assert {r.language for r in recs} == {"spanish", "portuguese"}
    assert sum(r.language == "portuguese" for r in recs) == 503
    assert all(r.category is None and r.title for r in recs)
    corpus = tokenize_file(SAMPLE, TextConfig(language_token=True), DataConfig(), labelled=False, cache_dir=False)
    assert len(corpus) == 1000 and set(corpus.languages) == {"spanish", "portuguese"}
    first = [corpus.types[corpus.token_types[corpus.offsets[i]]] for i in range(len(corpus))]
    assert first == [language_token(r.language) for r in recs]
    pt_only = list(read_records(SAMPLE, labelled=False, language="portuguese"))
    assert len(pt_only) == 503


# ---- joint model, per-language scores, MLflow --------------------------------------------


def test_joint_model_reports_per_language_scores(joint, bilingual):
    clf, _ = joint
    assert "BABY_CAR_SEATS" in clf.labels.classes_ and "MATE_GOURDS" in clf.labels.classes_
    out = clf.evaluate(bilingual / "test.csv.gz")
    assert set(out["per_language"]) == {"spanish", "portuguese"}
    assert out["languages"] == {"spanish": 15, "portuguese": 15}
    for lang, s in out["per_language"].items():
        assert set(s) >= {"balanced_accuracy", "accuracy", "n"} and s["n"] == 15
        assert s["accuracy"] >= 0.6, (lang, s)  # a bag of words separates these easily
    pt = clf.evaluate(bilingual / "test.csv.gz", language="portuguese")
    assert pt["n"] == 15 and pt["accuracy"] == pytest.approx(out["per_language"]["portuguese"]["accuracy"])
    labels, _ = clf.predict(["Cadeirinha Bebê Conforto Isofix", "Mate Calabaza Cuero Bombilla"], language=None)
    assert labels == [("BABY_CAR_SEATS",), ("MATE_GOURDS",)]


def test_cli_run_logs_language_mix_per_language_metrics_and_unreliable_weight(bilingual, tmp_path):
    from mlflow.tracking import MlflowClient

    sets = [f"{k}={v}" for k, v in {**FAST, "train.epochs": 2, "data.val_fraction": 0.25}.items()]
    rc = main(["train", "--model", "mlp", "--train", str(bilingual / "train.csv"), "--test",
               str(bilingual / "test.csv.gz"), "--output", str(tmp_path / "b"), "--experiment", "multi",
               "--unreliable-weight", "0.3", *[a for s in sets for a in ("--set", s)]])
    assert rc == 0
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("multi").experiment_id])
    p, m = run.data.params, run.data.metrics
    for lang in ("spanish", "portuguese"):
        assert f"test_{lang}_balanced_accuracy" in m and f"test_{lang}_accuracy" in m
    assert {"test_balanced_accuracy", "test_accuracy"} <= set(m)
    mix = {split: dict(kv.split(":") for kv in p[f"data.{split}_languages"].split(","))
           for split in ("train", "val", "test")}
    assert mix["test"] == {"spanish": "15", "portuguese": "15"}
    assert int(mix["train"]["spanish"]) + int(mix["val"]["spanish"]) == 52
    assert int(mix["train"]["portuguese"]) + int(mix["val"]["portuguese"]) == 40
    assert p["data.train_categories_per_language"] == "spanish:5,portuguese:5"
    assert p["data.train_categories_one_language"] == "2"
    assert p["data.unreliable_weight"] == "0.3" and p["text.language_token"] == "True"
    quality = {k: int(v) for k, v in (kv.split(":") for kv in p["data.train_label_quality"].split(","))}
    assert set(quality) == {"reliable", "unreliable"} and sum(quality.values()) == int(p["data.n_train"])


@pytest.mark.parametrize("name", [*sorted(networks()), "tfidf"])
def test_every_model_type_trains_jointly_with_language_tokens(name, bilingual):
    overrides = {"text.buckets": 500, "text.bigram_buckets": 0, "text.language_token": True}
    if name in networks():
        overrides.update({"model.embedding_dim": 16, "train.epochs": 1})
    elif name not in model_names():
        pytest.skip(f"no {name} model in this checkout")
    clf = titlecat.train(bilingual / "train.csv", model=name, tracking=False, overrides=overrides)
    if name == "tfidf":  # the language tokens are words of its word vectorizer
        assert {"__lang_portuguese__", "__lang_spanish__"} <= set(clf.model.vectorizers_[0].vocabulary_)
    else:
        assert clf.model.featurizer.vocab_.lookup(["__lang_portuguese__", "__lang_spanish__"]).min() > UNK
    out = clf.evaluate(bilingual / "test.csv.gz")
    assert set(out["per_language"]) == {"spanish", "portuguese"}


# ---- label quality -----------------------------------------------------------------------


def test_weight_zero_for_unreliable_equals_training_on_reliable_rows(bilingual):
    """The weights reach the loss: unreliable rows at weight 0 change nothing, so training on all
    rows equals training on the reliable ones (same featurizer, labels, seed, one batch per step)."""
    # settings pinned, not the shipped defaults: the two trainings sum their batch rows in different
    # orders, and Adam turns those float differences into ~1e-5 weight differences (the tolerance)
    cfg = Config.default("mlp").with_overrides({**FAST, "model.dropout": 0.0, "model.hidden_sizes": [32],
                                                "train.batch_size": 1000, "train.epochs": 3, "train.label_smoothing": 0.1})
    corpus = tokenize_file(bilingual / "train.csv", cfg.text, cfg.data, cache_dir=False)
    featurizer = Featurizer(cfg.text).fit(corpus)
    labels = LabelEncoder().fit(corpus.categories)
    y, _ = dataset.encode_labels(corpus, labels)
    everything = featurizer.encode(corpus, y)
    everything.weights = dataset.unreliable_weights(corpus, 0.0)
    reliable = np.flatnonzero(everything.weights == 1.0)
    only_reliable = featurizer.encode(corpus.subset(reliable), y[reliable])

    def trained(data):
        torch.manual_seed(0)
        net = build_network(cfg.model, n_classes=len(labels), **featurizer.sizes())
        fit(net, data, only_reliable, cfg.train, device=torch.device("cpu"))
        return net.state_dict()

    a, b = trained(everything), trained(only_reliable)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    everything.weights = dataset.unreliable_weights(corpus, 0.5)  # and a non-zero weight does change training
    c = trained(everything)
    assert any(not torch.allclose(a[k], c[k], rtol=1e-4, atol=1e-5) for k in a)


def test_tfidf_rejects_unreliable_weight(bilingual):
    if "tfidf" not in model_names():
        pytest.skip("no tfidf model in this checkout")
    with pytest.raises(ConfigError, match="unreliable_weight"):
        titlecat.train(bilingual / "train.csv", model="tfidf", overrides={"data.unreliable_weight": 0.5}, tracking=False)


def test_cli_rejects_an_unreliable_weight_out_of_range(bilingual, tmp_path, capsys):
    assert main(["train", "--model", "mlp", "--train", str(bilingual / "train.csv"), "--output",
                 str(tmp_path / "c"), "--no-tracking", "--unreliable-weight", "1.5"]) == 2
    assert "data.unreliable_weight" in capsys.readouterr().err
