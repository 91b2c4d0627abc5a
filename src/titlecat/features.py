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


def tokenize_records(records: Iterable[Record], cfg: TextConfig, labelled: bool = True, chunk: int = 8192) -> Corpus:
    """Tokenise a stream of rows into a ``Corpus`` (memory: a few bytes per token).

    Rows are taken ``chunk`` at a time and tokenised with ``text.tokenize_many``;
    each title is cut to ``cfg.max_tokens`` tokens.  With ``cfg.language_token`` a
    row with a language starts with the extra token ``language_token(language)``.
    """
    types = _Codes()
    types.index["\n"] = -1  # the end-of-title marker, dropped below
    tokens = _Growing()
    lengths: list[np.ndarray] = []
    cats, langs, quals = _Codes(), _Codes(), _Codes()
    for rows in iter_chunks(records, chunk):
        # keep=False: the token ids are kept (truncated) in `tokens`, not twice
        ids = types.add(text.tokenize_many([r.title for r in rows], cfg.fold_accents, cfg.split_units), keep=False)
        ends = np.flatnonzero(ids == -1)
        n_tok = np.diff(ends, prepend=-1) - 1  # tokens per title before truncation
        title_of = np.repeat(np.arange(len(rows)), n_tok + 1)
        pos = np.arange(len(ids)) - np.repeat(ends - n_tok, n_tok + 1)  # position inside the title
        keep = (ids != -1) & (pos < cfg.max_tokens)
        kept = ids[keep]
        n_kept = np.bincount(title_of[keep], minlength=len(rows))
        if cfg.language_token:
            has = np.array([bool(r.language) for r in rows])
            if has.any():
                lang_ids = types.add([language_token(r.language) for r in rows if r.language], keep=False)
                kept = np.insert(kept, (np.cumsum(n_kept) - n_kept)[has], lang_ids)  # at each title's start
                n_kept = n_kept + has
        tokens.extend(kept)
        lengths.append(n_kept.astype(np.int32))  # tokens per title (offsets are summed in int64)
        if labelled:
            cats.add([r.category for r in rows])
        langs.add([r.language or "unknown" for r in rows])
        quals.add([r.label_quality or "unknown" for r in rows])
    n = sum(len(x) for x in lengths)
    offsets = np.zeros(n + 1, dtype=np.int64)
    if n:
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
    del types.index["\n"]
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
    recs = (Record(t if isinstance(t, str) else str(t), None, language, None, None, i)
            for i, t in enumerate(titles, 1))
    return tokenize_records(recs, cfg, labelled=False)


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
        "text": text_cfg.model_dump(include={"fold_accents", "split_units", "max_tokens", "language_token"}),
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

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


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


__all__ = ["Corpus", "Encoded", "Featurizer", "tokenize_file", "tokenize_records", "tokenize_titles", "UNK"]
