"""A run's labelled rows: read (through the cache), split into training and validation rows,
with each row's class index and loss weight.

Every kind of model is trained on what ``split_corpus`` returns, so the validation rows never
depend on the model: the split reads only categories and languages.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cache import tokenize_file
from .config import DataConfig, TextConfig
from .corpus import Corpus
from .data import DataError, resolved, stratified_split
from .vocab import LabelEncoder


@dataclass
class Rows:
    """Labelled rows a model learns from or is validated on."""

    corpus: Corpus  # the tokenized titles
    y: np.ndarray  # (n,) int64 class index in ``labels``; >= n_classes for a category unseen in training
    labels: LabelEncoder  # the categories a model learns (those of the training rows)
    weights: np.ndarray | None = None  # (n,) float32 loss weight per row, None = all 1
    # distillation (``titlecat.distill``): (n, n_classes) float16 a teacher's logits of these rows, and
    # further rows (the transfer set: no labels, y = -1) learned from the teacher's logits alone
    teacher: np.ndarray | None = None
    transfer: "Rows | None" = None

    def __len__(self) -> int:
        return len(self.corpus)

    def with_transfer(self) -> "Rows":
        """These rows, then the transfer set's, as one (types shared), without a further transfer set."""
        if self.transfer is None:
            return self
        t = self.transfer
        weights = None
        if self.weights is not None or t.weights is not None:
            weights = np.concatenate([np.ones(len(r), np.float32) if r.weights is None else r.weights for r in (self, t)])
        teacher = None if self.teacher is None else np.concatenate([self.teacher, t.teacher])
        return Rows(self.corpus.concat(t.corpus), np.concatenate([self.y, t.y]), self.labels, weights, teacher)


@dataclass
class Split:
    """The rows of one training: the whole training file, the rows learned from, the rows validated on."""

    whole: Corpus  # every row of the training file
    train: Corpus  # the rows learned from (``whole`` itself when a validation file is given)
    validation: Corpus  # the rows validated on
    description: str  # where the validation rows come from (MLflow param ``data.validation``)
    carved: bool  # the validation rows are part of ``whole`` (no validation file)
    notes: list[str] = dataclasses.field(default_factory=list)  # warnings for the user (label variants, leakage)
    val_shared: int = 0  # validation rows whose title is also a training row's (``title_keys``)

    def refit_rows(self) -> Corpus:
        """Every row a refit (``train.refit``) learns from: training and validation rows."""
        return self.whole if self.carved else self.train.concat(self.validation)

    def n_refit_rows(self) -> int:
        """``len(self.refit_rows())``, without concatenating them."""
        return len(self.whole) + (0 if self.carved else len(self.validation))


def split_corpus(train: str | Path, validation: str | Path | None, text_cfg: TextConfig, data_cfg: DataConfig,
                 cache_dir: str | Path | None = None) -> Split:
    """The training file's rows and its validation rows: the file ``validation``, or a stratified
    split of ``train`` by ``data_cfg``, with every copy of a title on one side (copies as
    tokenized: so a file with repeated titles may be split a few rows differently under other
    text settings; without, the rows are the same for any).  Categories differing only by case are merged when
    ``data_cfg.merge_label_variants``; ``Split.notes`` says what a user should know of both."""
    corpus = tokenize_file(train, text_cfg, data_cfg, cache_dir=cache_dir)
    notes: list[str] = []
    variants = label_variants(corpus)
    if variants:
        corpus = _note_variants(corpus, variants, train, data_cfg.merge_label_variants, notes)
    desc = split_description(train, validation, data_cfg)
    keys = title_keys(corpus)
    if validation is not None:
        val = tokenize_file(validation, text_cfg, data_cfg, cache_dir=cache_dir)
        if data_cfg.merge_label_variants:
            val = merge_label_variants(val, canonical=corpus.categories)
        split = Split(corpus, corpus, val, desc, False, notes)
        shared = shared_titles(title_keys(val), keys)
        where = f"{validation} (the same file as the training rows)" if resolved(validation) == resolved(train) \
            else str(validation)
    else:
        train_idx, val_idx = language_aware_split(corpus, data_cfg.val_fraction, data_cfg.split_seed, groups=keys)
        if len(val_idx) == 0:
            raise DataError(f"{train}: too few rows per category to carve a validation split; pass --validation")
        split = Split(corpus, corpus.subset(train_idx), corpus.subset(val_idx), desc, True, notes)
        shared = shared_titles(keys[val_idx], keys[train_idx])  # copies in other categories only, now
        where = f"the validation split of {train} (each such title is in two categories)"
    split.val_shared = shared
    if shared:
        n = len(split.validation)
        notes.append(f"{shared:,} of {n:,} validation titles ({shared / n:.1%}) also appear among the training rows, "
                     f"in {where}: the validation score is inflated by them")
    return split


