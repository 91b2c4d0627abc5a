"""From rows to model inputs: tokenised corpora, their cache, and the featurizer.

The pipeline is two steps, so that the expensive one is done once per file:

1. ``tokenize_file`` reads a file and tokenises every title into a compact
   ``Corpus``: the distinct token strings (``types``) plus one int32 per token.
   It is cached on disk, keyed by the file's content hash and the text settings,
   so a second run skips reading and tokenising.
2. ``Featurizer`` (fitted on the training corpus only) maps each *type* once to
   its word id and hashed character n-gram ids; tokens then pick their features
   by numpy indexing.  Work is per distinct word, not per token.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from . import text
from .config import DataConfig, TextConfig
from .data import ReadStats, Record, iter_chunks, read_records
from .vocab import UNK, Vocabulary

CACHE_VERSION = 1


@dataclass
class Corpus:
    """Tokenised titles of one file (or of a list of titles), in compact arrays."""

    types: list[str]  # distinct tokens, in order of first appearance
    token_types: np.ndarray  # (n_tokens,) int32 index into types
    offsets: np.ndarray  # (n_titles + 1,) int64; title i is token_types[offsets[i]:offsets[i+1]]
    categories: list[str]  # distinct categories (empty for an unlabelled corpus)
    category_codes: np.ndarray  # (n_titles,) int32 index into categories, -1 when unlabelled
    languages: list[str]  # distinct languages ("unknown" when a row has none)
    language_codes: np.ndarray  # (n_titles,) int32 index into languages
    qualities: list[str]  # distinct label qualities
    quality_codes: np.ndarray  # (n_titles,) int32 index into qualities
    skipped: int = 0  # bad rows skipped while reading

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def category_names(self) -> list[str | None]:
        return [self.categories[c] if c >= 0 else None for c in self.category_codes]

    def subset(self, idx: np.ndarray) -> "Corpus":
        """Rows ``idx`` (types are shared, so this only copies token indices)."""
        idx = np.asarray(idx, dtype=np.int64)
        starts, ends = self.offsets[idx], self.offsets[idx + 1]
        lengths = ends - starts
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return Corpus(
            types=self.types,
            token_types=self.token_types[ragged_arange(starts, lengths)],
            offsets=offsets,
            categories=self.categories,
            category_codes=self.category_codes[idx],
            languages=self.languages,
            language_codes=self.language_codes[idx],
            qualities=self.qualities,
            quality_codes=self.quality_codes[idx],
        )

    def concat(self, other: "Corpus") -> "Corpus":
        """This corpus's rows, then ``other``'s (its tokens, categories, languages and qualities
        re-indexed into this one's lists, new ones appended)."""
        def merge(mine: list[str], theirs: list[str], codes: np.ndarray) -> tuple[list[str], np.ndarray]:
            merged, index = list(mine), {v: i for i, v in enumerate(mine)}
            for v in theirs:
                if v not in index:
                    index[v] = len(merged)
                    merged.append(v)
            to_mine = np.array([index[v] for v in theirs], dtype=np.int32)
            mapped = to_mine[np.maximum(codes, 0)] if len(theirs) else codes
            return merged, np.where(codes >= 0, mapped, -1).astype(np.int32)  # -1: unlabelled, kept

        types, token_types = merge(self.types, other.types, other.token_types)
        categories, category_codes = merge(self.categories, other.categories, other.category_codes)
        languages, language_codes = merge(self.languages, other.languages, other.language_codes)
        qualities, quality_codes = merge(self.qualities, other.qualities, other.quality_codes)
        return Corpus(
            types=types,
            token_types=np.concatenate([self.token_types, token_types]),
            offsets=np.concatenate([self.offsets, other.offsets[1:] + self.offsets[-1]]),
            categories=categories,
            category_codes=np.concatenate([self.category_codes, category_codes]),
            languages=languages,
            language_codes=np.concatenate([self.language_codes, language_codes]),
            qualities=qualities,
            quality_codes=np.concatenate([self.quality_codes, quality_codes]),
            skipped=self.skipped + other.skipped,
        )

    def type_counts(self) -> dict[str, int]:
        counts = np.bincount(self.token_types, minlength=len(self.types))
        return dict(zip(self.types, counts.tolist()))


def ragged_arange(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for each (s, n), without a Python loop."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    shift = np.repeat(np.asarray(starts, dtype=np.int64) - (ends - lengths), lengths)
    return np.arange(total, dtype=np.int64) + shift


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


# below this many titles a call tokenises with the regular expression: the compiled scan's
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


CHUNK_TITLES = 8192  # titles tokenised at a time: bounded memory for big files, few Python-level passes


def tokenize_records(records: Iterable[Record], cfg: TextConfig, labelled: bool = True,
                     chunk: int = CHUNK_TITLES) -> Corpus:
    """Tokenise a stream of rows into a ``Corpus`` (memory: a few bytes per token).

    Rows are taken ``chunk`` at a time; each title is cut to ``cfg.max_tokens`` tokens.
    Tokens are those of ``text.tokenize``: found by the compiled scan
    (``_text_kernel``) when the first chunk has ``FAST_TOKENIZE_MIN_TITLES`` titles or
    more, else by the regular expression itself.  With ``cfg.language_token`` a row with
    a language starts with the extra token ``language_token(language)``.
    """
    columns = (([r.title for r in rows], [r.language for r in rows],
                [r.category for r in rows] if labelled else None, [r.label_quality for r in rows])
               for rows in iter_chunks(records, chunk))
    return _tokenize_columns(columns, cfg, labelled)


def _tokenize_columns(chunks: Iterable[tuple[list[str], list, list | None, list]], cfg: TextConfig,
                      labelled: bool) -> Corpus:
    """``tokenize_records`` on chunks of columns ``(titles, languages, categories or None, qualities)``."""
    types = _TokenTypes()
    tokens = _Growing()
    lengths: list[np.ndarray] = []
    cats, langs, quals = _Codes(), _Codes(), _Codes()
    hashed: bool | None = None
    for titles, languages, categories, qualities in chunks:
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


# ---- cache ---------------------------------------------------------------------------


def default_cache_dir() -> Path:
    env = os.environ.get("TITLECAT_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "titlecat"


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# the text settings a Corpus depends on (vocabulary and n-gram settings apply later, in
# Featurizer.encode): the preprocessing cache's key, and what an ensemble's members must share
TOKENISATION = ("fold_accents", "split_units", "max_tokens", "language_token")


def tokenisation_differences(a: TextConfig, b: TextConfig) -> list[str]:
    """The ``TOKENISATION`` settings in which ``a`` and ``b`` differ (none: they tokenise alike)."""
    return [k for k in TOKENISATION if getattr(a, k) != getattr(b, k)]


def tokenize_file(
    path: str | Path,
    text_cfg: TextConfig,
    data_cfg: DataConfig,
    *,
    labelled: bool = True,
    cache_dir: Path | None | bool = None,
) -> Corpus:
    """Read and tokenise ``path``; cached by content hash + settings (``cache_dir=False`` disables)."""
    path = Path(path)
    stats = ReadStats()
    if cache_dir is False or not path.is_file():
        return _tokenize(path, text_cfg, data_cfg, labelled, stats)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    settings = {
        "v": CACHE_VERSION,
        "text": text_cfg.model_dump(include=set(TOKENISATION)),
        "data": data_cfg.model_dump(include={"language", "label_quality", "skip_bad_rows"}),
        "labelled": labelled,
    }
    key = hashlib.sha256((file_digest(path) + json.dumps(settings, sort_keys=True)).encode()).hexdigest()[:32]
    cached = cache_dir / f"{key}.npz"
    if cached.is_file():
        try:
            return _load_corpus(cached)
        except (OSError, ValueError, KeyError, EOFError, NotImplementedError, zipfile.BadZipFile):
            cached.unlink(missing_ok=True)  # a damaged cache entry is rebuilt, never trusted
    corpus = _tokenize(path, text_cfg, data_cfg, labelled, stats)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        _save_corpus(corpus, cached)
    except OSError:
        pass  # a read-only cache is not an error: the run just repeats the work next time
    return corpus


def _tokenize(path: Path, text_cfg: TextConfig, data_cfg: DataConfig, labelled: bool, stats: ReadStats) -> Corpus:
    records = read_records(
        path,
        labelled=labelled,
        skip_bad_rows=data_cfg.skip_bad_rows,
        language=data_cfg.language,
        label_quality=data_cfg.label_quality,
        stats=stats,
    )
    corpus = tokenize_records(records, text_cfg, labelled)
    corpus.skipped = stats.skipped
    return corpus


_LIST_FIELDS = ("types", "categories", "languages", "qualities")


def _save_corpus(corpus: Corpus, path: Path) -> None:
    arrays = {}
    for f in fields(Corpus):
        v = getattr(corpus, f.name)
        if f.name in _LIST_FIELDS:
            # strings as one UTF-8 blob + lengths: no pickle, no fixed-width padding
            encoded = [s.encode("utf-8") for s in v]
            arrays[f.name] = np.frombuffer(b"".join(encoded), dtype=np.uint8)
            arrays[f.name + "_len"] = np.array([len(b) for b in encoded], dtype=np.int64)
        else:
            arrays[f.name] = np.asarray(v)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # atomic: a concurrent run never sees half a file


def _load_corpus(path: Path) -> Corpus:
    with np.load(path, allow_pickle=False) as z:
        kw = {}
        for f in fields(Corpus):
            if f.name in _LIST_FIELDS:
                blob, lens = z[f.name].tobytes(), z[f.name + "_len"]
                ends = np.cumsum(lens)
                kw[f.name] = [blob[e - n : e].decode("utf-8") for e, n in zip(ends.tolist(), lens.tolist())]
            elif f.name == "skipped":
                kw[f.name] = int(z[f.name])
            else:
                kw[f.name] = z[f.name]
    return Corpus(**kw)


# ---- featurizer ----------------------------------------------------------------------


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


__all__ = ["Corpus", "Encoded", "Featurizer", "document_frequencies", "title_bigrams", "tokenize_file", "tokenize_records", "tokenize_titles", "UNK"]
