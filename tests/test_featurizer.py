"""titlecat.featurizer: the ``Featurizer`` (vocabulary of the fitted corpus, word ids and
character n-gram buckets of any corpus, JSON round trip) and ``document_frequencies``."""

from __future__ import annotations

import json

import numpy as np
from conftest import records, tiny_rows, tiny_test_rows
from test_embedding import features_matrix, setup

from titlecat.config import TextConfig
from titlecat.featurizer import Featurizer, document_frequencies
from titlecat.text import char_ngrams
from titlecat.tokenizer import tokenize_records, tokenize_titles
from titlecat.vocab import PAD, UNK


def _train_and_other():
    train = tokenize_titles(["casco moto negro", "casco moto", "celular samsung"], TextConfig())
    other = tokenize_titles(["casco rojo", "zapatillas nike"], TextConfig())
    return train, other


def test_featurizer_vocab_from_the_fitted_corpus_only():
    train, other = _train_and_other()
    f = Featurizer(TextConfig(min_count=1)).fit(train)
    assert set(f.vocab_.words_[2:]) == {"casco", "moto", "negro", "celular", "samsung"}
    assert f.vocab_.words_[2:4] == ["casco", "moto"]  # most frequent first


def test_unknown_words_encode_to_unk_but_keep_their_ngrams():
    train, other = _train_and_other()
    cfg = TextConfig(ngram_min=3, ngram_max=4, buckets=1000)
    f = Featurizer(cfg).fit(train)
    enc = f.encode(other)
    words = [other.types[t] for t in enc.token_types]
    assert words == ["casco", "rojo", "zapatillas", "nike"]
    assert enc.word_ids().tolist() == [f.vocab_.index_["casco"], UNK, UNK, UNK]
    for i, w in enumerate(other.types):
        n = enc.type_ngram_offsets[i + 1] - enc.type_ngram_offsets[i]
        assert n == len(char_ngrams(w, 3, 4)) > 0, w
    assert enc.type_ngrams.min() >= 0 and enc.type_ngrams.max() < 1000
    np.testing.assert_array_equal(enc.offsets, other.offsets)
    assert enc.labels.tolist() == [-1, -1] and len(enc) == 2
    assert enc.lengths().tolist() == [2, 2]


def test_min_count_makes_rare_training_words_unk():
    train, _ = _train_and_other()
    f = Featurizer(TextConfig(min_count=2)).fit(train)
    enc = f.encode(train)
    words = [train.types[t] for t in enc.token_types]
    expected = [f.vocab_.index_[w] if w in ("casco", "moto") else UNK for w in words]
    assert enc.word_ids().tolist() == expected


def test_encode_passes_labels_through():
    train, _ = _train_and_other()
    f = Featurizer(TextConfig()).fit(train)
    labels = np.array([2, 0, 1])
    assert f.encode(train, labels).labels.tolist() == [2, 0, 1]


def test_ngrams_off():
    train, _ = _train_and_other()
    f = Featurizer(TextConfig(ngram_max=0)).fit(train)
    enc = f.encode(train)
    assert f.n_buckets == 0
    assert enc.type_ngrams.size == 0 and np.all(enc.type_ngram_offsets == 0)


def test_encode_empty_titles():
    train, _ = _train_and_other()
    f = Featurizer(TextConfig()).fit(train)
    enc = f.encode(tokenize_titles(["🙂", "!!!"], TextConfig()))
    assert enc.word_ids().size == 0 and enc.lengths().tolist() == [0, 0]


def test_featurizer_round_trip_gives_identical_encodings():
    train = tokenize_records(records(tiny_rows()), TextConfig(buckets=5000))
    test = tokenize_records(records(tiny_test_rows()), TextConfig(buckets=5000))
    f = Featurizer(TextConfig(buckets=5000, min_count=2)).fit(train)
    g = Featurizer.from_dict(json.loads(json.dumps(f.to_dict())))
    assert g.cfg == f.cfg and g.vocab_.words_ == f.vocab_.words_
    for corpus in (train, test):
        a, b = f.encode(corpus), g.encode(corpus)
        for name in ("type_words", "token_types", "offsets", "type_ngram_offsets", "type_ngrams", "labels"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


# ---- document_frequencies (the idf of the MLP's "tfidf" pooling, test_embedding.py) ----------


def test_document_frequencies_count_titles_not_occurrences():
    feat, data, _ = setup()
    counts = features_matrix(data, feat.sizes())
    expected = np.asarray((counts > 0).sum(0)).ravel()
    df = document_frequencies(data, **feat.sizes())
    n_w, n_b = feat.sizes()["n_words"], feat.sizes()["n_buckets"]
    np.testing.assert_array_equal(np.concatenate([df["words"], df["ngrams"], df["bigrams"]]), expected)
    talle = feat.vocab_.lookup(["talle"])[0]
    assert df["words"][talle] == 4  # in 4 titles, 6 times
    assert df["words"][PAD] == 0 and df["words"][UNK] == 0


def test_document_frequencies_are_the_same_counted_in_chunks(monkeypatch):
    """Counted a few titles at a time (bounded memory on millions of titles): the same counts."""
    import titlecat.featurizer as featurizer

    feat, data, _ = setup()
    whole = document_frequencies(data, **feat.sizes())
    monkeypatch.setattr(featurizer, "DF_CHUNK_TITLES", 2)  # chunks cut inside the repeated-token title too
    chunked = document_frequencies(data, **feat.sizes())
    for k in whole:
        np.testing.assert_array_equal(chunked[k], whole[k])


def test_document_frequencies_and_ngrams_in_chunks_equal_all_at_once(monkeypatch):
    """At scale both are computed a chunk of titles (types) at a time: the same numbers."""
    import titlecat.featurizer as featurizer

    feat, data, _ = setup()
    whole = document_frequencies(data, **feat.sizes())
    types = [f"w{i}x{i * 7}" for i in range(50)]
    ngrams = feat._type_ngrams(types)
    monkeypatch.setattr(featurizer, "DF_CHUNK_TITLES", 3)
    monkeypatch.setattr(featurizer, "NGRAM_CHUNK_TYPES", 7)
    for k, v in document_frequencies(data, **feat.sizes()).items():
        np.testing.assert_array_equal(v, whole[k], err_msg=k)
    for a, b in zip(feat._type_ngrams(types), ngrams):
        np.testing.assert_array_equal(a, b)


def test_progress_passes_every_item_through():
    from titlecat.featurizer import progress

    assert list(progress(range(10), "x", 100, 10)) == list(range(10))  # long enough for a bar
    items = [1, 2]
    assert progress(items, "x", 2, 1) is items  # too short for a bar: the items themselves
