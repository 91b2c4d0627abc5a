"""From a tokenized ``Corpus`` to model inputs: the ``Featurizer`` and its ``Encoded`` arrays.

The ``Featurizer`` (fitted on the training corpus only) maps each token *type* once to its
word id and hashed character n-gram ids; tokens then pick their features by numpy indexing,
a batch at a time.  Work and memory are per distinct word, not per token: the only per-token
array is the corpus's own type ids (memory-mapped from the cache on a large file), so encoding
20 million titles adds nothing per token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from . import text
from .config import TextConfig
from .corpus import Corpus, ragged_arange
from .vocab import PAD, UNK, Vocabulary


@dataclass
class Encoded:
    """Model-ready arrays for a corpus: per token a word id, per type its n-gram ids."""

    token_types: np.ndarray  # (n_tokens,) int32 index into the type tables below (the corpus's own)
    offsets: np.ndarray  # (n_titles + 1,) int64
    type_ngram_offsets: np.ndarray  # (n_types + 1,) int64
    type_ngrams: np.ndarray  # (sum of n-grams over types,) int64 bucket ids
    type_words: np.ndarray  # (n_types,) int64 word id of each type, UNK outside the vocabulary
    type_hashes: np.ndarray  # (n_types,) int64 stable hash of each type (for word bigrams)
    labels: np.ndarray  # (n_titles,) int64 class index; -1 unlabelled, >= n_classes unseen in training
    language_codes: np.ndarray  # (n_titles,) int32 (see Corpus.languages)
    weights: np.ndarray | None = None  # (n_titles,) float32 per-row loss weight, None = all 1
    teacher: np.ndarray | None = None  # (n_titles, n_classes) float16 a teacher's logits (distillation), None = none
    bigram_buckets: int = 0  # hash buckets of word bigrams (0 = none are computed)
    ngram_buckets: int = 0  # n-gram ids are below this (0 = not known: batching sorts to de-duplicate them)
    # (bigram_buckets,) int64 table row of each bigram bucket, -1 for a bucket pruned away (a
    # quantized model's featurizer: ``Featurizer.with_rows``); None: the bucket is the row
    bigram_map: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def word_ids(self) -> np.ndarray:
        """(n_tokens,) int64 word id of every token (a copy per token: for tests and small data)."""
        return self.type_words[self.token_types] if len(self.token_types) else np.empty(0, np.int64)


def title_bigrams(data: Encoded, tok: np.ndarray, tok_titles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(bucket ids, title of each)`` of the word bigrams of tokens ``tok`` (ascending, titles
    concatenated; ``tok_titles`` is the title of each): pairs of consecutive tokens of one title."""
    if not data.bigram_buckets or len(tok) < 2:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    h = data.type_hashes[data.token_types[tok]]
    pair = tok_titles[1:] == tok_titles[:-1]
    buckets, titles = text.bigram_buckets(h[:-1][pair], h[1:][pair], data.bigram_buckets), tok_titles[1:][pair]
    if data.bigram_map is not None:  # a pruned table: the bucket's row, and no bigram of a pruned bucket
        buckets = data.bigram_map[buckets]
        kept = buckets >= 0
        buckets, titles = buckets[kept], titles[kept]
    return buckets, titles


DF_CHUNK_TITLES = 1 << 16  # titles counted at a time: ~100 MB of temporaries, whatever the corpus size


