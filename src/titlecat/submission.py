"""Challenge submissions: ``id,category`` for every row of a test file, streamed.

The original challenge's ``test.csv`` (``id,title,language``) is read ``chunk_size``
rows at a time: each chunk is tokenized, scored and written before the next is
read, so memory does not grow with the file (a few hundred MB for millions of
rows; see ``benchmarks/bench_stream.py``).  Every id is written once, in input
order; a row with a blank title still gets a category (the model's guess for an
empty title, plus its language token when the model uses one).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from .config import TextConfig
from .corpus import Corpus
from .data import DataError, ReadStats, iter_chunks, read_records, resolved
from .tokenizer import tokenize_records
from .vocab import LabelEncoder


class Scorer(Protocol):
    """What a submission needs of a model (a ``Classifier`` is one)."""

    labels: LabelEncoder
    text_config: TextConfig

    def logits(self, corpus: Corpus) -> np.ndarray: ...


@dataclass
class SubmissionStats:
    """What ``write_submission`` wrote."""

    rows: int = 0  # ids written
    empty_titles: int = 0  # rows whose title was blank (predicted all the same)
    languages: dict[str, int] = field(default_factory=dict)  # rows per language
    read: ReadStats = field(default_factory=ReadStats)  # with skip_bad_rows: the rows skipped (ids missing)


def write_submission(clf: Scorer, path: str | Path, output: str | Path, *,
                     chunk_size: int = 10_000, skip_bad_rows: bool = False) -> SubmissionStats:
    """Predict the top category of every row of ``path`` and write ``id,category`` to ``output``.

    ``path`` is a ``.csv[.gz]`` with ``id`` and ``title`` columns (``language`` used when
    present) or a ``.jsonl[.gz]`` whose objects carry an ``id``.  Malformed rows are errors
    (a skipped row is a missing id), unless ``skip_bad_rows``: then they are skipped and
    counted in ``stats.read``, and the caller must say that their ids are missing.
    ``output`` appears only when complete.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    path, output = Path(path), Path(output)
    if resolved(output) == resolved(path):
        raise DataError(f"{output}: the submission would overwrite the test file; choose another --output")
    stats = SubmissionStats()
    classes = clf.labels.classes_
    tmp = output.with_name(f".{output.name}.tmp{os.getpid()}")
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "category"])
            records = read_records(path, labelled=False, allow_empty_title=True, stats=stats.read,
                                   skip_bad_rows=skip_bad_rows)
            first_line: dict[str, int] = {}  # id -> its line: every id once (a test file's ids, not millions)
            for rows in iter_chunks(records, chunk_size):
                for r in rows:
                    if r.id is None:
                        raise DataError(f"{path}:{r.line}: no id; a test file for a submission needs an id "
                                        "column (id,title,language)")
                    if not r.id.strip():
                        raise DataError(f"{path}:{r.line}: empty id; a submission needs an id for every row")
                    seen = first_line.setdefault(r.id, r.line)
                    if seen != r.line:
                        raise DataError(f"{path}:{r.line}: id {r.id!r} already on line {seen}; a submission "
                                        "holds every id once: remove the duplicate rows")
                corpus = tokenize_records(rows, clf.text_config, labelled=False)
                pred = clf.logits(corpus).argmax(1)  # (chunk,) class index
                writer.writerows(zip((r.id for r in rows), (classes[j] for j in pred.tolist())))
                stats.rows += len(rows)
                stats.empty_titles += sum(1 for r in rows if not r.title.strip())
                for r in rows:
                    lang = r.language or "unknown"
                    stats.languages[lang] = stats.languages.get(lang, 0) + 1
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return stats