def _note_variants(corpus: Corpus, variants: list[list[str]], path, merge: bool, notes: list[str]) -> Corpus:
    """Say which categories differ only by case (and merge them, when asked)."""
    counts = np.bincount(corpus.category_codes[corpus.category_codes >= 0], minlength=len(corpus.categories))
    index = {c: i for i, c in enumerate(corpus.categories)}
    shown = "; ".join(" / ".join(f"{c!r} ({counts[index[c]]:,} rows)" for c in group) for group in variants[:5])
    more = f"; and {len(variants) - 5} more groups" if len(variants) > 5 else ""
    if merge:
        notes.append(f"{path}: categories that differ only by case merged into their most frequent spelling "
                     f"(data.merge_label_variants): {shown}{more}")
        return merge_label_variants(corpus)
    notes.append(f"{path}: {sum(map(len, variants))} categories differ from another only by case, and are separate "
                 f"classes: {shown}{more}; set data.merge_label_variants=true to merge each group into its most "
                 "frequent spelling")
    return corpus


def label_variants(corpus: Corpus) -> list[list[str]]:
    """Groups of categories equal but for case (``Celulares``, ``CELULARES``), most frequent first.
    (The reader already strips the spaces around a category.)"""
    counts = np.bincount(corpus.category_codes[corpus.category_codes >= 0], minlength=len(corpus.categories))
    by_key: dict[str, list[int]] = {}
    for i, c in enumerate(corpus.categories):
        by_key.setdefault(c.casefold(), []).append(i)
    return [[corpus.categories[i] for i in sorted(g, key=lambda i: (-counts[i], corpus.categories[i]))]
            for g in by_key.values() if len(g) > 1]


def merge_label_variants(corpus: Corpus, canonical: list[str] | None = None) -> Corpus:
    """``corpus`` with each group of ``label_variants`` as one category: its most frequent spelling,
    or the spelling in ``canonical`` (the training rows' categories, for a validation file)."""
    prefer = {c.casefold(): c for c in canonical or []}
    for group in label_variants(corpus) if canonical is None else []:
        prefer[group[0].casefold()] = group[0]
    names = [prefer.get(c.casefold(), c) for c in corpus.categories]
    if names == corpus.categories:
        return corpus
    merged = list(dict.fromkeys(names))  # first-seen order, as the reader makes it
    code = np.array([merged.index(n) for n in names] + [-1], dtype=np.int32)  # [-1]: unlabelled rows stay -1
    return dataclasses.replace(corpus, categories=merged, category_codes=code[corpus.category_codes])


def title_keys(corpus: Corpus, chunk: int = 1 << 20) -> np.ndarray:
    """(n,) uint64 fingerprint of each row's tokens: two titles that tokenize alike (case, accents,
    spacing and punctuation aside, as the model sees them) have the same key, in any corpus.
    Computed ``chunk`` rows at a time (a 20 M-title file has 200 M tokens)."""
    import pandas as pd

    type_hash = pd.util.hash_array(np.asarray(corpus.types, dtype=object))  # by string: comparable across files
    keys = np.zeros(len(corpus), dtype=np.uint64)
    for a in range(0, len(corpus), chunk):
        b = min(a + chunk, len(corpus))
        starts, ends = corpus.offsets[a:b], corpus.offsets[a + 1 : b + 1]
        tokens = corpus.token_types[starts[0] : ends[-1]] if b > a else corpus.token_types[:0]
        row = np.repeat(np.arange(b - a), ends - starts)
        position = np.arange(len(tokens)) - (starts - starts[0])[row]
        with np.errstate(over="ignore"):  # arithmetic modulo 2**64 is the point
            mixed = (type_hash[tokens] ^ (position.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))) \
                * np.uint64(0xBF58476D1CE4E5B9)
        nonempty = ends > starts
        keys[a:b][nonempty] = np.add.reduceat(mixed, (starts - starts[0])[nonempty]) if len(mixed) else 0
    return keys


