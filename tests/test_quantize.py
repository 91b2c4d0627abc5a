"""Quantization (``titlecat.quantize``, ``Classifier.quantize``, ``titlecat quantize``): the codes
round-trip within their step, rows are chosen by what they carry, a pruned featurizer leaves out
what its tables dropped, and a quantized bundle predicts as the dequantized model does, round-trips,
and is refused when altered."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import titlecat
from titlecat.batching import collate
from titlecat.bundle import BundleError
from titlecat.cli import main
from titlecat.quantize import QuantizeSpec, decode, encode, nbytes, rows_to_keep
from titlecat.tokenizer import tokenize_titles

from conftest import tiny_test_rows

TITLES = [r["title"] for r in tiny_test_rows()] + ["Casco Moto", "", "xqzv 123"]


# ---- the codes --------------------------------------------------------------------------------


@pytest.mark.parametrize("method,bits", [("int8", 8), ("int4", 4)])
def test_rowwise_codes_are_within_half_a_step_of_every_value(method, bits):
    w = torch.randn(50, 17) * torch.rand(50, 1) * 3  # rows of different ranges; an odd width for int4's packing
    w[3] = 0.25  # a constant row
    codes = encode(w, QuantizeSpec(method))
    step = (w.max(1).values - w.min(1).values) / ((1 << bits) - 1)
    back = decode(codes, method, 17)
    assert back.shape == w.shape
    assert torch.all((back - w).abs() <= step[:, None] / 2 + 1e-5)
    assert torch.equal(back[3], w[3])
    assert nbytes(codes) == 50 * (17 if bits == 8 else 9) + 2 * 50 * 4  # codes, a scale and an offset per row


def test_product_quantization_is_exact_on_few_distinct_subvectors_and_close_otherwise():
    gen = torch.Generator().manual_seed(0)
    palette = torch.randn(40, 2, generator=gen)  # 40 distinct pairs: k-means with 256 centroids finds them all
    w = palette[torch.randint(40, (300, 8), generator=gen)].reshape(300, 16)
    codes = encode(w, QuantizeSpec("pq", dsub=2))
    assert codes["codes"].shape == (300, 8) and codes["codes"].dtype == torch.uint8
    torch.testing.assert_close(decode(codes, "pq", 16), w)
    w = torch.randn(2000, 16, generator=gen)
    err = (decode(encode(w, QuantizeSpec("pq", dsub=4)), "pq", 16) - w).square().mean()
    assert err < 0.5 * w.square().mean()  # 256 centroids for 4 values: well below the variance


def test_bad_specs_and_codes_are_value_errors():
    with pytest.raises(ValueError, match="expected one of"):
        QuantizeSpec("int3")
    with pytest.raises(ValueError, match="keep"):
        QuantizeSpec(keep=-1)
    with pytest.raises(ValueError, match="does not divide"):
        encode(torch.zeros(4, 10), QuantizeSpec("pq", dsub=4))
    codes = encode(torch.randn(4, 8), QuantizeSpec("int8"))
    with pytest.raises(ValueError, match="not rows of 6"):
        decode(codes, "int8", 6)
    with pytest.raises(ValueError, match="without 'scale'"):
        decode({"codes": codes["codes"], "offset": codes["offset"]}, "int8", 8)


def test_rows_are_kept_by_score_over_all_tables():
    scores = {"words": np.array([0.0, 0.0, 5.0, 0.0, 1.0]), "ngrams": np.array([3.0, 0.0, 4.0, 0.5])}
    everything = rows_to_keep(scores, 0, {"words": [0, 1]})  # every row that carries something
    assert everything["words"].tolist() == [0, 1, 2, 4] and everything["ngrams"].tolist() == [0, 2, 3]
    top = rows_to_keep(scores, 5, {"words": [0, 1]})  # <pad>, <unk> and the three largest: 5, 4, 3
    assert top["words"].tolist() == [0, 1, 2] and top["ngrams"].tolist() == [0, 2]


# ---- a pruned featurizer ------------------------------------------------------------------------


def test_a_pruned_featurizer_leaves_out_what_its_tables_dropped(clf):
    f = clf.model.featurizer
    corpus = tokenize_titles(TITLES, clf.text_config)
    full = f.encode(corpus)
    ngrams = np.unique(full.type_ngrams)[::2]  # every other n-gram bucket the titles use
    words = np.array([0, 1, *range(2, len(f.vocab_), 3)])
    pruned = f.with_rows(words, ngrams, None).encode(corpus)
    for t in range(len(corpus.types)):
        mine = full.type_ngrams[full.type_ngram_offsets[t]: full.type_ngram_offsets[t + 1]]
        kept = pruned.type_ngrams[pruned.type_ngram_offsets[t]: pruned.type_ngram_offsets[t + 1]]
        assert ngrams[kept].tolist() == [b for b in mine.tolist() if b in set(ngrams.tolist())]  # order kept
        w = full.type_words[t]
        assert pruned.type_words[t] == (int(np.searchsorted(words, w)) if w in words else 1)  # dropped: <unk>
    assert f.with_rows(words, ngrams, None).sizes()["n_buckets"] == len(ngrams)


# ---- a quantized model --------------------------------------------------------------------------


def dequantized_reference(clf, q) -> torch.nn.Module:
    """The original network with each kept row replaced by its decoded codes and every other row
    made absent (idf 0): what the quantized model must predict like."""
    net = type(clf.model.network)(clf.config.model, **clf.model.featurizer.sizes(), n_classes=len(clf.labels))
    net.load_state_dict(clf.model.network.state_dict())
    embed = net.embed
    words = [clf.model.featurizer.vocab_.index_[w] for w in q.model.featurizer.vocab_.words_]
    rows = {"words": np.array(words), "ngrams": q.model.featurizer.ngram_rows_,
            "bigrams": q.model.featurizer.bigram_rows_}
    with torch.no_grad():
        for name, table in embed.tables().items():
            kept = torch.from_numpy(rows[name])
            idf = getattr(embed, f"idf_{name}")
            mask = torch.zeros_like(idf, dtype=torch.bool)
            mask[kept] = True
            idf[~mask] = 0.0
            table.weight[kept] = q.model.network.embed.tables()[name].weight
    return net.eval()


@pytest.mark.parametrize("method", ["none", "int8", "int4", "pq"])
def test_quantized_predictions_match_the_dequantized_model(clf, method):
    q = clf.quantize(method)
    corpus = tokenize_titles(TITLES, clf.text_config)
    ref = dequantized_reference(clf, q)
    with torch.no_grad():
        expected = ref(collate(clf.model.featurizer.encode(corpus), np.arange(len(TITLES))))
    np.testing.assert_allclose(q.logits(corpus), expected.numpy(), rtol=1e-5, atol=1e-5)
    if method == "none":  # pruning alone drops only rows no title can use: the very predictions
        np.testing.assert_allclose(q.predict_proba(TITLES), clf.predict_proba(TITLES), atol=1e-6)


def test_quantize_keeps_the_rows_asked_for_and_the_most_valuable(clf):
    q = clf.quantize("int8", keep=40)
    sizes = q.model.featurizer.sizes()
    assert sum(sizes.values()) == 40
    scores = clf.model.network.embed.row_scores()["ngrams"].numpy()
    kept = q.model.featurizer.ngram_rows_
    dropped = np.setdiff1d(np.flatnonzero(scores > 0), kept)
    assert scores[kept].min() >= scores[dropped].max() or len(kept) == 1


def test_a_quantized_bundle_round_trips_and_is_smaller(trained, tmp_path):
    q = trained.clf.quantize("int8")
    q.save(tmp_path / "q")
    loaded = titlecat.load(tmp_path / "q")
    np.testing.assert_array_equal(loaded.predict_proba(TITLES), q.predict_proba(TITLES))
    assert loaded.predict(TITLES, k=2)[0] == q.predict(TITLES, k=2)[0]
    size = lambda d: sum(p.stat().st_size for p in d.iterdir() if p.suffix != ".png")  # noqa: E731
    assert size(tmp_path / "q") < size(trained.bundle) / 20
    meta = json.loads((tmp_path / "q" / "bundle.json").read_text())
    assert meta["quantization"]["method"] == "int8" and "tables.safetensors" in meta["files"]
    assert meta["quantization"]["rows"]["ngrams"] == len(q.model.featurizer.ngram_rows_)
    loaded.save(tmp_path / "again")  # saved again: the same codes, not codes of codes
    assert (tmp_path / "again" / "tables.safetensors").read_bytes() == (tmp_path / "q" / "tables.safetensors").read_bytes()
    assert loaded.evaluate(trained.test)["n"] == 12


def test_an_altered_quantized_bundle_is_refused(trained, tmp_path):
    trained.clf.quantize("int4").save(tmp_path / "q")
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "q", bad)
    data = bytearray((bad / "tables.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (bad / "tables.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum mismatch"):
        titlecat.load(bad)
    shutil.rmtree(bad)
    shutil.copytree(tmp_path / "q", bad)
    meta = json.loads((bad / "bundle.json").read_text())
    meta["quantization"]["method"] = "int8"  # codes read with another method: a clear error, not nonsense
    (bad / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="weights do not fit"):
        titlecat.load(bad)


def test_a_quantized_refitted_model_is_not_validated_on_rows_it_learned(trained, tmp_path):
    assert trained.clf.config.train.refit and trained.clf.held_out is not None
    q = trained.clf.quantize("int8")
    q.save(tmp_path / "q")
    with pytest.raises(ValueError, match="learned from its validation rows"):
        titlecat.load(tmp_path / "q").validate(trained.train)


def test_the_tfidf_baseline_is_not_quantized(tiny_train_file, tmp_path, capsys):
    clf = titlecat.train(tiny_train_file, model="tfidf", tracking=False, output=tmp_path / "svm")
    with pytest.raises(ValueError, match="no embedding tables"):
        clf.quantize()
    assert main(["quantize", "--model", str(tmp_path / "svm"), "--output", str(tmp_path / "q")]) == 2
    assert "no embedding tables" in capsys.readouterr().err and not (tmp_path / "q").exists()


def test_quantize_command(trained, tmp_path, capsys):
    out = tmp_path / "q"
    assert main(["quantize", "--model", str(trained.bundle), "--output", str(out), "--method", "pq",
                 "--dsub", "4", "--keep", "300"]) == 0
    printed = capsys.readouterr().out
    assert "quantized (pq):" in printed and "MB ->" in printed and "ngrams" in printed
    assert sum(titlecat.load(out).model.featurizer.sizes().values()) == 300
    assert main(["quantize", "--model", str(trained.bundle), "--output", str(tmp_path / "q2"), "--method", "pq",
                 "--dsub", "5"]) == 2
    assert "does not divide" in capsys.readouterr().err
