"""From a tokenized ``Corpus`` to model inputs: the ``Featurizer`` and its ``Encoded`` arrays.

The ``Featurizer`` (fitted on the training corpus only) maps each token *type* once to its
word id and hashed character n-gram ids; tokens then pick their features by numpy indexing.
Work is per distinct word, not per token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import text
from .config import TextConfig
from .corpus import Corpus, ragged_arange
from .vocab import Vocabulary


@dataclass
class Encoded:
    """Model-ready arrays for a corpus: per token a word id, per type its n-gram ids."""

    word_ids: np.ndarray  # (n_tokens,) int64, UNK for words outside the vocabulary
    token_types: np.ndarray  # (n_tokens,) int32 index into the type tables below
    offsets: np.ndarray  # (n_titles + 1,) int64
    type_ngram_offsets: np.ndarray  # (n_types + 1,) int64
    type_ngrams: np.ndarray  # (sum of n-grams over types,) int64 bucket ids
    type_hashes: np.ndarray  # (n_types,) int64 stable hash of each type (for word bigrams)
    labels: np.ndarray  # (n_titles,) int64 class index; -1 unlabelled, >= n_classes unseen in training
    language_codes: np.ndarray  # (n_titles,) int32 (see Corpus.languages)
    weights: np.ndarray | None = None  # (n_titles,) float32 per-row loss weight, None = all 1
    bigram_buckets: int = 0  # hash buckets of word bigrams (0 = none are computed)
    ngram_buckets: int = 0  # n-gram ids are below this (0 = not known: batching sorts to de-duplicate them)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def title_bigrams(data: Encoded, tok: np.ndarray, tok_titles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(bucket ids, title of each)`` of the word bigrams of tokens ``tok`` (ascending, titles
    concatenated; ``tok_titles`` is the title of each): pairs of consecutive tokens of one title."""
    if not data.bigram_buckets or len(tok) < 2:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    h = data.type_hashes[data.token_types[tok]]
    pair = tok_titles[1:] == tok_titles[:-1]
    return text.bigram_buckets(h[:-1][pair], h[1:][pair], data.bigram_buckets), tok_titles[1:][pair]


DF_CHUNK_TITLES = 1 << 18  # titles whose features document_frequencies de-duplicates at a time


def document_frequencies(data: Encoded, n_words: int, n_buckets: int, n_bigram_buckets: int) -> dict[str, np.ndarray]:
    """How many titles of ``data`` contain each word id, n-gram bucket and word-bigram bucket
    (TF-IDF's document frequency; a feature repeated in a title counts once)."""
    n = len(data)
    tok = np.arange(len(data.token_types))
    titles = np.repeat(np.arange(n, dtype=np.int64), data.lengths())

    def df(title: np.ndarray, ids: np.ndarray, size: int) -> np.ndarray:
        # `title` is non-decreasing, so chunks cut at title boundaries count each title once,
        # and memory stays bounded on millions of titles
        out = np.zeros(size, dtype=np.int64)
        cuts = np.searchsorted(title, np.arange(0, n + DF_CHUNK_TITLES, DF_CHUNK_TITLES))
        for a, b in zip(cuts[:-1], cuts[1:]):
            pairs = np.sort(title[a:b] * size + ids[a:b])  # (sorting: numpy 2's hashing np.unique took 6x longer)
            first = np.ones(len(pairs), dtype=bool)
            first[1:] = pairs[1:] != pairs[:-1]  # each (title, feature) once
            out += np.bincount(pairs[first] % size, minlength=size)
        return out

    t = data.token_types
    starts = data.type_ngram_offsets[t]
    counts = data.type_ngram_offsets[t + 1] - starts
    bigrams, bigram_titles = title_bigrams(data, tok, titles)
    return {
        "words": df(titles, data.word_ids, n_words),
        "ngrams": df(np.repeat(titles, counts), data.type_ngrams[ragged_arange(starts, counts)], n_buckets)
        if n_buckets else np.zeros(0, dtype=np.int64),
        "bigrams": df(bigram_titles, bigrams, n_bigram_buckets) if n_bigram_buckets else np.zeros(0, dtype=np.int64),
    }


class Featurizer:
    """Vocabulary + hashed character n-grams, fitted on a training ``Corpus``."""

    def __init__(self, cfg: TextConfig):
        self.cfg = cfg

    def fit(self, corpus: Corpus) -> "Featurizer":
        self.vocab_ = Vocabulary(self.cfg.min_count, self.cfg.max_vocab).fit(corpus.type_counts())
        return self

    @property
    def n_buckets(self) -> int:
        return self.cfg.buckets if self.cfg.ngram_max > 0 else 0

    def sizes(self) -> dict[str, int]:
        """Table sizes a model is built with: ``n_words``, ``n_buckets``, ``n_bigram_buckets``."""
        return {"n_words": len(self.vocab_), "n_buckets": self.n_buckets, "n_bigram_buckets": self.cfg.bigram_buckets}

    def encode(self, corpus: Corpus, labels: np.ndarray | None = None) -> Encoded:
        word_of_type = self.vocab_.lookup(corpus.types)
        ng_offsets, ng_ids = self._type_ngrams(corpus.types)
        return Encoded(
            word_ids=word_of_type[corpus.token_types] if len(corpus.token_types) else np.empty(0, np.int64),
            token_types=corpus.token_types,
            offsets=corpus.offsets,
            type_ngram_offsets=ng_offsets,
            type_ngrams=ng_ids,
            type_hashes=text.word_hashes(corpus.types),
            bigram_buckets=self.cfg.bigram_buckets,
            ngram_buckets=self.n_buckets,
            labels=labels if labels is not None else np.full(len(corpus), -1, dtype=np.int64),
            language_codes=corpus.language_codes,
        )

    def _type_ngrams(self, types: list[str]) -> tuple[np.ndarray, np.ndarray]:
        c = self.cfg
        return text.ngram_table(types, c.ngram_min, c.ngram_max, c.buckets)

    def to_dict(self) -> dict:
        return {"text": self.cfg.model_dump(mode="json"), "vocab": self.vocab_.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "Featurizer":
        f = cls(TextConfig.model_validate(d["text"]))
        f.vocab_ = Vocabulary.from_dict(d["vocab"])
        return f


