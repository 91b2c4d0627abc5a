"""Benchmark: peak memory of reading and predicting a challenge-size file, streamed.

    python benchmarks/bench_stream.py [--rows 3000000] [--predict-rows 1000000] [--chunk-size 10000]

Generates, in a temporary folder, a training CSV (``title,label_quality,language,category``,
``--rows`` rows) and a test CSV (``id,title,language``, its first ``--predict-rows`` rows) of
synthetic titles: real titles (meli2019-es and the original test sample) with 1-3 random
words of the same titles appended and, one row in three, a random model code (so the
vocabulary keeps growing, as in the real data).  Then measures, each in a fresh subprocess,
the peak RSS (``resource.getrusage`` ru_maxrss) above that of a process that only imports
titlecat and torch:

* ``baseline``: ``list(read_records(...))`` on the first tenth of the training CSV: the rows
  held as Python objects, which a non-streaming reader needs (scaled per row to each run);
* ``tokenize``: ``tokenize_file`` on the whole training CSV (what ``titlecat train`` holds
  before featurizing);
* ``predict``: ``Classifier.predict_file`` with a small MLP (trained in a child on 20,000 rows)
  on a tenth of the test CSV and on all of it: streaming memory should not grow with rows.

Children, not this process, do the heavy work: on Linux a child's ru_maxrss starts at its
parent's RSS.  Prints figures and ratios, writes benchmarks/results/bench_stream.json;
about 2.5 minutes on a busy 2-core machine with the defaults (149 s when last run).
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


def hwm_mb() -> float | None:
    """VmHWM of /proc/self/status (the same peak, but never inherited from the parent), if readable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


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


