"""titlecat.tokenizer: titles and records tokenized into a ``Corpus`` (in chunks, cut to
``text.max_tokens``, with an optional language token), and the compiled scan that tokenizes
large inputs exactly as the regular expression does."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_corpus_equal, records, tiny_rows, tiny_test_rows, titles_of
from hypothesis import given, settings
from hypothesis import strategies as st
from test_text import TRICKY_TITLES, _unit_chars, titles

from titlecat.config import TextConfig
from titlecat.text import tokenize
from titlecat.tokenizer import tokenize_records, tokenize_titles

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


# ---- the language token ---------------------------------------------------------------


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


# ---- the compiled scan (tokenizer.tokenize_records on large inputs) ------------------------------


def _corpus(titles: list[str], fold: bool, split_units: bool, max_tokens: int, compiled: bool, chunk: int = 8192):
    from titlecat import tokenizer
    from titlecat.config import TextConfig
    from titlecat.data import Record

    cfg = TextConfig(fold_accents=fold, split_units=split_units, max_tokens=max_tokens)
    threshold = 0 if compiled else 10**9
    old, tokenizer.FAST_TOKENIZE_MIN_TITLES = tokenizer.FAST_TOKENIZE_MIN_TITLES, threshold
    try:
        records = [Record(t, None, None, None, None, i) for i, t in enumerate(titles, 1)]
        corpus = tokenizer.tokenize_records(records, cfg, labelled=False, chunk=chunk)
    finally:
        tokenizer.FAST_TOKENIZE_MIN_TITLES = old
    return corpus


def _corpus_tokens(*args, **kwargs) -> list[list[str]]:
    corpus = _corpus(*args, **kwargs)
    o = corpus.offsets
    return [[corpus.types[k] for k in corpus.token_types[o[i]:o[i + 1]]] for i in range(len(corpus))]


@settings(max_examples=300, deadline=None)
@given(ts=st.lists(st.one_of(titles, st.lists(_unit_chars, max_size=25).map("".join)), min_size=1, max_size=10),
       fold=st.booleans(), split_units=st.booleans(), max_tokens=st.integers(1, 6))
def test_compiled_scan_equals_the_regular_expression(ts, fold, split_units, max_tokens):
    expected = [tokenize(t, fold, split_units, max_tokens) for t in ts]
    assert _corpus_tokens(ts, fold, split_units, max_tokens, compiled=True) == expected
    assert _corpus_tokens(ts, fold, split_units, max_tokens, compiled=False) == expected
    # the same corpus, not only the same tokens: types (kept tokens only, in order of first
    # appearance) and ids, so a cached corpus never depends on which path made it
    scanned, matched = (_corpus(ts, fold, split_units, max_tokens, compiled=c, chunk=3) for c in (True, False))
    assert scanned.types == matched.types
    np.testing.assert_array_equal(scanned.token_types, matched.token_types)
    np.testing.assert_array_equal(scanned.offsets, matched.offsets)


def test_compiled_scan_on_tricky_titles():
    for fold in (True, False):
        for split_units in (True, False):
            expected = [tokenize(t, fold, split_units) for t in TRICKY_TITLES]
            assert _corpus_tokens(TRICKY_TITLES, fold, split_units, 48, compiled=True) == expected
            assert _corpus_tokens(TRICKY_TITLES, fold, split_units, 48, compiled=True, chunk=3) == expected


def test_compiled_scan_survives_colliding_hashes(monkeypatch):
    """Ids never trust the first hash alone: with every token's first hash its length, the
    second hash catches the collisions and the chunk is redone from the token strings."""
    from titlecat import _text_kernel as kernel

    real_scan = kernel.scan

    def colliding_scan(*args):
        starts, ends, h1, h2, kept = real_scan(*args)
        return starts, ends, (ends - starts).astype(np.uint64), h2, kept

    monkeypatch.setattr(kernel, "scan", colliding_scan)
    ts = ["casa roja 110cc", "rosa casa moto", "roja rosa", "moto 2,5kg casa"] * 3
    expected = [tokenize(t) for t in ts]
    assert _corpus_tokens(ts, True, True, 48, compiled=True) == expected
    assert _corpus_tokens(ts, True, True, 48, compiled=True, chunk=1) == expected  # across chunks too


@pytest.mark.parametrize("name", ["meli2019-es/spanish.train.jsonl.gz", "meli2019-es/spanish.test.jsonl.gz",
                                  "meli2019-original/test.head.csv"])
def test_compiled_scan_gives_the_regular_expressions_corpus_on_the_real_files(real_data, name):
    from titlecat import tokenizer
    from titlecat.config import TextConfig
    from titlecat.data import read_records

    records = list(read_records(real_data / name, labelled=name.startswith("meli2019-es")))
    for cfg in (TextConfig(), TextConfig(fold_accents=False, split_units=False, max_tokens=5)):
        corpora = []
        for threshold in (0, 10**9):  # compiled scan, then the regular expression
            old, tokenizer.FAST_TOKENIZE_MIN_TITLES = tokenizer.FAST_TOKENIZE_MIN_TITLES, threshold
            try:
                corpora.append(tokenizer.tokenize_records(records, cfg, labelled=False))
            finally:
                tokenizer.FAST_TOKENIZE_MIN_TITLES = old
        scanned, matched = corpora
        assert scanned.types == matched.types
        np.testing.assert_array_equal(scanned.token_types, matched.token_types)
        np.testing.assert_array_equal(scanned.offsets, matched.offsets)
