"""titlecat.features: tokenised corpora, their on-disk cache, and the featurizer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_rows, tiny_test_rows

import titlecat.cache as cache
from titlecat.config import DataConfig, TextConfig
from titlecat.data import Record
from titlecat.corpus import Corpus, ragged_arange
from titlecat.featurizer import Featurizer
from titlecat.cache import tokenize_file
from titlecat.tokenizer import tokenize_records, tokenize_titles
from titlecat.text import char_ngrams, tokenize
from titlecat.vocab import UNK


def records(rows):
    return [
        Record(r["title"], r.get("category"), r.get("language"), r.get("label_quality"), None, i)
        for i, r in enumerate(rows, 1)
    ]


def titles_of(corpus: Corpus) -> list[list[str]]:
    """Token strings of each title, rebuilt from the compact arrays."""
    o = corpus.offsets
    return [[corpus.types[t] for t in corpus.token_types[o[i] : o[i + 1]]] for i in range(len(corpus))]


def assert_corpus_equal(a: Corpus, b: Corpus) -> None:
    assert a.types == b.types
    assert a.categories == b.categories and a.languages == b.languages and a.qualities == b.qualities
    for name in ("token_types", "offsets", "category_codes", "language_codes", "quality_codes"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.skipped == b.skipped


# ---- tokenize_records / tokenize_titles -----------------------------------------------


@pytest.mark.parametrize("chunk", [1, 5, 8192])
def test_tokenize_records_matches_tokenize(chunk):
    rows = tiny_rows()
    cfg = TextConfig()
    corpus = tokenize_records(records(rows), cfg, chunk=chunk)
    assert len(corpus) == len(rows)
    assert corpus.offsets[0] == 0 and corpus.offsets[-1] == len(corpus.token_types)
    assert np.all(np.diff(corpus.offsets) >= 0)
    assert titles_of(corpus) == [tokenize(r["title"]) for r in rows]
    assert corpus.category_names() == [r["category"] for r in rows]
    assert [corpus.languages[c] for c in corpus.language_codes] == ["spanish"] * len(rows)
    assert [corpus.qualities[c] for c in corpus.quality_codes] == [r["label_quality"] for r in rows]
    assert len(set(corpus.types)) == len(corpus.types)  # distinct
    assert corpus.types[:3] == ["zapatillas", "nike", "air"]  # order of first appearance


def test_tokenize_records_result_does_not_depend_on_chunk_size():
    rows = tiny_rows() + tiny_test_rows()
    small = tokenize_records(records(rows), TextConfig(), chunk=3)
    assert_corpus_equal(small, tokenize_records(records(rows), TextConfig()))


def test_tokenize_records_cuts_to_max_tokens_and_keeps_empty_titles():
    rows = [
        {"title": "uno dos tres cuatro cinco", "category": "A"},
        {"title": "🙂 !!!", "category": "B"},  # no tokens at all: still one (empty) title
        {"title": "seis siete", "category": "A"},
    ]
    corpus = tokenize_records(records(rows), TextConfig(max_tokens=3), chunk=2)
    assert titles_of(corpus) == [["uno", "dos", "tres"], [], ["seis", "siete"]]
    assert corpus.offsets.tolist() == [0, 3, 3, 5]
    assert corpus.category_codes.tolist() == [0, 1, 0]
    # a token cut by max_tokens is never counted, so it cannot enter a vocabulary
    assert corpus.type_counts().get("cuatro", 0) == 0
    assert set(corpus.token_types.tolist()) <= set(range(len(corpus.types)))


def test_tokenize_records_missing_language_is_unknown():
    corpus = tokenize_records(records([{"title": "Casco", "category": "A"}]), TextConfig())
    assert corpus.languages == ["unknown"] and corpus.qualities == ["unknown"]


def test_tokenize_titles_is_unlabelled():
    corpus = tokenize_titles(["Casco Moto 110cc", "", "Cámara"], TextConfig())
    assert titles_of(corpus) == [["casco", "moto", "110", "cc"], [], ["camara"]]
    assert corpus.category_codes.tolist() == [-1, -1, -1]
    assert corpus.categories == [] and corpus.category_names() == [None, None, None]


def test_tokenize_titles_empty_list():
    corpus = tokenize_titles([], TextConfig())
    assert len(corpus) == 0 and corpus.offsets.tolist() == [0] and corpus.token_types.size == 0


def test_text_settings_reach_the_tokenizer():
    corpus = tokenize_titles(["Cámara 110cc"], TextConfig(fold_accents=False, split_units=False))
    assert titles_of(corpus) == [["cámara", "110cc"]]


def test_type_counts():
    corpus = tokenize_titles(["casco moto", "moto moto"], TextConfig())
    assert corpus.type_counts() == {"casco": 1, "moto": 3}


# ---- Corpus.subset --------------------------------------------------------------------


def test_subset_picks_rows_in_the_given_order():
    rows = tiny_rows()
    corpus = tokenize_records(records(rows), TextConfig())
    idx = np.array([5, 0, 43, 5, 20])
    sub = corpus.subset(idx)
    assert len(sub) == len(idx)
    full = titles_of(corpus)
    assert titles_of(sub) == [full[i] for i in idx]
    assert sub.category_names() == [rows[i]["category"] for i in idx]
    assert sub.language_codes.tolist() == corpus.language_codes[idx].tolist()
    assert sub.quality_codes.tolist() == corpus.quality_codes[idx].tolist()
    assert sub.types is corpus.types


def test_subset_empty_and_with_empty_titles():
    corpus = tokenize_titles(["a b", "", "c"], TextConfig())
    assert titles_of(corpus.subset(np.array([1, 2]))) == [[], ["c"]]
    empty = corpus.subset(np.array([], dtype=np.int64))
    assert len(empty) == 0 and empty.token_types.size == 0


def test_ragged_arange():
    assert ragged_arange(np.array([5, 0, 9]), np.array([2, 0, 3])).tolist() == [5, 6, 9, 10, 11]
    assert ragged_arange(np.array([3]), np.array([0])).tolist() == []


# ---- tokenize_file and its cache ------------------------------------------------------


@pytest.fixture
def count_reads(monkeypatch):
    """Counts calls of ``read_records`` made by titlecat.cache."""
    calls = []
    real = cache.read_records

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(cache, "read_records", counting)
    return calls


def test_tokenize_file_equals_tokenize_records(tiny_train_file):
    corpus = tokenize_file(tiny_train_file, TextConfig(), DataConfig(), cache_dir=False)
    assert_corpus_equal(corpus, tokenize_records(records(tiny_rows()), TextConfig()))


def test_cache_hit_skips_reading(tiny_train_file, count_reads, tmp_path):
    a = tokenize_file(tiny_train_file, TextConfig(), DataConfig())
    assert len(count_reads) == 1
    cached = list((tmp_path / "cache").glob("*.npz"))  # TITLECAT_CACHE, set by conftest
    assert len(cached) == 1
    b = tokenize_file(tiny_train_file, TextConfig(), DataConfig())
    assert len(count_reads) == 1
    assert_corpus_equal(a, b)
    assert b.token_types.dtype == a.token_types.dtype and b.offsets.dtype == a.offsets.dtype


def test_cache_dir_argument(tiny_train_file, count_reads, tmp_path):
    tokenize_file(tiny_train_file, TextConfig(), DataConfig(), cache_dir=tmp_path / "elsewhere")
    tokenize_file(tiny_train_file, TextConfig(), DataConfig(), cache_dir=tmp_path / "elsewhere")
    assert len(count_reads) == 1
    assert len(list((tmp_path / "elsewhere").glob("*.npz"))) == 1
    tokenize_file(tiny_train_file, TextConfig(), DataConfig(), cache_dir=False)
    tokenize_file(tiny_train_file, TextConfig(), DataConfig(), cache_dir=False)
    assert len(count_reads) == 3


@pytest.mark.parametrize(
    "text_cfg, data_cfg, labelled",
    [
        (TextConfig(fold_accents=False), DataConfig(), True),
        (TextConfig(split_units=False), DataConfig(), True),
        (TextConfig(max_tokens=3), DataConfig(), True),
        (TextConfig(), DataConfig(label_quality="reliable"), True),
        (TextConfig(), DataConfig(skip_bad_rows=True), True),
        (TextConfig(), DataConfig(), False),
    ],
)
def test_changed_settings_miss_the_cache(tiny_train_file, count_reads, text_cfg, data_cfg, labelled):
    base = tokenize_file(tiny_train_file, TextConfig(), DataConfig())
    other = tokenize_file(tiny_train_file, text_cfg, data_cfg, labelled=labelled)
    assert len(count_reads) == 2
    assert_corpus_equal(other, tokenize_file(tiny_train_file, text_cfg, data_cfg, labelled=labelled, cache_dir=False))
    if text_cfg.fold_accents is False:
        assert "cámara" in other.types and "cámara" not in base.types


def test_settings_that_do_not_change_tokens_share_the_cache(tiny_train_file, count_reads):
    tokenize_file(tiny_train_file, TextConfig(), DataConfig())
    tokenize_file(tiny_train_file, TextConfig(min_count=2, buckets=1000), DataConfig(val_fraction=0.2, split_seed=1))
    assert len(count_reads) == 1


def test_changed_file_content_misses_the_cache(tmp_path, write_jsonl, count_reads):
    path = tmp_path / "train.jsonl"
    write_jsonl(path, tiny_rows())
    a = tokenize_file(path, TextConfig(), DataConfig())
    write_jsonl(path, tiny_rows()[:-1] + [{**tiny_rows()[-1], "title": "Cámara Nueva Distinta"}])
    b = tokenize_file(path, TextConfig(), DataConfig())
    assert len(count_reads) == 2
    assert "distinta" in b.types and "distinta" not in a.types


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: b"",  # empty
        lambda b: b"not an npz file at all",
        lambda b: b[:10] + bytes(len(b) - 10),  # zeroed after the zip magic
        lambda b: b[: len(b) // 2] + bytes([b[len(b) // 2] ^ 0xFF]) + b[len(b) // 2 + 1 :],  # one byte flipped
    ],
    ids=["truncated", "empty", "garbage", "zeroed", "flipped"],
)
def test_corrupted_cache_is_rebuilt(tiny_train_file, count_reads, tmp_path, damage):
    a = tokenize_file(tiny_train_file, TextConfig(), DataConfig())
    (cached,) = (tmp_path / "cache").glob("*.npz")
    cached.write_bytes(damage(cached.read_bytes()))
    b = tokenize_file(tiny_train_file, TextConfig(), DataConfig())
    assert len(count_reads) == 2
    assert_corpus_equal(a, b)
    c = tokenize_file(tiny_train_file, TextConfig(), DataConfig())  # and the rebuilt entry is good again
    assert len(count_reads) == 2
    assert_corpus_equal(a, c)


def test_every_single_byte_flip_of_the_cache_is_rebuilt_or_harmless(tiny_train_file, tmp_path):
    good = tokenize_file(tiny_train_file, TextConfig(), DataConfig())
    (cached,) = (tmp_path / "cache").glob("*.npz")
    data = cached.read_bytes()
    # a sample of the whole file, and all of the last central-directory entry and end record
    positions = sorted(set(range(0, len(data), 211)) | set(range(data.rfind(b"PK\x01\x02", 0), len(data))))
    for i in positions:
        cached.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :])
        assert_corpus_equal(tokenize_file(tiny_train_file, TextConfig(), DataConfig()), good)


def test_skipped_rows_are_counted_and_cached(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "t.jsonl", tiny_rows()[:3] + ["not json", '{"title": ""}'])
    a = tokenize_file(path, TextConfig(), DataConfig(skip_bad_rows=True))
    b = tokenize_file(path, TextConfig(), DataConfig(skip_bad_rows=True))
    assert len(a) == 3 and a.skipped == 2 and b.skipped == 2


def test_unwritable_cache_is_not_an_error(tiny_train_file, tmp_path):
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the cache folder should be")
    corpus = tokenize_file(tiny_train_file, TextConfig(), DataConfig(), cache_dir=blocker / "cache")
    assert len(corpus) == len(tiny_rows())


# ---- Featurizer ----------------------------------------------------------------------


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
    assert enc.word_ids.tolist() == [f.vocab_.index_["casco"], UNK, UNK, UNK]
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
    assert enc.word_ids.tolist() == expected


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
    assert enc.word_ids.size == 0 and enc.lengths().tolist() == [0, 0]


def test_featurizer_round_trip_gives_identical_encodings():
    train = tokenize_records(records(tiny_rows()), TextConfig(buckets=5000))
    test = tokenize_records(records(tiny_test_rows()), TextConfig(buckets=5000))
    f = Featurizer(TextConfig(buckets=5000, min_count=2)).fit(train)
    g = Featurizer.from_dict(json.loads(json.dumps(f.to_dict())))
    assert g.cfg == f.cfg and g.vocab_.words_ == f.vocab_.words_
    for corpus in (train, test):
        a, b = f.encode(corpus), g.encode(corpus)
        for name in ("word_ids", "token_types", "offsets", "type_ngram_offsets", "type_ngrams", "labels"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
