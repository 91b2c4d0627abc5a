"""Reading title files and carving the validation split.

Two formats are read, both streamed row by row (a 20-million-row file never sits
in memory as Python objects):

* the course's JSON lines (``*.jsonl`` / ``*.jsonl.gz``): one object per line with
  ``title``, ``category``, ``language``, ``label_quality`` (other keys ignored);
* the original challenge CSV (``*.csv`` / ``*.csv.gz``): ``title,label_quality,language,category``
  for training, ``id,title,language`` for the test file.

Every row is checked.  A bad row raises ``DataError`` naming ``file:line`` and the
problem; with ``skip_bad_rows`` it is skipped and counted in ``ReadStats`` instead.
"""

from __future__ import annotations

import csv
import hashlib
import gzip
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import orjson
from tqdm.auto import tqdm


class DataError(ValueError):
    """A problem with an input file, naming the file and line."""


LANGUAGES = ("spanish", "portuguese")  # the challenge's; a row may also have none

@dataclass(frozen=True, slots=True)
class Record:
    title: str
    category: str | None  # None in an unlabelled file (challenge test.csv)
    language: str | None
    label_quality: str | None
    id: str | None  # the challenge test file's row id
    line: int  # 1-based line number in the file


@dataclass
class ReadStats:
    """What a read saw: rows kept, rows filtered out, bad rows skipped (with the first few reasons)."""

    path: str = ""
    kept: int = 0
    filtered: int = 0
    skipped: int = 0
    examples: list[str] = field(default_factory=list)

    def skip(self, message: str) -> None:
        self.skipped += 1
        if len(self.examples) < 5:
            self.examples.append(message)


PROGRESS_MIN_BYTES = 32 << 20  # files this large show a progress bar while read (on a terminal)


def _open_lines(path: Path, progress: bool = False) -> Iterator[bytes]:
    """Raw lines of a plain or gzip file; a truncated gzip becomes a DataError.  With
    ``progress``, a large file shows a bar of the bytes read (compressed ones for a .gz), with an ETA."""
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a .jsonl(.gz) or .csv(.gz) file")
    if not path.exists():
        raise DataError(f"{path}: file not found")
    gz = path.suffix == ".gz"
    n = 0
    try:
        with open(path, "rb") as raw, (gzip.GzipFile(fileobj=raw) if gz else raw) as f:
            size = path.stat().st_size if path.is_file() else 0
            show = progress and size >= PROGRESS_MIN_BYTES
            with tqdm(total=size, desc=f"reading {path.name}", unit="B", unit_scale=True, leave=False,
                      disable=None if show else True) as bar:
                for n, line in enumerate(f, start=1):  # noqa: B007 (n is used after the loop)
                    yield line
                    if show and n % 65536 == 0:
                        bar.update(raw.tell() - bar.n)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}:{n + 1}: compressed file is damaged or truncated ({e}); re-download it") from None


def _decoded(path: Path, stats: ReadStats, skip: bool, progress: bool = False) -> Iterator[tuple[int, str]]:
    for n, raw in enumerate(_open_lines(path, progress), start=1):
        if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a UTF-8 byte-order mark, as Excel writes one: not part of the first row
        try:
            yield n, raw.decode("utf-8")
        except UnicodeDecodeError as e:
            msg = f"{path}:{n}: bytes that are not UTF-8 at column {e.start + 1}"
            if not skip:
                raise DataError(msg + " (use --skip-bad-rows to skip such rows)") from None
            stats.skip(msg)


def _jsonl_rows(path: Path, stats: ReadStats, skip: bool, labelled: bool, allow_empty: bool,
                progress: bool) -> Iterator[Record]:
    for n, text in _decoded(path, stats, skip, progress):
        if not text.strip():
            continue
        try:
            obj = orjson.loads(text)
            if not isinstance(obj, dict):
                raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
            yield _record(obj, n, labelled, allow_empty)
        except (ValueError, TypeError) as e:
            problem = f"malformed JSON ({e})" if isinstance(e, orjson.JSONDecodeError) else str(e)
            msg = f"{path}:{n}: {problem}"
            if not skip:
                raise DataError(msg + " (use --skip-bad-rows to skip such rows)") from None
            stats.skip(msg)


def _checked_csv(reader: Iterator[list[str]], path: Path, numbers: list[int]) -> Iterator[list[str]]:
    """The rows of ``csv.reader``; its own errors become a ``DataError`` at the row's first line.

    ``csv.Error`` is not a ``ValueError``: a field over its size limit (what an unclosed quote
    makes of the rest of the file) would otherwise escape as a traceback.  Skipping cannot
    help, the reader has lost its place.
    """
    try:
        yield from reader
    except csv.Error as e:
        raise DataError(f"{path}:{numbers[0] if numbers else 1}: not readable as CSV ({e}); "
                        "an unclosed quote makes the rest of the file one field") from None


def _csv_rows(path: Path, stats: ReadStats, skip: bool, labelled: bool, allow_empty: bool,
              progress: bool) -> Iterator[Record]:
    lines = _decoded(path, stats, skip, progress)
    numbers: list[int] = []

    def texts() -> Iterator[str]:
        for n, text in lines:
            numbers.append(n)
            yield text

    reader = _checked_csv(csv.reader(texts()), path, numbers)
    header = next(reader, None)
    if header is None:
        return
    header = [h.strip().lower() for h in header]
    numbers.clear()
    required = {"title", "category"} if labelled else {"title"}
    if not required <= set(header):
        raise DataError(
            f"{path}:1: CSV header {','.join(header)!r} lacks {', '.join(sorted(required - set(header)))}; "
            "expected title,label_quality,language,category (training) or id,title,language (test)"
        )
    for row in reader:
        n = numbers[0]
        numbers.clear()
        if not row:
            continue
        try:
            if len(row) != len(header):
                raise ValueError(f"expected {len(header)} fields, found {len(row)}")
            yield _record(dict(zip(header, row)), n, labelled, allow_empty)
        except ValueError as e:
            msg = f"{path}:{n}: {e}"
            if not skip:
                raise DataError(msg + " (use --skip-bad-rows to skip such rows)") from None
            stats.skip(msg)


