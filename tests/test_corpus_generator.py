"""benchmarks/corpus.py, the generated corpus of the scale benchmarks, run as a user runs it:
its titles follow Heaps' law as measured on the real ones, it is deterministic, and titlecat
reads both of its formats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


from titlecat.cache import tokenize_file
from titlecat.config import DataConfig, TextConfig
from titlecat.data import read_records

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "corpus.py"


def generate(out: Path, *args: str) -> dict:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "Heaps' law on the 54,200 shared titles" in proc.stdout
    return json.loads((out / "corpus.json").read_text())


def test_the_course_corpus_follows_heaps_law_of_the_real_titles(real_data, tmp_path):
    n = 60_000
    facts = generate(tmp_path / "c", "--n", str(n))
    assert 40 < facts["heaps_k"] < 100 and 0.5 < facts["heaps_beta"] < 0.7  # measured on the shared titles
    train = tokenize_file(tmp_path / "c" / "spanish.train.jsonl.gz", TextConfig(), DataConfig(), cache_dir=False)
    assert len(train) == n and len(train.categories) == 632
    predicted = facts["heaps_k"] * n ** facts["heaps_beta"]
    assert abs(len(train.types) - predicted) / predicted < 0.10, (len(train.types), predicted)
    rows = list(read_records(tmp_path / "c" / "spanish.validation.jsonl.gz"))
    assert len(rows) == round(n * 1_223_820 / 4_895_280)
    reliable = sum(r.label_quality == "reliable" for r in rows) / len(rows)
    assert 0.06 < reliable < 0.10  # the course's 7.9%


def test_the_same_arguments_give_the_same_bytes(real_data, tmp_path):
    generate(tmp_path / "a", "--n", "3000", "--seed", "4")
    generate(tmp_path / "b", "--n", "3000", "--seed", "4")
    generate(tmp_path / "c", "--n", "3000", "--seed", "5")
    a, b, c = ((tmp_path / d / "spanish.train.jsonl.gz").read_bytes() for d in "abc")
    assert a == b and a != c


def test_the_challenge_corpus_has_both_languages_and_its_categories(real_data, tmp_path):
    facts = generate(tmp_path / "ch", "--n", "20000", "--format", "challenge")
    assert facts["categories"] == 1588
    rows = list(read_records(tmp_path / "ch" / "train.csv"))
    assert len(rows) == 20_000
    by_lang = {lang: [r for r in rows if r.language == lang] for lang in ("spanish", "portuguese")}
    assert 0.45 < len(by_lang["portuguese"]) / len(rows) < 0.55
    assert len({r.category for r in rows}) > 1200  # 1,588 in all; the rarest may not show in 20,000 rows
    assert 0.04 < sum(r.label_quality == "reliable" for r in rows) / len(rows) < 0.08  # the challenge's 5.9%
    words = {lang: {w for r in rs for w in r.title.lower().split()} for lang, rs in by_lang.items()}
    shared = len(words["spanish"] & words["portuguese"]) / len(words["portuguese"])
    assert shared < 0.6, shared  # a vocabulary of its own, beyond brands, numbers and codes
