"""Tokenizing: records or raw titles -> ``Corpus``.

Each title is normalised and split by ``text.tokenize``'s rules.  Many titles at once go
through a compiled scan (``_text_kernel``) that hashes each token and makes a string only of
a token type's first occurrence; a few titles (``predict "one title"``) go through the
regular expression itself.  Both give the same tokens (tests), and the type ids never depend
on a hash being collision-free.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from typing import Protocol

import numpy as np

from . import text
from .config import TextConfig
from .corpus import Corpus
from .data import Record, iter_chunks


class TokenSink(Protocol):
    """Where ``tokenize_records`` puts token ids: appended a chunk at a time, then one array."""

    def extend(self, values: np.ndarray) -> None: ...

    def array(self) -> np.ndarray: ...


class _Growing:
    """An int32 array appended to in place: ``ndarray.resize`` reallocates, which for large
    arrays remaps pages instead of copying, so the peak stays near the final size
    (a list of parts + ``np.concatenate`` holds both, twice the ~1 GB of token ids
    of a 20-million-row file)."""

    def __init__(self) -> None:
        self.buf = np.empty(1 << 16, dtype=np.int32)
        self.n = 0

    def extend(self, values: np.ndarray) -> None:
        end = self.n + len(values)
        if end > len(self.buf):
            self.buf.resize(max(end, len(self.buf) * 3 // 2), refcheck=False)  # we hold the only reference
        self.buf[self.n : end] = values
        self.n = end

    def array(self) -> np.ndarray:
        self.buf.resize(self.n, refcheck=False)
        return self.buf


class _Codes:
    """Strings -> small ints, in order of first appearance, appended a chunk at a time."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.next = 0
        self.parts: list[np.ndarray] = []

    def add(self, values: list[str], keep: bool = True) -> np.ndarray:
        """Codes of ``values`` (new values get new codes); ``keep=False``: not stored for ``codes()``."""
        index = self.index
        for v in dict.fromkeys(values):  # distinct values of the chunk, C-speed
            if v not in index:
                index[v] = self.next
                self.next += 1
        codes = np.fromiter(map(index.__getitem__, values), dtype=np.int32, count=len(values))
        if keep:
            self.parts.append(codes)
        return codes

    def codes(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.empty(0, np.int32)

    def names(self) -> list[str]:
        return list(self.index)


# below this many titles a call tokenizes with the regular expression: the compiled scan's
# one-off cost (importing numba, loading its cache: ~0.5 s) would dominate `predict "one title"`
FAST_TOKENIZE_MIN_TITLES = 2048


class _TokenTypes:
    """Token strings -> ids in order of first appearance, from strings or from hashed spans.

    ``add_strings`` is the plain path (the regular expression's tokens).  ``add_spans`` takes
    tokens as code-point spans of a block plus two 64-bit hashes (``_text_kernel.scan``):
    tokens are grouped by the first hash, the second confirms every member of a group, and
    only a new type's first occurrence is sliced into a string.  If the two hashes ever
    disagree (two different tokens with the same first hash) that chunk is redone exactly,
    token strings and all -- the ids never depend on a hash being collision-free.
    """

    def __init__(self) -> None:
        self.index: dict[str, int] = {}  # every type's string
        self.by_hash: dict[int, int] = {}  # first hash -> id (the first type seen with it)
        self.h2 = np.empty(1 << 12, dtype=np.uint64)  # second hash of each id

    def _register(self, names: list[str], h1: list[int] | None = None, h2: np.ndarray | None = None) -> None:
        """New types ``names`` (none already known) take the next ids."""
        first = len(self.index)
        ids = range(first, first + len(names))
        self.index.update(zip(names, ids))
        if len(self.index) > len(self.h2):
            self.h2 = np.resize(self.h2, max(len(self.index), 2 * len(self.h2)))
        if h1 is not None:
            self.h2[first : len(self.index)] = h2
            for h, i in zip(h1, ids):
                self.by_hash.setdefault(h, i)  # a colliding first hash keeps its first type

    def add_strings(self, values: list[str]) -> np.ndarray:
        index = self.index
        self._register([v for v in dict.fromkeys(values) if v not in index])  # distinct values, C-speed
        return np.fromiter(map(index.__getitem__, values), dtype=np.int32, count=len(values))

    def add_spans(self, block: str, starts: np.ndarray, ends: np.ndarray, h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
        import pandas as pd

        codes, distinct = pd.factorize(h1)  # codes in order of first appearance
        first = np.searchsorted(np.maximum.accumulate(codes), np.arange(len(distinct)))  # first token of each
        rep_h2 = h2[first]
        keys = distinct.tolist()
        ids = np.fromiter(map(self.by_hash.get, keys, itertools.repeat(-1)), dtype=np.int64, count=len(keys))
        new = np.flatnonzero(ids < 0)
        known = ids >= 0
        exact = np.array_equal(h2, rep_h2[codes]) and np.array_equal(self.h2[ids[known]], rep_h2[known])
        if len(new):  # first occurrences of new types become strings (a new first hash is a new string)
            ids[new] = np.arange(len(self.index), len(self.index) + len(new))
            s, e = starts[first[new]].tolist(), ends[first[new]].tolist()
            self._register([block[a:b] for a, b in zip(s, e)], [keys[j] for j in new.tolist()], rep_h2[new])
        if exact:
            return ids[codes].astype(np.int32)
        # two different tokens share a first hash: no shortcut for this chunk
        names = [block[a:b] for a, b in zip(starts.tolist(), ends.tolist())]
        index = self.index
        fresh = [n for n in dict.fromkeys(names) if n not in index]
        if fresh:
            where = {n: i for i, n in enumerate(names)}  # an occurrence of each name, for its hashes
            self._register(fresh, [int(h1[where[n]]) for n in fresh], h2[[where[n] for n in fresh]])
        return np.fromiter(map(index.__getitem__, names), dtype=np.int32, count=len(names))

    def names(self) -> list[str]:
        return list(self.index)


def _scan_titles(types: _TokenTypes, titles: list[str], cfg: TextConfig) -> tuple[np.ndarray, np.ndarray]:
    """Type ids of the tokens kept (at most ``max_tokens`` per title) and tokens kept per title, compiled."""
    from . import _text_kernel as kernel

    block = text.normalized_block(titles, cfg.fold_accents)
    cp = _code_points(block)
    starts, ends, h1, h2, kept = kernel.scan(cp, kernel.classes(cp), len(titles), cfg.split_units, cfg.max_tokens)
    return types.add_spans(block, starts, ends, h1, h2), kept


def _code_points(block: str) -> np.ndarray:
    """(len(block),) uint32 code points.  surrogatepass: a lone surrogate (possible in a str,
    never in a UTF-8 file) is kept as a non-word character, as the regular expression sees it."""
    return np.frombuffer(block.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _regex_titles(types: _TokenTypes, titles: list[str], cfg: TextConfig) -> tuple[np.ndarray, np.ndarray]:
    """The same as ``_scan_titles``, with the regular expression (``text.tokenize_many``)."""
    found = np.array(text.tokenize_many(titles, cfg.fold_accents, cfg.split_units), dtype=object)
    is_end = found == "\n"
    ends = np.flatnonzero(is_end)
    n_tok = np.diff(ends, prepend=-1) - 1  # tokens per title before truncation
    title_of = np.repeat(np.arange(len(titles)), n_tok + 1)
    pos = np.arange(len(found)) - np.repeat(ends - n_tok, n_tok + 1)  # position inside the title
    keep = ~is_end & (pos < cfg.max_tokens)
    # only kept tokens become types, as in the scan: a word cut off every title has no type
    return types.add_strings(found[keep].tolist()), np.bincount(title_of[keep], minlength=len(titles))


def _language_ids(types: _TokenTypes, names: list[str], hashed: bool) -> np.ndarray:
    if not hashed:
        return types.add_strings(names)
    from . import _text_kernel as kernel

    block = "".join(names)
    lengths = np.array([len(n) for n in names], dtype=np.int64)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    h1, h2 = kernel.hash_spans(_code_points(block), starts, ends)
    return types.add_spans(block, starts, ends, h1, h2)


CHUNK_TITLES = 8192  # titles tokenized at a time: bounded memory for big files, few Python-level passes


def tokenize_records(records: Iterable[Record], cfg: TextConfig, labelled: bool = True,
                     chunk: int = CHUNK_TITLES, tokens: TokenSink | None = None) -> Corpus:
    """Tokenize a stream of rows into a ``Corpus`` (memory: a few bytes per token).

    ``tokens`` receives the token ids as they are made (``cache.TokenSpool`` writes them to
    disk and maps them back); by default they grow in memory.

    Rows are taken ``chunk`` at a time; each title is cut to ``cfg.max_tokens`` tokens.
    Tokens are those of ``text.tokenize``: found by the compiled scan
    (``_text_kernel``) when the first chunk has ``FAST_TOKENIZE_MIN_TITLES`` titles or
    more, else by the regular expression itself.  With ``cfg.language_token`` a row with
    a language starts with the extra token ``language_token(language)``.
    """
    columns = (([r.title for r in rows], [r.language for r in rows],
                [r.category for r in rows] if labelled else None, [r.label_quality for r in rows])
               for rows in iter_chunks(records, chunk))
    return _tokenize_columns(columns, cfg, labelled, tokens)


def _tokenize_columns(chunks: Iterable[tuple[list[str], list, list | None, list]], cfg: TextConfig,
                      labelled: bool, tokens: TokenSink | None = None) -> Corpus:
    """``tokenize_records`` on chunks of columns ``(titles, languages, categories or None, qualities)``."""
    types = _TokenTypes()
    tokens = tokens if tokens is not None else _Growing()
    lengths: list[np.ndarray] = []
    cats, langs, quals = _Codes(), _Codes(), _Codes()
    hashed: bool | None = None
    read_s = tokenize_s = 0.0  # time waiting for the rows (reading, parsing) and tokenizing them
    chunks = iter(chunks)
    while True:
        t0 = time.perf_counter()
        try:
            titles, languages, categories, qualities = next(chunks)
        except StopIteration:
            break
        t1 = time.perf_counter()
        read_s += t1 - t0
        if hashed is None:  # decided once: one call never mixes the two kinds of type ids
            hashed = len(titles) >= FAST_TOKENIZE_MIN_TITLES
        kept, n_kept = (_scan_titles if hashed else _regex_titles)(types, titles, cfg)
        if cfg.language_token:
            has = np.array([bool(lang) for lang in languages])
            if has.any():
                lang_ids = _language_ids(types, [language_token(lang) for lang in languages if lang], hashed)
                kept = np.insert(kept, (np.cumsum(n_kept) - n_kept)[has], lang_ids)  # at each title's start
                n_kept = n_kept + has
        tokens.extend(kept)
        lengths.append(n_kept.astype(np.int32))  # tokens per title (offsets are summed in int64)
        if labelled:
            cats.add(categories)
        langs.add([lang or "unknown" for lang in languages])
        quals.add([q or "unknown" for q in qualities])
        tokenize_s += time.perf_counter() - t1
    n = sum(len(x) for x in lengths)
    offsets = np.zeros(n + 1, dtype=np.int64)
    if n:
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
    return Corpus(
        types=types.names(),
        token_types=tokens.array(),
        offsets=offsets,
        categories=cats.names(),
        category_codes=cats.codes() if labelled else np.full(n, -1, np.int32),
        languages=langs.names(),
        language_codes=langs.codes(),
        qualities=quals.names(),
        quality_codes=quals.codes(),
        seconds={"read": read_s, "tokenize": tokenize_s},
    )


def language_token(language: str) -> str:
    """The token prepended to a title of ``language`` (``text.language_token``); no title token has ``_``."""
    return f"__lang_{language}__"


def tokenize_titles(titles: Iterable[str], cfg: TextConfig, language: str | None = None) -> Corpus:
    """A ``Corpus`` of raw titles (for prediction): no labels, no checks beyond ``str``.

    ``language`` (e.g. ``"portuguese"``) is every title's language, for models trained with
    ``text.language_token``; None = unknown (no language token).
    """
    columns = (([t if isinstance(t, str) else str(t) for t in chunk], [language] * len(chunk), None,
                [None] * len(chunk)) for chunk in iter_chunks(titles, CHUNK_TITLES))
    return _tokenize_columns(columns, cfg, labelled=False)



# the text settings a Corpus depends on (vocabulary and n-gram settings apply later, in
# Featurizer.encode): the preprocessing cache's key, and what an ensemble's members must share
TOKENIZE_SETTINGS = ("fold_accents", "split_units", "max_tokens", "language_token")


def tokenize_differences(a: TextConfig, b: TextConfig) -> list[str]:
    """The ``TOKENIZE_SETTINGS`` in which ``a`` and ``b`` differ (none: they tokenize alike)."""
    return [k for k in TOKENIZE_SETTINGS if getattr(a, k) != getattr(b, k)]