def document_frequencies(data: Encoded, n_words: int, n_buckets: int, n_bigram_buckets: int) -> dict[str, np.ndarray]:
    """How many titles of ``data`` contain each word id, n-gram bucket and word-bigram bucket
    (TF-IDF's document frequency; a feature repeated in a title counts once).

    Counted ``DF_CHUNK_TITLES`` titles at a time: a title's features are expanded (tokens ->
    n-grams, ~10 per token) only for its chunk, so memory does not grow with the corpus; the
    counting itself is one compiled pass (``_count_kernel``).
    """
    from ._count_kernel import count_once

    sizes = {"words": n_words, "ngrams": n_buckets, "bigrams": n_bigram_buckets}
    out = {k: np.zeros(size, dtype=np.int64) for k, size in sizes.items()}
    last = {k: np.full(len(v), -1, dtype=np.int64) for k, v in out.items()}  # the last title each was counted for
    n = len(data)
    for a in progress(range(0, n, DF_CHUNK_TITLES), "idf", n, DF_CHUNK_TITLES):
        b = min(n, a + DF_CHUNK_TITLES)
        t0, t1 = int(data.offsets[a]), int(data.offsets[b])
        titles = np.repeat(np.arange(a, b, dtype=np.int64), np.diff(data.offsets[a : b + 1]))
        types = np.asarray(data.token_types[t0:t1])
        count_once(titles, data.type_words[types], last["words"], out["words"])
        if n_buckets:
            starts = data.type_ngram_offsets[types]
            counts = data.type_ngram_offsets[types + 1] - starts
            count_once(np.repeat(titles, counts), data.type_ngrams[ragged_arange(starts, counts)], last["ngrams"],
                       out["ngrams"])
        if n_bigram_buckets:
            bigrams, bigram_titles = title_bigrams(data, np.arange(t0, t1), titles)
            count_once(bigram_titles, bigrams, last["bigrams"], out["bigrams"])
    return out


def progress(items, desc: str, total: int, per_item: int, unit: str = " titles"):
    """``items`` with a progress bar (``total`` units, ``per_item`` per item, with an ETA) when
    there are enough of them to wait for (and a terminal to show it on): the phases of a
    many-million-title run are not silent."""
    if total < 4 * per_item:
        return items
    bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, leave=False, disable=None)

    def counted():
        with bar:
            for done, item in enumerate(items):
                yield item
                bar.update(min(per_item, total - done * per_item))

    return counted()


NGRAM_CHUNK_TYPES = 1 << 18


