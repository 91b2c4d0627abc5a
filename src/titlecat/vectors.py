"""Pretrained word vectors from a word2vec/fastText text file (``.txt``, ``.gz``, ``.bz2``).

The course's SBWCE vectors are such a file.  Each vector's word is normalised
like the titles (lower case, accent folding), so "cámara" in the file reaches
"camara" in the vocabulary; when two file words normalise alike the first (the
more frequent, as these files are sorted by frequency) wins.
"""

from __future__ import annotations

import bz2
import gzip
from pathlib import Path

import torch

from .config import ConfigError
from .data import DataError
from .text import normalize
from .vocab import Vocabulary


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    if path.suffix == ".bz2":
        return bz2.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def load_word_vectors(path: str | Path, vocab: Vocabulary, dim: int, fold_accents: bool = True
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(vectors (V, dim), found (V,) bool)`` for the vocabulary's words."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model.pretrained_vectors: {path}: file not found")
    vectors = torch.zeros(len(vocab), dim)
    found = torch.zeros(len(vocab), dtype=torch.bool)
    index = vocab.index_
    try:
        with _open_text(path) as f:
            for n, line in enumerate(f, start=1):
                parts = line.rstrip().split(" ")
                if n == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    if int(parts[1]) != dim:
                        raise ConfigError(f"model.embedding_dim={dim} but {path} holds {parts[1]}-dimensional "
                                          f"vectors; set model.embedding_dim={parts[1]}")
                    continue  # word2vec header "count dim"
                if len(parts) < 2:
                    continue
                if len(parts) - 1 != dim:
                    raise ConfigError(f"{path}:{n}: vector of {len(parts) - 1} values, model.embedding_dim is {dim}")
                i = index.get(normalize(parts[0], fold_accents))
                if i is None or found[i]:
                    continue
                try:
                    vectors[i] = torch.tensor([float(x) for x in parts[1:]])
                except ValueError:
                    raise DataError(f"{path}:{n}: a vector value is not a number") from None
                found[i] = True
    except (EOFError, OSError) as e:
        raise DataError(f"{path}: cannot read word vectors ({e})") from None
    return vectors, found


def coverage(found: torch.Tensor) -> float:
    """Share of real vocabulary words (not <pad>/<unk>) that got a pretrained vector."""
    return float(found[2:].float().mean()) if len(found) > 2 else 0.0


__all__ = ["load_word_vectors", "coverage"]