def _record(obj: dict, line: int, labelled: bool, allow_empty: bool = False) -> Record:
    title = obj.get("title")
    if not isinstance(title, str):
        raise ValueError("missing title" if title is None else f"title is {type(title).__name__}, not text")
    if not allow_empty and not title.strip():
        raise ValueError("empty title")
    category = obj.get("category")
    if labelled:
        if category is None or (isinstance(category, str) and not category.strip()):
            raise ValueError("missing category")
        if not isinstance(category, str):
            raise ValueError(f"category is {type(category).__name__}, not text")
    for key in ("language", "label_quality"):
        if not isinstance(obj.get(key) or "", str):
            raise ValueError(f"{key} is {type(obj[key]).__name__}, not text")
    rid = obj.get("id")
    return Record(
        title=title,
        category=category.strip() if isinstance(category, str) else None,
        language=(obj.get("language") or None),
        label_quality=(obj.get("label_quality") or None),
        id=None if rid is None else str(rid),
        line=line,
    )


def read_records(
    path: str | Path,
    *,
    labelled: bool = True,
    skip_bad_rows: bool = False,
    language: str = "all",
    label_quality: str = "all",
    stats: ReadStats | None = None,
    allow_empty_title: bool = False,
    progress: bool = False,
) -> Iterator[Record]:
    """Stream the rows of a ``.jsonl[.gz]`` or ``.csv[.gz]`` file, checked and filtered.

    ``labelled=False`` reads files without a category (a challenge ``test.csv``).
    ``stats`` (optional) is filled with counts as the stream is consumed.
    ``allow_empty_title`` keeps rows whose title is blank (a submission needs a
    category for every test id, so such a row is predicted, not skipped).
    ``progress`` shows a progress bar while a large file is read (on a terminal).
    """
    path = Path(path)
    stats = stats if stats is not None else ReadStats()
    stats.path = str(path)
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".json", ".jl")):
        rows = _jsonl_rows(path, stats, skip_bad_rows, labelled, allow_empty_title, progress)
    elif name.endswith(".csv"):
        rows = _csv_rows(path, stats, skip_bad_rows, labelled, allow_empty_title, progress)
    else:
        raise DataError(f"{path}: unknown file type; expected .jsonl, .jsonl.gz, .csv or .csv.gz")
    for rec in rows:
        if (language != "all" and rec.language != language) or (
            label_quality != "all" and rec.label_quality != label_quality
        ):
            stats.filtered += 1
            continue
        stats.kept += 1
        yield rec
    if stats.kept == 0:
        why = "no rows" if not stats.filtered and not stats.skipped else "no rows left"
        detail = f" ({stats.filtered} filtered out, {stats.skipped} bad rows skipped)" if why != "no rows" else ""
        raise DataError(f"{path}: {why}{detail}")


def stratified_split(labels: np.ndarray, fraction: float, seed: int,
                     groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(train, validation)``, each category split in the same proportion.

    Each category with at least two rows puts ``round(fraction * n)`` rows (at least
    one, and never all) into validation, so every category that can be is present
    on both sides; a category with a single row stays in training.

    ``groups``: a key per row (``dataset.title_keys``); rows of one category with the same
    key go to the same side, so a title copied in the file is never validated on while it
    is learned from.  Groups are taken in the order their first row is drawn until the
    category's share is reached (a little more when the last group is large, never every
    row); without repeated keys this is the very split made without ``groups``.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    ranked = labels[order]
    bounds = np.flatnonzero(ranked[1:] != ranked[:-1]) + 1  # works for codes and for category names
    val_parts = []
    for group in np.split(order, bounds):
        n = len(group)
        if n < 2:
            continue
        k = min(n - 1, max(1, int(round(fraction * n))))
        drawn = rng.permutation(group)
        if groups is None:
            val_parts.append(drawn[:k])
            continue
        _, first, inverse = np.unique(groups[drawn], return_index=True, return_inverse=True)
        rank = np.empty(len(first), dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(first))  # groups in the order first drawn
        row_rank = rank[inverse]
        taken = np.cumsum(np.bincount(row_rank))  # rows in validation if the first m + 1 groups go there
        m = int(np.searchsorted(taken, k)) + 1
        if taken[m - 1] >= n:
            m -= 1  # never the whole category (a category of one repeated title stays in training)
        val_parts.append(drawn[row_rank < m])
    val = np.sort(np.concatenate(val_parts)) if val_parts else np.empty(0, dtype=np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[val] = False
    return np.flatnonzero(mask), val


def iter_chunks(items: Iterable, size: int) -> Iterator[list]:
    """Lists of up to ``size`` items from any iterable (bounded memory for big files)."""
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def resolved(path: str | Path) -> Path:
    """``Path(path).resolve()``, with a loop of symbolic links as a ``DataError`` naming the path
    (``Path.resolve`` raises ``RuntimeError`` for one on Python 3.11 and 3.12)."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as e:
        raise DataError(f"{path}: cannot be resolved ({e}); a loop of symbolic links?") from None


def file_digest(path: Path) -> str:
    """Streaming SHA-256 of a file (the cache key, bundle and checkpoint checksums)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
