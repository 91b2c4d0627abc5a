"""Benchmark: peak memory of reading and predicting a challenge-size file, streamed.

    python benchmarks/bench_stream.py [--rows 3000000] [--data ../shared/data] [--chunk-size 10000]

Generates, in a temporary folder, a training CSV (``title,label_quality,language,category``)
and a test CSV (``id,title,language``) of ``--rows`` synthetic titles: real titles
(meli2019-es and the original test sample) with 1-3 random words of the same titles
appended and, one row in three, a random model code (so the vocabulary grows as in the
real data).  Then measures, each in a fresh subprocess (peak RSS from
``resource.getrusage``, minus that of a process that only imports titlecat and torch):

* ``tokenize``: ``tokenize_file`` on the training CSV (what ``titlecat train`` holds);
* ``predict``: ``Classifier.predict_file`` on the test CSV with a small MLP trained on a
  slice of it (what ``titlecat predict --input --output`` holds);
* ``baseline``: ``list(read_records(...))`` on the first tenth of the training CSV, scaled
  by 10: the rows held as Python objects, which a non-streaming reader would need.

Prints the figures and ratios and writes benchmarks/results/bench_stream.json.  About
3-5 minutes on 2 cores with the default 3,000,000 rows.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


# ---- the generated files ------------------------------------------------------------------


def seed_titles(data: Path) -> tuple[list[str], list[str]]:
    """Real titles and their categories (the original test sample gets random real categories)."""
    titles, cats = [], []
    es = data / "meli2019-es" / "spanish.train.jsonl.gz"
    with gzip.open(es, "rt", encoding="utf-8") as f:
        for line in f:
            obj = json.loads(line)
            titles.append(obj["title"])
            cats.append(obj["category"])
    sample = data / "meli2019-original" / "test.head.csv"
    if sample.is_file():
        rng = np.random.default_rng(0)
        with open(sample, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                titles.append(row["title"])
                cats.append(cats[int(rng.integers(len(cats)))])
    return titles, cats


def generate(dest: Path, n_rows: int, data: Path, seed: int = 0) -> dict:
    titles, cats = seed_titles(data)
    words = sorted({w for t in titles for w in t.split()})
    rng = np.random.default_rng(seed)
    langs = np.array(["spanish", "portuguese"])
    quals = np.array(["reliable", "unreliable"])
    tenth = max(1, n_rows // 10)
    t0 = time.perf_counter()
    with open(dest / "train.csv", "w", newline="", encoding="utf-8") as ftr, \
         open(dest / "test.csv", "w", newline="", encoding="utf-8") as fte, \
         open(dest / "train_tenth.csv", "w", newline="", encoding="utf-8") as ften:
        wtr, wte, wten = csv.writer(ftr), csv.writer(fte), csv.writer(ften)
        wtr.writerow(["title", "label_quality", "language", "category"])
        wten.writerow(["title", "label_quality", "language", "category"])
        wte.writerow(["id", "title", "language"])
        for start in range(0, n_rows, 100_000):
            n = min(100_000, n_rows - start)
            base = rng.integers(len(titles), size=n)
            extra = rng.integers(len(words), size=(n, 3))
            n_extra = rng.integers(1, 4, size=n)
            code = rng.random(n) < 1 / 3
            code_num = rng.integers(100_000, size=n)
            lang = langs[(rng.random(n) < 0.5).astype(int)]
            qual = quals[(rng.random(n) < 0.92).astype(int)]  # 92% unreliable, as in the course data
            rows_tr, rows_te = [], []
            for i in range(n):
                t = titles[base[i]] + " " + " ".join(words[j] for j in extra[i, : n_extra[i]])
                if code[i]:
                    t += f" xk{code_num[i]}"
                rows_tr.append((t, qual[i], lang[i], cats[base[i]]))
                rows_te.append((start + i, t, lang[i]))
            wtr.writerows(rows_tr)
            wte.writerows(rows_te)
            if start < tenth:
                wten.writerows(rows_tr[: tenth - start])
    return {"rows": n_rows, "baseline_rows": min(tenth, n_rows), "generate_seconds": round(time.perf_counter() - t0, 1),
            "train_csv_mb": round((dest / "train.csv").stat().st_size / 1e6, 1),
            "test_csv_mb": round((dest / "test.csv").stat().st_size / 1e6, 1)}


# ---- one measurement per subprocess --------------------------------------------------------


def measure(kind: str, a: argparse.Namespace) -> dict:
    """Runs in the child process; returns what it measured (printed as JSON by main)."""
    import torch  # noqa: F401  (the same imports in every child, the idle one included)

    from titlecat.api import load
    from titlecat.config import Config
    from titlecat.data import read_records
    from titlecat.features import tokenize_file

    t0 = time.perf_counter()
    out: dict = {}
    if kind == "idle":
        pass
    elif kind == "baseline":
        rows = list(read_records(a.file))
        out["rows"] = len(rows)
    elif kind == "tokenize":
        cfg = Config.default("mlp")
        corpus = tokenize_file(a.file, cfg.text, cfg.data, cache_dir=False)
        out.update(rows=len(corpus), tokens=int(len(corpus.token_types)), types=len(corpus.types),
                   array_mb=round(sum(x.nbytes for x in (corpus.token_types, corpus.offsets, corpus.category_codes,
                                                         corpus.language_codes, corpus.quality_codes)) / 2**20, 1))
    elif kind == "predict":
        stats = load(a.bundle).predict_file(a.file, a.output, chunk_size=a.chunk_size)
        with open(a.output, encoding="utf-8") as f:
            lines = sum(1 for _ in f)
        out.update(rows=stats.rows, submission_lines=lines)
    else:
        raise ValueError(kind)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    if "rows" in out and out["seconds"]:
        out["rows_per_second"] = round(out["rows"] / out["seconds"])
    out["peak_rss_mb"] = round(peak_mb(), 1)
    return out


def run_child(kind: str, **kw) -> dict:
    args = [sys.executable, __file__, "--measure", kind]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    p = subprocess.run(args, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def train_small_model(dest: Path, n: int) -> Path:
    """A small MLP (632 classes) trained for one epoch on the first ``n`` rows of the generated file."""
    from titlecat import api

    with open(dest / "train.csv", newline="", encoding="utf-8") as f, \
         open(dest / "train_small.csv", "w", newline="", encoding="utf-8") as g:
        for i, line in enumerate(f):
            if i > n:
                break
            g.write(line)
    bundle = dest / "model"
    api.train(dest / "train_small.csv", model="mlp", tracking=False, output=bundle, cache_dir=dest / "cache",
              overrides={"model.embedding_dim": 32, "model.hidden_sizes": [], "text.buckets": 50_000,
                         "text.bigram_buckets": 0, "train.epochs": 1, "train.batch_size": 512})
    return bundle


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=3_000_000, help="rows of the generated files")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--chunk-size", type=int, default=10_000, help="rows per chunk when predicting")
    ap.add_argument("--train-rows", type=int, default=20_000, help="rows the small model is trained on")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_stream.json"))
    ap.add_argument("--keep", help="generate into this folder and keep it (default: a temporary folder)")
    # child-process mode
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--file", help=argparse.SUPPRESS)
    ap.add_argument("--bundle", help=argparse.SUPPRESS)
    ap.add_argument("--output", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.measure:
        print(json.dumps(measure(a.measure, a)))
        return 0

    t_all = time.perf_counter()
    dest = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="titlecat-bench-stream-"))
    dest.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TITLECAT_CACHE", str(dest / "cache"))
    try:
        res: dict = {"machine": f"{os.cpu_count()} cores", "chunk_size": a.chunk_size}
        print(f"generating {a.rows:,} rows in {dest} ...", flush=True)
        res["files"] = generate(dest, a.rows, Path(a.data))
        print(f"  {res['files']}", flush=True)
        bundle = train_small_model(dest, a.train_rows)

        idle = run_child("idle")
        res["idle"] = idle
        print(f"idle (imports only): {idle['peak_rss_mb']:.0f} MB", flush=True)
        base = run_child("baseline", file=dest / "train_tenth.csv")
        scale = a.rows / base["rows"]
        base["held_mb"] = round(base["peak_rss_mb"] - idle["peak_rss_mb"], 1)
        base["held_mb_scaled_to_all_rows"] = round(base["held_mb"] * scale, 1)
        res["baseline_python_rows"] = base
        print(f"baseline list(read_records) on {base['rows']:,} rows: +{base['held_mb']:.0f} MB "
              f"-> {base['held_mb_scaled_to_all_rows']:.0f} MB for {a.rows:,} rows", flush=True)
        for kind, kw in (("tokenize", {"file": dest / "train.csv"}),
                         ("predict", {"file": dest / "test.csv", "bundle": bundle, "output": dest / "submission.csv",
                                      "chunk_size": a.chunk_size})):
            r = run_child(kind, **kw)
            r["held_mb"] = round(r["peak_rss_mb"] - idle["peak_rss_mb"], 1)
            r["baseline_over_this"] = round(base["held_mb_scaled_to_all_rows"] / max(r["held_mb"], 1.0), 1)
            res[kind] = r
            print(f"{kind}: {r['rows']:,} rows in {r['seconds']}s ({r.get('rows_per_second', 0):,}/s), peak "
                  f"{r['peak_rss_mb']:.0f} MB (+{r['held_mb']:.0f} MB over idle); Python rows would need "
                  f"{r['baseline_over_this']}x that", flush=True)
        assert res["predict"]["submission_lines"] == a.rows + 1, "the submission misses ids"
        res["total_seconds"] = round(time.perf_counter() - t_all, 1)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
        print(f"total {res['total_seconds']}s; results in {a.out}")
    finally:
        if not a.keep:
            shutil.rmtree(dest, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