class Featurizer:
    """Vocabulary + hashed character n-grams, fitted on a training ``Corpus``.

    A quantized model's featurizer (``with_rows``) knows which hash buckets its pruned tables
    kept: an n-gram or word bigram of a bucket pruned away is left out, as fastText's pruned
    dictionary does, and a kept bucket is read from its row of the smaller table.
    """

    def __init__(self, cfg: TextConfig):
        self.cfg = cfg
        self.ngram_rows_: np.ndarray | None = None  # sorted n-gram buckets the tables kept (None: all)
        self.bigram_rows_: np.ndarray | None = None  # sorted word-bigram buckets the tables kept (None: all)
        # the table row of each bucket, -1 where pruned (None: not pruned): made once by with_rows,
        # read by every encode (a prediction's hot path)
        self._ngram_map: np.ndarray | None = None
        self._bigram_map: np.ndarray | None = None

    def fit(self, corpus: Corpus) -> "Featurizer":
        self.vocab_ = Vocabulary(self.cfg.min_count, self.cfg.max_vocab).fit(corpus.type_counts())
        return self

    @property
    def n_buckets(self) -> int:
        if self.ngram_rows_ is not None:
            return len(self.ngram_rows_)
        return self.cfg.buckets if self.cfg.ngram_max > 0 else 0

    def sizes(self) -> dict[str, int]:
        """Table sizes a model is built with: ``n_words``, ``n_buckets``, ``n_bigram_buckets``."""
        bigrams = self.cfg.bigram_buckets if self.bigram_rows_ is None else len(self.bigram_rows_)
        return {"n_words": len(self.vocab_), "n_buckets": self.n_buckets, "n_bigram_buckets": bigrams}

    def with_rows(self, words: np.ndarray, ngrams: np.ndarray | None, bigrams: np.ndarray | None) -> "Featurizer":
        """The featurizer of tables pruned to these sorted rows (``titlecat.quantize``): the
        vocabulary's words ``words`` (``<pad>`` and ``<unk>`` among them; the others become
        unknown words, as in a pruned fastText dictionary), the n-gram and bigram buckets
        ``ngrams`` and ``bigrams`` (None: all).  Row ids are this featurizer's own."""
        words = np.asarray(words, dtype=np.int64)
        if words[:2].tolist() != [PAD, UNK]:
            raise ValueError("a pruned vocabulary keeps <pad> and <unk>")
        out = Featurizer(self.cfg)
        out.vocab_ = Vocabulary.from_dict({**self.vocab_.to_dict(),
                                           "words": [self.vocab_.words_[i] for i in words.tolist()]})
        for name, rows in (("ngram_rows_", ngrams), ("bigram_rows_", bigrams)):
            mine = getattr(self, name)
            if rows is not None:
                rows = np.asarray(rows, dtype=np.int64)
                rows = rows if mine is None else mine[rows]  # buckets, even when pruned twice
            setattr(out, name, mine if rows is None else rows)
        out._ngram_map = _bucket_map(out.ngram_rows_, self.cfg.buckets)
        out._bigram_map = _bucket_map(out.bigram_rows_, self.cfg.bigram_buckets)
        return out

    def encode(self, corpus: Corpus, labels: np.ndarray | None = None) -> Encoded:
        ng_offsets, ng_ids = self._type_ngrams(corpus.types)
        return Encoded(
            token_types=corpus.token_types,
            offsets=corpus.offsets,
            type_ngram_offsets=ng_offsets,
            type_ngrams=ng_ids,
            type_words=self.vocab_.lookup(corpus.types),
            type_hashes=text.word_hashes(corpus.types),
            bigram_buckets=self.cfg.bigram_buckets,
            ngram_buckets=self.n_buckets,
            bigram_map=self._bigram_map,
            labels=labels if labels is not None else np.full(len(corpus), -1, dtype=np.int64),
            language_codes=corpus.language_codes,
        )

    def _type_ngrams(self, types: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``text.ngram_table`` of ``types``, ``NGRAM_CHUNK_TYPES`` at a time: its temporaries
        (~60 bytes per character) stay small even for the millions of types of a 20 M-title file."""
        c = self.cfg
        if len(types) <= NGRAM_CHUNK_TYPES:
            return self._kept_ngrams(*text.ngram_table(types, c.ngram_min, c.ngram_max, c.buckets))
        offsets, ids = [np.zeros(1, dtype=np.int64)], []
        for a in progress(range(0, len(types), NGRAM_CHUNK_TYPES), "n-grams", len(types),
                             NGRAM_CHUNK_TYPES, " words"):
            off, got = self._kept_ngrams(*text.ngram_table(types[a : a + NGRAM_CHUNK_TYPES], c.ngram_min,
                                                           c.ngram_max, c.buckets))
            offsets.append(off[1:] + offsets[-1][-1])
            ids.append(got)
        return np.concatenate(offsets), np.concatenate(ids)

    def _kept_ngrams(self, offsets: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(offsets, ids)`` of ``text.ngram_table`` with the tables' rows for ids: a pruned
        featurizer's n-grams of pruned buckets left out (see ``with_rows``)."""
        to_row = self._ngram_map
        if to_row is None:
            return offsets, ids
        rows = to_row[ids]
        kept = rows >= 0
        owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))  # the word of each n-gram
        counts = np.bincount(owner[kept], minlength=len(offsets) - 1)
        new = np.zeros_like(offsets)
        np.cumsum(counts, out=new[1:])
        return new, rows[kept]

    def to_dict(self) -> dict:
        return {"text": self.cfg.model_dump(mode="json"), "vocab": self.vocab_.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "Featurizer":
        f = cls(TextConfig.model_validate(d["text"]))
        f.vocab_ = Vocabulary.from_dict(d["vocab"])
        return f


def _bucket_map(rows: np.ndarray | None, buckets: int) -> np.ndarray | None:
    """(buckets,) the table row of each bucket, -1 where pruned (None: not pruned)."""
    if rows is None:
        return None
    out = np.full(buckets, -1, dtype=np.int64)
    out[rows] = np.arange(len(rows))
    return out
