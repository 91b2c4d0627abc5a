"""Spanish + Portuguese: the original challenge format, a joint model, per-language scores,
label-quality weighting and the submission file.

The bilingual fixture is written by the tests in the original challenge CSV format
(``title,label_quality,language,category``): four categories in both languages,
``BABY_CAR_SEATS`` only in Portuguese, ``MATE_GOURDS`` only in Spanish, every third
row ``unreliable``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REAL_DATA, _write_csv, tiny_rows, tiny_test_rows
import titlecat
from titlecat import dataset
from titlecat.cli import main
from titlecat.config import Config, ConfigError, DataConfig, TextConfig, model_names
from titlecat.data import DataError, read_records
from titlecat.featurizer import Featurizer
from titlecat.tokenizer import language_token, tokenize_records
from titlecat.cache import tokenize_file
from titlecat.models import build_network, networks
from titlecat.loop import fit
from titlecat.vocab import UNK, LabelEncoder

TRAIN_HEADER = ["title", "label_quality", "language", "category"]
TEST_HEADER = ["id", "title", "language"]
SAMPLE = REAL_DATA / "meli2019-original" / "test.head.csv"

_PT_TRAIN = {
    "SNEAKERS": [
        "Tênis Nike Air Max 90 Masculino Original", "Tênis Adidas Superstar Branco Feminino",
        "Tênis Corrida Nike Revolution 5 Masculino", "Tênis Puma Suede Classic Preto 40",
        "Tênis Olympikus Casual Lona Feminino", "Tênis Esportivo Reebok Classic Couro",
        "Tênis Vans Old Skool Preto Branco", "Tênis Converse All Star Cano Alto 38",
    ],
    "MOTORCYCLE_HELMETS": [
        "Capacete Moto Fechado LS2 Rapid Preto Fosco", "Capacete Moto Aberto Pro Tork Viseira Fumê",
        "Capacete Escamoteável Norisk Moto Tamanho 58", "Capacete Motocross Fox V1 Trilha Adulto",
        "Capacete Moto Fechado Certificado Inmetro", "Capacete Moto Agv K3 Rossi Tamanho 56",
        "Capacete Moto Mt Thunder 3 Viseira Dupla", "Capacete Para Moto Aberto Com Viseira",
    ],
    "CELL_PHONES": [
        "Celular Samsung Galaxy A10 32gb Desbloqueado", "Celular Motorola Moto G7 Plus 64gb Dual Chip",
        "Smartphone Xiaomi Redmi Note 8 128gb Azul", "Celular iPhone 7 32gb Vitrine Garantia",
        "Smartphone Huawei P20 Lite 32gb Preto", "Celular Samsung J7 Prime 16gb Desbloqueado",
        "Celular Motorola E6 Plus 32gb Android", "Smartphone LG K40 32gb Câmera Dupla",
    ],
    "DIGITAL_CAMERAS": [
        "Câmera Digital Canon Powershot Sx540 20mp", "Câmera Nikon Coolpix B500 16mp Wifi",
        "Câmera Sony Cyber-shot Dsc-w830 20.1mp", "Câmera Digital Kodak Pixpro Fz43 Zoom 4x",
        "Câmera Fujifilm Finepix Xp130 À Prova D'água", "Câmera Digital Canon Eos Rebel T6 Kit 18-55",
        "Câmera Profissional Nikon D3500 Lente 18-55mm", "Câmera Digital Sony Alpha A6000 Mirrorless",
    ],
    "BABY_CAR_SEATS": [
        "Cadeirinha Bebê Conforto Burigotto Touring", "Cadeira Auto Infantil Isofix Galzerano",
        "Bebê Conforto Maxi-cosi Citi Preto", "Cadeirinha Carro Infantil Safety 1st 0-25kg",
        "Bebê Conforto Cosco Com Base Cinza", "Cadeirinha Auto Infantil Tutti Baby Reclinável",
        "Cadeira Infantil Para Carro Kiddo Isofix", "Bebê Conforto Chicco Keyfit Base Isofix",
    ],
}
_PT_TEST = {
    "SNEAKERS": ["Tênis Nike Air Zoom Pegasus 43", "Tênis Adidas Corrida Masculino Preto",
                 "Tênis Puma Feminino Branco 37"],
    "MOTORCYCLE_HELMETS": ["Capacete Moto Fechado Preto Tamanho 60", "Capacete Moto Aberto Viseira Cristal",
                           "Capacete Moto Escamoteável Ls2 58"],
    "CELL_PHONES": ["Celular Samsung Galaxy A20 32gb Dual Chip", "Smartphone Motorola Moto G8 64gb Azul",
                    "Celular Xiaomi Redmi 8 32gb Desbloqueado"],
    "DIGITAL_CAMERAS": ["Câmera Digital Canon Powershot 20mp Zoom", "Câmera Nikon Coolpix Digital Wifi",
                        "Câmera Sony Digital 20mp Compacta"],
    "BABY_CAR_SEATS": ["Cadeirinha Bebê Carro Burigotto Isofix", "Bebê Conforto Galzerano Cinza Com Base",
                       "Cadeira Auto Infantil Reclinável 0-18kg"],
}
_ES_ONLY_TRAIN = [
    "Mate Calabaza Forrado Cuero Con Bombilla", "Mate Imperial Calabaza Virola Alpaca",
    "Mate Torpedo Cuero Virola Bronce", "Mate Camionero Calabaza Premium Bombilla",
    "Mate De Madera Algarrobo Con Bombilla", "Mate Acero Inoxidable Termico Bombilla",
    "Mate Calabaza Guampa Virola Plata", "Mate Uruguayo Calabaza Cuero Crudo",
]
_ES_ONLY_TEST = ["Mate Imperial Calabaza Bombilla Pico Rey", "Mate Torpedo Cuero Virola Alpaca",
                 "Mate Camionero Uruguayo Cuero"]


def _rows(titles: dict[str, list[str]], language: str) -> list[dict]:
    return [{"title": t, "category": c, "language": language,
             "label_quality": "unreliable" if i % 3 == 2 else "reliable"}
            for c, ts in titles.items() for i, t in enumerate(ts)]


def bilingual_rows() -> list[dict]:
    """Spanish (conftest's tiny corpus + MATE_GOURDS) and Portuguese (+ BABY_CAR_SEATS) rows, interleaved."""
    es = tiny_rows() + _rows({"MATE_GOURDS": _ES_ONLY_TRAIN}, "spanish")
    pt = _rows(_PT_TRAIN, "portuguese")
    rows = [r for pair in zip(es, pt) for r in pair] + es[len(pt):] + pt[len(es):]
    assert len(rows) == len(es) + len(pt)
    return rows


def bilingual_test_rows() -> list[dict]:
    return tiny_test_rows() + _rows({"MATE_GOURDS": _ES_ONLY_TEST}, "spanish") + _rows(_PT_TEST, "portuguese")


FAST = {"model.embedding_dim": 16, "model.hidden_sizes": [], "text.buckets": 2000, "text.bigram_buckets": 0,
        "train.epochs": 12, "train.batch_size": 32, "train.lr": 0.05, "train.warmup_steps": 0, "train.patience": 12,
        "text.language_token": True}


@pytest.fixture(scope="module")
def bilingual(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bilingual")
    _write_csv(d / "train.csv", TRAIN_HEADER, bilingual_rows())
    _write_csv(d / "test.csv.gz", TRAIN_HEADER, bilingual_test_rows(), gz=True)
    return d


@pytest.fixture(scope="module")
def joint(bilingual, tmp_path_factory):
    """A joint MLP trained on the bilingual fixture (with language tokens), saved as a bundle."""
    out = tmp_path_factory.mktemp("joint") / "bundle"
    clf = titlecat.train(bilingual / "train.csv", model="mlp", overrides=FAST, output=out, tracking=False,
                    cache_dir=tmp_path_factory.mktemp("cache"))
    return clf, out


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


def test_original_train_format_and_empty_titles(bilingual, tmp_path):
    recs = list(read_records(bilingual / "train.csv"))
    assert {r.language for r in recs} == {"spanish", "portuguese"}
    assert {r.label_quality for r in recs} == {"reliable", "unreliable"}
    path = _write_csv(tmp_path / "t.csv", TEST_HEADER, [["7", "  ", "spanish"]])
    with pytest.raises(DataError, match="empty title"):
        list(read_records(path, labelled=False))
    (rec,) = read_records(path, labelled=False, allow_empty_title=True)
    assert rec.id == "7" and rec.title == "  "


# ---- language token and split -----------------------------------------------------------


def test_language_token_is_first_and_only_where_a_language_is_known():
    from titlecat.data import Record

    recs = [Record("Tênis Nike Air", "S", "portuguese", None, None, 1), Record("", "S", "spanish", None, None, 2),
            Record("Zapatillas Nike", "S", None, None, None, 3)]
    on = tokenize_records(recs, TextConfig(language_token=True, max_tokens=2))
    titles = [[on.types[t] for t in on.token_types[a:b]] for a, b in zip(on.offsets[:-1], on.offsets[1:])]
    # the token comes on top of max_tokens; an empty title still carries it; no language, no token
    assert titles == [["__lang_portuguese__", "tenis", "nike"], ["__lang_spanish__"], ["zapatillas", "nike"]]
    off = tokenize_records(recs, TextConfig(max_tokens=2))
    assert not any(t.startswith("__lang_") for t in off.types)


def test_language_aware_split_keeps_every_pair_on_both_sides(bilingual):
    corpus = tokenize_file(bilingual / "train.csv", TextConfig(), DataConfig(), cache_dir=False)
    tr, va = dataset.language_aware_split(corpus, 0.2, seed=3)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(corpus)

    def pairs(idx):
        return {(corpus.categories[c], corpus.languages[lang])
                for c, lang in zip(corpus.category_codes[idx], corpus.language_codes[idx])}

    assert pairs(tr) == pairs(va) == pairs(np.arange(len(corpus)))  # 4 shared categories x 2 + 2 one-language
    assert len(pairs(va)) == 10


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


def test_unreliable_weights_mark_the_unreliable_rows(bilingual):
    corpus = tokenize_file(bilingual / "train.csv", TextConfig(), DataConfig(), cache_dir=False)
    w = dataset.unreliable_weights(corpus, 0.25)
    unreliable = np.array([corpus.qualities[q] == "unreliable" for q in corpus.quality_codes])
    assert w.dtype == np.float32 and unreliable.sum() == 24  # every third row of each (category, language)
    assert np.all(w[unreliable] == 0.25) and np.all(w[~unreliable] == 1.0)
    assert dataset.unreliable_weights(corpus, 1.0) is None  # the default: unweighted loss


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


# ---- submission --------------------------------------------------------------------------


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


def test_cli_rejects_an_unreliable_weight_out_of_range(bilingual, tmp_path, capsys):
    assert main(["train", "--model", "mlp", "--train", str(bilingual / "train.csv"), "--output",
                 str(tmp_path / "c"), "--no-tracking", "--unreliable-weight", "1.5"]) == 2
    assert "data.unreliable_weight" in capsys.readouterr().err
