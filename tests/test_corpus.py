"""titlecat.corpus: the compact tokenized corpus (token ids, offsets, codes) -- type counts,
subsets, concatenation -- and ``ragged_arange``."""

from __future__ import annotations

import numpy as np
from conftest import records, tiny_rows, titles_of

from titlecat.cache import tokenize_file
from titlecat.config import Config, TextConfig
from titlecat.corpus import ragged_arange
from titlecat.tokenizer import tokenize_records, tokenize_titles


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


# ---- Corpus.concat --------------------------------------------------------------------


def test_corpus_concat_is_the_rows_of_both(tmp_path, write_jsonl):
    cfg = Config.default("mlp")
    a_rows, b_rows = tiny_rows()[:30], [*tiny_rows()[30:], {"title": "Mesa de luz", "category": "TABLES",
                                                           "language": "portuguese"}]
    a = tokenize_file(write_jsonl(tmp_path / "a.jsonl", a_rows), cfg.text, cfg.data, cache_dir=False)
    b = tokenize_file(write_jsonl(tmp_path / "b.jsonl", b_rows), cfg.text, cfg.data, cache_dir=False)
    both = tokenize_file(write_jsonl(tmp_path / "ab.jsonl", a_rows + b_rows), cfg.text, cfg.data, cache_dir=False)
    joined = a.concat(b)

    def rows(c):
        return [([c.types[t] for t in c.token_types[c.offsets[i]:c.offsets[i + 1]]], c.category_names()[i],
                 c.languages[c.language_codes[i]], c.qualities[c.quality_codes[i]]) for i in range(len(c))]

    assert len(joined) == len(a_rows) + len(b_rows)
    assert rows(joined) == rows(both)


# ---- ragged_arange --------------------------------------------------------------------


def test_ragged_arange():
    assert ragged_arange(np.array([5, 0, 9]), np.array([2, 0, 3])).tolist() == [5, 6, 9, 10, 11]
    assert ragged_arange(np.array([3]), np.array([0])).tolist() == []


def test_subset_in_chunks_equals_one_gather(monkeypatch):
    import titlecat.corpus as corpus_module

    corpus = tokenize_records(records(tiny_rows()), TextConfig())
    idx = np.array([5, 0, 3, 3, 9, 1])
    whole = corpus.subset(idx)
    monkeypatch.setattr(corpus_module, "SUBSET_CHUNK", 2)
    chunked = corpus.subset(idx)
    np.testing.assert_array_equal(chunked.token_types, whole.token_types)
    np.testing.assert_array_equal(chunked.offsets, whole.offsets)