def shared_titles(keys: np.ndarray, reference: np.ndarray) -> int:
    """How many rows of ``keys`` have a title (``title_keys``) that ``reference`` holds too."""
    return int(np.isin(keys, reference).sum()) if len(keys) and len(reference) else 0


def split_description(train: str | Path, validation: str | Path | None, data_cfg: DataConfig) -> str:
    """Where a training's validation rows come from, as logged (param ``data.validation``)."""
    if validation is not None:
        return f"file {validation}"
    return f"stratified {data_cfg.val_fraction:g} of {train} (seed {data_cfg.split_seed})"


def language_aware_split(corpus: Corpus, fraction: float, seed: int,
                         groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(train, validation)`` stratified by (category, language) pairs.

    Every pair with >= 2 rows is on both sides, so each language is validated on each of
    its categories; with one language this is exactly the split by category.  ``groups``
    (``title_keys``): copies of a title stay on one side.
    """
    pair = corpus.category_codes.astype(np.int64) * len(corpus.languages) + corpus.language_codes
    return stratified_split(pair, fraction, seed, groups)


def encode_labels(corpus: Corpus, labels: LabelEncoder) -> tuple[np.ndarray, list[str]]:
    """Class index per row; categories unseen in training get ``n_classes + k`` (listed in the 2nd value)."""
    per_code = labels.transform(corpus.categories, unknown=-1)
    unseen = [c for c, i in zip(corpus.categories, per_code) if i < 0]
    extra = {c: len(labels) + k for k, c in enumerate(unseen)}
    per_code = np.array([i if i >= 0 else extra[c] for c, i in zip(corpus.categories, per_code)], dtype=np.int64)
    y = per_code[corpus.category_codes] if len(corpus.categories) else np.full(len(corpus), -1, np.int64)
    return y, unseen


def fit_labels(corpus: Corpus) -> LabelEncoder:
    """The categories a model learns: those of the training rows (sorted)."""
    return LabelEncoder().fit(corpus.categories[c] for c in np.unique(corpus.category_codes))


def labelled_rows(corpus: Corpus, labels: LabelEncoder, unreliable_weight: float = 1.0) -> Rows:
    """``corpus`` with class indices and, for training rows, the ``unreliable`` rows' loss weight."""
    return Rows(corpus, encode_labels(corpus, labels)[0], labels, unreliable_weights(corpus, unreliable_weight))


def unreliable_weights(corpus: Corpus, weight: float) -> np.ndarray | None:
    """(n,) float32 loss weights: ``weight`` for rows labelled ``unreliable``, 1 otherwise (None if all 1)."""
    if weight == 1.0 or "unreliable" not in corpus.qualities:
        return None
    unreliable = corpus.quality_codes == corpus.qualities.index("unreliable")
    return np.where(unreliable, np.float32(weight), np.float32(1.0)).astype(np.float32)


def rows_digest(corpus: Corpus, y: np.ndarray) -> np.ndarray:
    """(32,) uint8 fingerprint of tokenized rows and their class indices: which rows a refitted
    model's kept validation logits belong to (the labels alone match any file of the same shape)."""
    h = hashlib.sha256()
    h.update(np.asarray(corpus.offsets, dtype=np.int64).tobytes())
    h.update("\x1f".join(corpus.types[t] for t in corpus.token_types).encode("utf-8"))
    h.update(np.asarray(y, dtype=np.int64).tobytes())
    return np.frombuffer(h.digest(), dtype=np.uint8).copy()


def value_counts(names: list[str], codes: np.ndarray) -> str:
    """``"spanish:40000,portuguese:4720"``: rows per value of a coded column (MLflow params)."""
    counts = np.bincount(codes, minlength=len(names))
    return ",".join(f"{name}:{int(c)}" for name, c in zip(names, counts))


def categories_per_language(corpus: Corpus) -> dict[str, str | int]:
    """Distinct categories per language, and how many categories occur in one language only."""
    pairs = np.unique(corpus.category_codes.astype(np.int64) * len(corpus.languages) + corpus.language_codes)
    cats, langs = pairs // len(corpus.languages), pairs % len(corpus.languages)
    per_lang = np.bincount(langs, minlength=len(corpus.languages))
    langs_per_cat = np.bincount(cats, minlength=len(corpus.categories))
    return {"data.train_categories_per_language": ",".join(f"{lang}:{int(n)}"
                                                           for lang, n in zip(corpus.languages, per_lang)),
            "data.train_categories_one_language": int((langs_per_cat == 1).sum())}
