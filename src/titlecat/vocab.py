"""Vocabulary and label encoder, fitted on training rows only (scikit-learn style).

``__init__`` stores settings, ``fit`` learns and returns ``self``, learned state
ends in ``_``, and both save to / load from plain JSON (never pickle).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping

import numpy as np

PAD, UNK = 0, 1
PAD_TOKEN, UNK_TOKEN = "<pad>", "<unk>"


class NotFittedError(RuntimeError):
    pass


class Vocabulary:
    """Word -> id, with ``<pad>`` = 0 and ``<unk>`` = 1.

    Keeps words seen at least ``min_count`` times, the ``max_size`` most frequent
    (ties broken alphabetically, so the result does not depend on row order).
    """

    def __init__(self, min_count: int = 1, max_size: int | None = None):
        self.min_count = min_count
        self.max_size = max_size

    def fit(self, counts: Mapping[str, int]) -> "Vocabulary":
        kept = sorted(w for w, c in counts.items() if c >= self.min_count)  # alphabetical
        # then by count, most frequent first; the sort is stable (reverse too), so ties stay
        # alphabetical -- two sorts of plain strings and ints, faster than one with a tuple key
        # per word (or sorting (word, count) tuples)
        kept.sort(key=counts.__getitem__, reverse=True)
        if self.max_size is not None:
            kept = kept[: max(0, self.max_size - 2)]
        self.words_ = [PAD_TOKEN, UNK_TOKEN] + kept
        self.index_ = {w: i for i, w in enumerate(self.words_)}
        return self

    def _check(self) -> None:
        if not hasattr(self, "words_"):
            raise NotFittedError("Vocabulary is not fitted; call fit() first")

    def __len__(self) -> int:
        self._check()
        return len(self.words_)

    def lookup(self, words: Iterable[str]) -> np.ndarray:
        """Ids of ``words``; unknown words get ``UNK``."""
        self._check()
        words = words if isinstance(words, list) else list(words)
        # map() over dict.get with a repeated default: the loop runs in C, not in a generator
        return np.fromiter(map(self.index_.get, words, itertools.repeat(UNK)), dtype=np.int64, count=len(words))

    def to_dict(self) -> dict:
        self._check()
        return {"min_count": self.min_count, "max_size": self.max_size, "words": self.words_}

    @classmethod
    def from_dict(cls, d: dict) -> "Vocabulary":
        v = cls(d["min_count"], d["max_size"])
        v.words_ = list(d["words"])
        if v.words_[:2] != [PAD_TOKEN, UNK_TOKEN]:
            raise ValueError("vocabulary must start with <pad>, <unk>")
        v.index_ = {w: i for i, w in enumerate(v.words_)}
        return v


class LabelEncoder:
    """Category name <-> class index, classes sorted by name."""

    def fit(self, categories: Iterable[str]) -> "LabelEncoder":
        self.classes_ = sorted(set(categories))
        if not self.classes_:
            raise ValueError("no categories to fit")
        self.index_ = {c: i for i, c in enumerate(self.classes_)}
        return self

    def __len__(self) -> int:
        return len(self.classes_)

    def transform(self, categories: Iterable[str], unknown: int = -1) -> np.ndarray:
        """Class indices; a category never seen in training gets ``unknown``."""
        get = self.index_.get
        return np.fromiter((get(c, unknown) for c in categories), dtype=np.int64)

    def inverse_transform(self, indices: Iterable[int]) -> list[str]:
        n = len(self.classes_)
        out = []
        for i in indices:
            if not 0 <= i < n:  # -1 (unknown) would otherwise silently name the last class
                raise ValueError(f"class index {i} is not in [0, {n})")
            out.append(self.classes_[i])
        return out

    def to_dict(self) -> dict:
        return {"classes": self.classes_}

    @classmethod
    def from_dict(cls, d: dict) -> "LabelEncoder":
        return cls().fit(d["classes"])