def generate(dest: Path, n_rows: int, n_test: int, data: Path, seed: int = 0) -> dict:
    """``train.csv`` (``n_rows``), ``test.csv`` (its first ``n_test`` rows, with ids) and the first
    tenths of both (``train_tenth.csv``, ``test_tenth.csv``)."""
    titles, cats = seed_titles(data)
    words = sorted({w for t in titles for w in t.split()})
    rng = np.random.default_rng(seed)
    titles_a, cats_a = np.array(titles, dtype=object), np.array(cats, dtype=object)
    words_a = np.array(words, dtype=object)
    langs = np.array(["spanish", "portuguese"], dtype=object)
    quals = np.array(["reliable", "unreliable"], dtype=object)
    train_header, test_header = ["title", "label_quality", "language", "category"], ["id", "title", "language"]
    # file -> (header, rows it gets)
    plan = {"train.csv": (train_header, n_rows), "train_tenth.csv": (train_header, max(1, n_rows // 10)),
            "test.csv": (test_header, n_test), "test_tenth.csv": (test_header, max(1, n_test // 10))}
    files = {name: open(dest / name, "w", newline="", encoding="utf-8") for name in plan}
    writers = {name: csv.writer(f) for name, f in files.items()}
    t0 = time.perf_counter()
    try:
        for name, (header, _) in plan.items():
            writers[name].writerow(header)
        for start in range(0, n_rows, 100_000):
            n = min(100_000, n_rows - start)
            base = rng.integers(len(titles), size=n)
            # object arrays: `+` concatenates the strings element-wise in a C loop
            t = titles_a[base] + " " + words_a[rng.integers(len(words), size=n)]
            for _ in range(2):  # up to 3 random words in all
                more = rng.random(n) < 0.5
                t[more] = t[more] + " " + words_a[rng.integers(len(words), size=int(more.sum()))]
            code = rng.random(n) < 1 / 3  # a model code: new vocabulary, as real titles bring
            t[code] = t[code] + np.char.mod(" xk%d", rng.integers(1_000_000, size=int(code.sum()))).astype(object)
            lang = langs[(rng.random(n) < 0.5).astype(int)]
            qual = quals[(rng.random(n) < 0.92).astype(int)]  # 92% unreliable, as in the course data
            cat = cats_a[base]
            for name, (header, rows) in plan.items():
                k = min(n, rows - start)
                if k <= 0:
                    continue
                if header is train_header:
                    writers[name].writerows(zip(t[:k], qual[:k], lang[:k], cat[:k]))
                else:
                    writers[name].writerows(zip(range(start, start + k), t[:k], lang[:k]))
    finally:
        for f in files.values():
            f.close()
    return {"rows": n_rows, "test_rows": n_test, "generate_seconds": round(time.perf_counter() - t0, 1),
            **{f"{name}_mb": round((dest / name).stat().st_size / 1e6, 1) for name in plan}}


# ---- one measurement per subprocess --------------------------------------------------------


def measure(kind: str, a: argparse.Namespace) -> dict:
    """Runs in the child process; returns what it measured (printed as JSON by main)."""
    import torch  # the same imports in every child, the idle one included

    torch.set_num_threads(a.threads)

    from titlecat.cache import tokenize_file
    from titlecat.classifier import load
    from titlecat.config import Config
    from titlecat.data import read_records

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
    elif kind == "train":
        train_small_model(Path(a.file), a.train_rows, Path(a.bundle))
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
    hwm = hwm_mb()
    if hwm is not None:
        out["vm_hwm_mb"] = round(hwm, 1)
    return out


def run_child(kind: str, threads: int, **kw) -> dict:
    args = [sys.executable, __file__, "--measure", kind, "--threads", str(threads)]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    p = subprocess.run(args, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def train_small_model(train_csv: Path, n: int, bundle: Path) -> None:
    """A small MLP (~630 classes) trained for one epoch on the first ``n`` rows of ``train_csv``."""
    import titlecat

    small = bundle.parent / "train_small.csv"
    with open(train_csv, newline="", encoding="utf-8") as f, open(small, "w", newline="", encoding="utf-8") as g:
        for i, line in enumerate(f):  # titles have no newlines, so a line is a row
            if i > n:
                break
            g.write(line)
    titlecat.train(small, model="mlp", tracking=False, output=bundle, cache_dir=bundle.parent / "cache",
              overrides={"model.embedding_dim": 16, "model.hidden_sizes": [], "model.pooling": "mean",
                         "text.buckets": 50_000,
                         "text.bigram_buckets": 0, "train.epochs": 1, "train.batch_size": 512})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=3_000_000, help="rows of the generated files")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--predict-rows", type=int, default=1_000_000,
                    help="rows of the test file predicted (memory does not grow with it; time does)")
    ap.add_argument("--chunk-size", type=int, default=10_000, help="rows per chunk when predicting")
    ap.add_argument("--train-rows", type=int, default=20_000, help="rows the small model is trained on")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads in each child (1: on a shared 2-core machine, 2 threads thrash)")
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
        res: dict = {"machine": f"{os.cpu_count()} cores", "chunk_size": a.chunk_size, "torch_threads": a.threads}
        print(f"generating {a.rows:,} rows in {dest} ...", flush=True)
        n_test = min(a.rows, a.predict_rows)
        res["files"] = generate(dest, a.rows, n_test, Path(a.data))
        print(f"  {res['files']}", flush=True)
        bundle = dest / "model"
        # everything heavy runs in children: a child's ru_maxrss starts at its parent's RSS
        res["train_small_model"] = run_child("train", a.threads, file=dest / "train.csv", bundle=bundle,
                                             train_rows=a.train_rows)
        idle = res["idle"] = run_child("idle", a.threads)
        print(f"idle (imports only): {idle['peak_rss_mb']:.0f} MB", flush=True)
        base = run_child("baseline", a.threads, file=dest / "train_tenth.csv")
        base["held_mb"] = round(base["peak_rss_mb"] - idle["peak_rss_mb"], 1)
        base["held_bytes_per_row"] = round(base["held_mb"] * 2**20 / base["rows"])
        res["baseline_python_rows"] = base
        print(f"baseline list(read_records) on {base['rows']:,} rows: +{base['held_mb']:.0f} MB "
              f"({base['held_bytes_per_row']} bytes a row)", flush=True)
        runs = (("tokenize", {"file": dest / "train.csv"}),
                ("predict_tenth", {"file": dest / "test_tenth.csv", "bundle": bundle,
                                   "output": dest / "submission_tenth.csv", "chunk_size": a.chunk_size}),
                ("predict", {"file": dest / "test.csv", "bundle": bundle, "output": dest / "submission.csv",
                             "chunk_size": a.chunk_size}))
        for kind, kw in runs:
            r = run_child(kind.removesuffix("_tenth"), a.threads, **kw)
            r["held_mb"] = round(r["peak_rss_mb"] - idle["peak_rss_mb"], 1)
            # the same rows held as Python objects (the baseline per row, times this run's rows)
            r["python_rows_mb"] = round(base["held_mb"] * r["rows"] / base["rows"], 1)
            r["python_rows_over_this"] = round(r["python_rows_mb"] / max(r["held_mb"], 1.0), 1)
            res[kind] = r
            print(f"{kind}: {r['rows']:,} rows in {r['seconds']}s ({r.get('rows_per_second', 0):,}/s), peak "
                  f"{r['peak_rss_mb']:.0f} MB = +{r['held_mb']:.0f} MB over idle; the rows as Python objects: "
                  f"{r['python_rows_mb']:.0f} MB ({r['python_rows_over_this']}x)", flush=True)
        assert res["predict"]["submission_lines"] == n_test + 1, "the submission misses ids"
        res["predict_growth_mb_for_10x_rows"] = round(res["predict"]["held_mb"] - res["predict_tenth"]["held_mb"], 1)
        print(f"streaming predict: {res['predict_growth_mb_for_10x_rows']:+.0f} MB for 10x the rows", flush=True)
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
