"""Tokenize a file once: the on-disk preprocessing cache, memory-mapped.

``tokenize_file`` reads a file and tokenizes every title into a ``Corpus``, cached on disk
(``$TITLECAT_CACHE``, default ``~/.cache/titlecat``) keyed by the file's content hash and the
settings the tokens depend on, so a second run skips reading and tokenizing.

An entry is a folder of raw arrays and a ``manifest.json`` (dtype, shape and SHA-256 of each).
The token ids are written to it *while* the file is tokenized and read back memory-mapped, so
a 20-million-title file's ~1 GB of token ids never sits in the process's own memory, and every
later run maps the same pages.  An entry is built in a temporary folder and renamed into place
only when whole: a run that dies or a disk that fills never leaves an entry that can be read;
an entry whose files do not match its manifest is rebuilt, never trusted.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import fields
from pathlib import Path

import numpy as np

from .config import DataConfig, TextConfig
from .corpus import Corpus
from .data import ReadStats, file_digest, read_records
from .tokenizer import TOKENIZE_SETTINGS, tokenize_records

CACHE_VERSION = 2  # 2: a folder of memory-mapped arrays (1: one .npz, read into memory)
_LIST_FIELDS = ("types", "categories", "languages", "qualities", "bad_rows")
_DTYPES = {"int32", "int64", "uint8"}  # all an entry holds: a manifest naming another is damaged
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


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
    """Read and tokenize ``path``; cached by content hash + settings (``cache_dir=False`` disables).

    A cache folder that cannot be created (read-only) is no error: the file is tokenized in
    memory.  A disk that fills while the entry is written is: ``OSError`` (ENOSPC) naming the
    cache folder, the partial entry removed.
    """
    path = Path(path)
    if cache_dir is False or not path.is_file():
        return _tokenize(path, text_cfg, data_cfg, labelled)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    settings = {
        "v": CACHE_VERSION,
        "text": text_cfg.model_dump(include=set(TOKENIZE_SETTINGS)),
        "data": data_cfg.model_dump(include={"language", "label_quality", "skip_bad_rows"}),
        "labelled": labelled,
    }
    key = hashlib.sha256((file_digest(path) + json.dumps(settings, sort_keys=True)).encode()).hexdigest()[:32]
    entry = cache_dir / key
    if entry.is_dir():
        try:
            return load_entry(entry)
        except (OSError, ValueError, KeyError, TypeError):
            shutil.rmtree(entry, ignore_errors=True)  # a damaged entry is rebuilt, never trusted
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{key}.tmp-", dir=cache_dir))
    except OSError:
        return _tokenize(path, text_cfg, data_cfg, labelled)  # read-only cache: the work is repeated next time
    try:
        spool = TokenSpool(tmp / "token_types.bin")
        corpus = _tokenize(path, text_cfg, data_cfg, labelled, spool)
        write_entry(corpus, tmp, {"token_types": spool.sha256()})
        seconds = corpus.seconds
        del corpus
        try:
            os.rename(tmp, entry)  # atomic: an entry is whole or absent
        except OSError:  # a concurrent run renamed its own (identical) entry first: use that one
            shutil.rmtree(tmp, ignore_errors=True)
        loaded = load_entry(entry)
        loaded.seconds = seconds
        return loaded
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in _DISK_FULL:
            raise OSError(e.errno, f"{os.strerror(e.errno)} while writing the preprocessing cache of {path} "
                          "(nothing of it is kept; free space there, or point TITLECAT_CACHE or --cache-dir "
                          "at a larger disk)", str(cache_dir)) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # bad input, Ctrl-C: no half entry is left behind
        raise


def _tokenize(path: Path, text_cfg: TextConfig, data_cfg: DataConfig, labelled: bool,
              tokens: "TokenSpool | None" = None) -> Corpus:
    stats = ReadStats()
    records = read_records(
        path,
        labelled=labelled,
        skip_bad_rows=data_cfg.skip_bad_rows,
        language=data_cfg.language,
        label_quality=data_cfg.label_quality,
        stats=stats,
        progress=True,
    )
    corpus = tokenize_records(records, text_cfg, labelled, tokens=tokens)
    corpus.skipped, corpus.bad_rows = stats.skipped, list(stats.examples)
    return corpus


class TokenSpool:
    """Token ids appended to a file as they are made (the tokenizer's sink for a cached file);
    ``array()`` maps the file back read-only: the ids are never all in memory at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "wb")  # noqa: SIM115 (closed by array())
        self.hash = hashlib.sha256()
        self.n = 0

    def extend(self, values: np.ndarray) -> None:
        data = np.ascontiguousarray(values, dtype=np.int32).tobytes()
        self.file.write(data)
        self.hash.update(data)
        self.n += len(values)

    def array(self) -> np.ndarray:
        self.file.flush()
        os.fsync(self.file.fileno())  # a full disk shows here at the latest, before the entry is renamed
        self.file.close()
        return _map(self.path, np.dtype(np.int32), (self.n,))

    def sha256(self) -> str:
        return self.hash.hexdigest()


