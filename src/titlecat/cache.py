"""Tokenize a file once: the on-disk preprocessing cache.

``tokenize_file`` reads a file and tokenizes every title into a ``Corpus``, cached on disk
(``$TITLECAT_CACHE``, default ``~/.cache/titlecat``) keyed by the file's content hash and the
settings the tokens depend on, so a second run skips reading and tokenizing.  Entries are
``.npz`` files without pickle, written atomically; a damaged one is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import fields
from pathlib import Path

import numpy as np

from .config import DataConfig, TextConfig
from .corpus import Corpus
from .data import ReadStats, file_digest, read_records
from .tokenizer import TOKENIZE_SETTINGS, tokenize_records

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    env = os.environ.get("TITLECAT_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "titlecat"


def tokenize_file(
    path: str | Path,
    text_cfg: TextConfig,
    data_cfg: DataConfig,
    *,
    labelled: bool = True,
    cache_dir: Path | None | bool = None,
) -> Corpus:
    """Read and tokenize ``path``; cached by content hash + settings (``cache_dir=False`` disables)."""
    path = Path(path)
    stats = ReadStats()
    if cache_dir is False or not path.is_file():
        return _tokenize(path, text_cfg, data_cfg, labelled, stats)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    settings = {
        "v": CACHE_VERSION,
        "text": text_cfg.model_dump(include=set(TOKENIZE_SETTINGS)),
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


