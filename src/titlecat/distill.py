"""Distillation: a student network that learns from a teacher's probabilities (``titlecat distill``).

The most accurate titlecat model, the ensemble, is the slowest and largest; one network taught by
it can come close to its accuracy at the network's own speed (Hinton et al., 2015).  The student
is trained by the ordinary recipe (``titlecat.train(teacher=...)``: validation split, early
stopping, refit, one test pass, an ordinary bundle); this module gives it what it learns from:

* the **teacher's logits** of every training title, each title scored once: a ``Teacher`` keeps
  them on disk by title (its tokens) under the preprocessing cache, so the refit, a second
  student or another setting re-uses what the teacher already said;
* a **transfer set** (``distill.transfer`` titles per training title, made from the training
  titles alone, no outside data): a title with tokens left out, a run of its tokens, or the
  start of one title joined to the end of another.  The teacher learned the training titles
  themselves, so there its probabilities say little beyond the label; on titles it never saw
  they carry what it knows of the categories' neighbourhoods.

How the student weighs the teacher against the labels is the training loop's
(``loop.row_losses``: temperature and ``alpha``, ``DistillConfig``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import text
from .batching import drop_tokens
from .cache import default_cache_dir
from .classifier import Classifier, load
from .config import DistillConfig, TextConfig
from .corpus import Corpus, ragged_arange
from .data import file_digest
from .dataset import Rows
from .tokenizer import tokenize_differences
from .vocab import LabelEncoder

STORE_VERSION = 1
SCORE_CHUNK = 1 << 15  # titles the teacher scores at a time (an ensemble holds a few logit arrays of them)


class Teacher:
    """A trained classifier (any kind: an ensemble, most usefully) that a student learns from.

    ``logits(corpus)`` are its logits of each title in the student's category order, each
    distinct title scored once: kept in ``store`` (a folder, by the teacher's bundle and the
    title's tokens) when given.
    """

    def __init__(self, clf: Classifier, labels: LabelEncoder, text_cfg: TextConfig, store: Path | None = None,
                 name: str = "the teacher"):
        differ = tokenize_differences(text_cfg, clf.text_config)
        if differ:
            raise ValueError(f"{name} tokenizes titles differently from the student (text.{', text.'.join(differ)});"
                             " a student learns from the teacher's logits of its own tokens: use the teacher's "
                             "settings")
        index = {c: i for i, c in enumerate(clf.labels.classes_)}
        missing = [c for c in labels.classes_ if c not in index]
        if missing:
            raise ValueError(f"{name} never learned {len(missing)} categories of the training rows "
                             f"({', '.join(missing[:5])}); a teacher must know every category of its student")
        self.clf, self.name, self.store = clf, name, store
        self.columns = np.array([index[c] for c in labels.classes_], dtype=np.int64)  # teacher's column of each

    @classmethod
    def load(cls, source: str | Path | Classifier, labels: LabelEncoder, text_cfg: TextConfig,
             cache_dir: str | Path | None = None) -> "Teacher":
        """The teacher of a bundle directory (its logits kept under the cache) or of a classifier."""
        if isinstance(source, Classifier):
            return cls(source, labels, text_cfg)
        digest = bundle_digest(source)
        store = Path(cache_dir) if cache_dir else default_cache_dir()
        return cls(load(source), labels, text_cfg, store / f"teacher-{digest[:32]}", name=f"teacher {source}")

    def logits(self, corpus: Corpus) -> np.ndarray:
        """(n, n_classes) float16 the teacher's logits of ``corpus``'s titles (student's category order)."""
        keys = text.sequence_hashes(text.word_hashes(corpus.types)[corpus.token_types], corpus.offsets)
        known_keys, known = self._read()
        distinct, first = np.unique(keys, return_index=True)
        missing = ~np.isin(distinct, known_keys)
        if missing.any():
            rows = first[missing]
            print(f"titlecat: {self.name} scores {len(rows):,} titles ({len(distinct) - len(rows):,} scored before)",
                  file=sys.stderr, flush=True)
            new = np.concatenate([self.clf.logits(corpus.subset(rows[a : a + SCORE_CHUNK])).astype(np.float16)
                                  for a in range(0, len(rows), SCORE_CHUNK)])
            if not np.isfinite(new).all():  # float16 overflow (|logit| > 65504): a teacher gone wrong
                raise ValueError(f"{self.name} gives logits that are not finite in float16")
            known_keys, known = self._write(known_keys, known, distinct[missing], new)
        at = np.searchsorted(known_keys, keys)
        return np.asarray(known[at][:, self.columns])

    # ---- the store: keys (sorted int64) and logits (float16), checksummed ---------------------

    def _read(self) -> tuple[np.ndarray, np.ndarray]:
        empty = (np.empty(0, np.int64), np.empty((0, len(self.clf.labels)), np.float16))
        if self.store is None:
            return getattr(self, "_memory", empty)
        try:
            manifest = json.loads((self.store / "manifest.json").read_text())
            if manifest["version"] != STORE_VERSION:
                return empty
            n, c = manifest["rows"], manifest["classes"]
            arrays = []
            for name, dtype, shape in (("keys", np.int64, (n,)), ("logits", np.float16, (n, c))):
                path = self.store / f"{name}.bin"
                if file_digest(path) != manifest[name]:
                    raise ValueError(f"{path}: does not match its manifest")
                arrays.append(np.memmap(path, dtype=dtype, mode="r", shape=shape) if n else np.empty(shape, dtype))
            return arrays[0], arrays[1]
        except (OSError, ValueError, KeyError, TypeError):
            return empty  # none yet, or damaged: scored again, never trusted

    def _write(self, keys: np.ndarray, logits: np.ndarray, new_keys: np.ndarray, new: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(np.concatenate([keys, new_keys]), kind="stable")
        keys = np.concatenate([keys, new_keys])[order]
        logits = np.concatenate([logits, new])[order]
        if self.store is None:
            self._memory = (keys, logits)
            return keys, logits
        try:
            self.store.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f"{self.store.name}.tmp-", dir=self.store.parent))
        except OSError:
            return keys, logits  # a read-only cache: scored again next time
        try:
            manifest = {"version": STORE_VERSION, "rows": len(keys), "classes": logits.shape[1]}
            for name, a in (("keys", keys), ("logits", logits)):
                (tmp / f"{name}.bin").write_bytes(np.ascontiguousarray(a).tobytes())
                manifest[name] = file_digest(tmp / f"{name}.bin")
            (tmp / "manifest.json").write_text(json.dumps(manifest))
            old = self.store.with_name(f"{self.store.name}.old-{os.getpid()}")
            if self.store.exists():
                self.store.rename(old)
            tmp.rename(self.store)
            shutil.rmtree(old, ignore_errors=True)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # (a full disk: the logits are still returned)
        return keys, logits

    # ---- what a student learns from -------------------------------------------------------------

    def rows(self, rows: Rows, cfg: DistillConfig, seed: int, max_tokens: int) -> Rows:
        """``rows`` with the teacher's logits, and the transfer set made from them with its own."""
        transfer = None
        if cfg.transfer:
            corpus = transfer_corpus(rows.corpus, cfg, seed, max_tokens)
            transfer = Rows(corpus, np.full(len(corpus), -1, dtype=np.int64), rows.labels, None, self.logits(corpus))
        return dataclasses.replace(rows, teacher=self.logits(rows.corpus), transfer=transfer)


def bundle_digest(directory: str | Path) -> str:
    """SHA-256 of every ``bundle.json`` under a bundle ``directory`` (each names its files' SHA-256):
    what identifies a teacher's logits in the store."""
    directory = Path(directory)
    metas = sorted(directory.rglob("bundle.json"))
    if not metas:
        raise ValueError(f"{directory}: not a model bundle (no bundle.json); --teacher takes the --output of a training")
    h = hashlib.sha256()
    for path in metas:
        h.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def transfer_corpus(corpus: Corpus, cfg: DistillConfig, seed: int, max_tokens: int) -> Corpus:
    """``cfg.transfer`` titles made from each title of ``corpus`` (unlabelled; tokens, languages and
    qualities from their sources), each by one of ``cfg.transfer_ops`` drawn at random:

    * ``dropout``: each token left out with probability ``cfg.transfer_dropout`` (one is always kept);
    * ``crop``: a run of at least half the title's tokens;
    * ``mix``: the title's first tokens (at least one, not all) then the last tokens of another
      title drawn from the corpus (at most ``max_tokens`` in all).
    """
    rng = np.random.default_rng([seed, 20150309])  # (the date of Hinton et al.'s paper)
    n = len(corpus)
    starts, lengths = corpus.offsets[:-1], np.diff(corpus.offsets)
    src = np.repeat(np.arange(n), cfg.transfer)  # each transfer title's source
    op = np.asarray(cfg.transfer_ops)[rng.integers(len(cfg.transfer_ops), size=len(src))]
    pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (token indices, tokens per title, sources)

    d = src[op == "dropout"]
    if len(d):
        tok, kept = drop_tokens(ragged_arange(starts[d], lengths[d]), lengths[d], cfg.transfer_dropout, rng)
        pieces.append((tok, kept, d))
    # crop and mix: one or two runs of tokens per title, [run 1, run 2] in order
    c = src[op == "crop"]
    keep = rng.integers((lengths[c] + 1) // 2, lengths[c] + 1)  # half the tokens (rounded up) .. all
    first = np.stack([starts[c] + rng.integers(0, lengths[c] - keep + 1), keep], 1)
    crop_runs = np.stack([first, np.zeros_like(first)], 1)  # (titles, 2 runs, (start, length))
    m = src[op == "mix"]
    other = rng.integers(n, size=len(m))
    head = np.minimum(rng.integers(1, np.maximum(lengths[m] - 1, 1) + 1), lengths[m])  # 1 .. L - 1 (all of a 1-token title)
    tail = np.minimum(rng.integers(1, np.maximum(lengths[other], 1) + 1), lengths[other])
    tail = np.minimum(tail, np.maximum(max_tokens - head, 0))
    mix_runs = np.stack([np.stack([starts[m], head], 1),
                         np.stack([starts[other] + lengths[other] - tail, tail], 1)], 1)
    runs = np.concatenate([crop_runs, mix_runs]).reshape(-1, 2)
    if len(runs):
        per_title = runs[:, 1].reshape(-1, 2).sum(1)
        pieces.append((ragged_arange(runs[:, 0], runs[:, 1]), per_title, np.concatenate([c, m])))

    tok = np.concatenate([p[0] for p in pieces]) if pieces else np.empty(0, np.int64)
    per_title = np.concatenate([p[1] for p in pieces]) if pieces else np.empty(0, np.int64)
    sources = np.concatenate([p[2] for p in pieces]) if pieces else np.empty(0, np.int64)
    offsets = np.zeros(len(per_title) + 1, dtype=np.int64)
    np.cumsum(per_title, out=offsets[1:])
    return Corpus(types=corpus.types, token_types=np.asarray(corpus.token_types)[tok], offsets=offsets,
                  categories=corpus.categories, category_codes=np.full(len(sources), -1, dtype=np.int32),
                  languages=corpus.languages, language_codes=corpus.language_codes[sources],
                  qualities=corpus.qualities, quality_codes=corpus.quality_codes[sources])