def write_entry(corpus: Corpus, folder: Path, digests: dict[str, str]) -> None:
    """Every array of ``corpus`` as a raw file in ``folder`` (those in ``digests`` are there
    already, with that SHA-256), then ``manifest.json``, last."""
    arrays: dict[str, np.ndarray] = {}
    for f in fields(Corpus):
        v = getattr(corpus, f.name)
        if f.name in _LIST_FIELDS:
            # strings as one UTF-8 blob + lengths: no pickle, no fixed-width padding
            encoded = [s.encode("utf-8") for s in v]
            arrays[f.name] = np.frombuffer(b"".join(encoded), dtype=np.uint8)
            arrays[f.name + "_len"] = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        elif f.name not in ("skipped", "seconds"):
            arrays[f.name] = v
    manifest = {"version": CACHE_VERSION, "skipped": corpus.skipped, "arrays": {}}
    for name, a in arrays.items():
        if name not in digests:
            data = np.ascontiguousarray(a).tobytes()
            _write(folder / f"{name}.bin", data)
            digests[name] = hashlib.sha256(data).hexdigest()
        manifest["arrays"][name] = {"dtype": str(a.dtype), "shape": list(a.shape), "sha256": digests[name]}
    _write(folder / "manifest.json", json.dumps(manifest, indent=1).encode())


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def load_entry(folder: Path) -> Corpus:
    """The ``Corpus`` of a cache entry, its numeric arrays memory-mapped; any file that does not
    match the manifest (size or SHA-256) is a ``ValueError``."""
    manifest = json.loads((folder / "manifest.json").read_bytes())
    if manifest["version"] != CACHE_VERSION:
        raise ValueError(f"{folder}: cache version {manifest['version']}")
    arrays = {}
    for name, spec in manifest["arrays"].items():
        if spec["dtype"] not in _DTYPES:
            raise ValueError(f"{folder}: dtype {spec['dtype']!r}")
        dtype, shape = np.dtype(spec["dtype"]), tuple(int(s) for s in spec["shape"])
        path = folder / f"{name}.bin"
        if path.stat().st_size != dtype.itemsize * int(np.prod(shape)) or file_digest(path) != spec["sha256"]:
            raise ValueError(f"{path}: does not match the manifest")
        arrays[name] = _map(path, dtype, shape)
    kw: dict = {"skipped": int(manifest["skipped"])}
    for f in fields(Corpus):
        if f.name in _LIST_FIELDS:
            blob, lens = arrays[f.name].tobytes(), arrays[f.name + "_len"]
            ends = np.cumsum(lens)
            kw[f.name] = [blob[e - n : e].decode("utf-8") for e, n in zip(ends.tolist(), lens.tolist())]
        elif f.name not in ("skipped", "seconds"):
            kw[f.name] = arrays[f.name]
    return Corpus(**kw)


def _map(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """``path`` as a read-only array (memory-mapped; an empty one in memory: mmap cannot map 0 bytes)."""
    if int(np.prod(shape)) == 0:
        return np.empty(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)

