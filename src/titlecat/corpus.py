"""The tokenized rows of a file: ``Corpus``, compact arrays instead of per-row Python objects.

``tokenizer`` builds one from records or raw titles, ``cache`` keeps one per file on disk,
``featurizer`` turns one into model inputs, ``dataset`` splits one into training and
validation rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


SUBSET_CHUNK = 1 << 20  # rows Corpus.subset gathers at a time


@dataclass
class Corpus:
    """Tokenized titles of one file (or of a list of titles), in compact arrays."""

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
    bad_rows: list[str] = field(default_factory=list)  # the first few of them, as "file:line: problem"
    # how long making it took, when it was just tokenized ("read": reading and checking the rows,
    # "tokenize": the tokenizer's own work); empty when loaded from the cache (not stored there)
    seconds: dict[str, float] = field(default_factory=dict, compare=False)

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
        # gathered SUBSET_CHUNK rows at a time: one index of every token kept (int64, twice over in
        # ragged_arange) would be 3 GB for the 200 M tokens of a 20 M-title file
        token_types = np.empty(int(lengths.sum()), dtype=self.token_types.dtype)
        for a in range(0, len(idx), SUBSET_CHUNK):
            part = slice(a, a + SUBSET_CHUNK)
            token_types[offsets[a] : offsets[min(a + SUBSET_CHUNK, len(idx))]] = \
                self.token_types[ragged_arange(starts[part], lengths[part])]
        return Corpus(
            types=self.types,
            token_types=token_types,
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
            bad_rows=self.bad_rows + other.bad_rows,
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
