"""Benchmark: titlecat at full size -- `titlecat train` on a generated corpus of N titles, measured.

    python benchmarks/bench_scale.py                                  # 1 M titles, ~10 minutes
    python benchmarks/bench_scale.py --n 4895280                      # the course's training file
    python benchmarks/bench_scale.py --n 20000000 --format challenge  # the challenge's train.csv
    python benchmarks/bench_scale.py --summary                        # only redraw scale.md / scale.png

The corpus comes from ``benchmarks/corpus.py`` (generated once into ``--work`` and reused).
Every training runs as ``titlecat train`` in a child process, whose peak RSS is its
``ru_maxrss`` (``os.wait4``), with ``--info-json`` for its facts:

1. **baseline, same run**: the default MLP for three epochs on the 44,720 real training titles
   of ``--data`` (its fastest epoch): the training speed every figure below is compared with
   (a ratio);
2. **the default MLP on N titles**, ``--epochs`` epochs (refit off), with a fresh cache: the
   course format with its validation file, the challenge format with a 1% carved split;
   the real test file as ``--test``.  Peak RSS of the whole run; reading + tokenizing,
   featurizing (vocabulary, n-grams, idf) and training titles/s; validation seconds; the
   cache's size on disk;
3. **a cache hit**: the same files tokenized again (a child; memory-mapped from the cache);
4. **the CNN, GRU and transformer** (``--models``) for ``--steps`` steps on the same files:
   training titles/s and peak RSS;
5. **bad input** (``--bad-row``): a copy of the training file with one corrupt row at 60% of it
   (row 2,937,168 of the course's 4.9 M): without ``--skip-bad-rows`` the error names file and
   line; with it the row is reported and the training goes on;
6. **the refit rule** (``--refit``): the default MLP with and without ``train.refit``, judged
   on a held-out generated file (another seed; never the test file): what the refit adds, and
   what it costs.

Writes ``results/scale-<N>.json``, then ``results/scale.md`` (every ``scale-*.json``) and
``results/scale.png`` (peak memory and time against N).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _measure import RESULTS

HERE = Path(__file__).resolve().parent
TARGETS = {"rss_gb": {"course": 6.0, "challenge": 8.0}, "prep_titles_per_s": 100_000, "train_titles_per_s": 20_000}


def run_child(cmd: list[str], log: Path) -> tuple[int, float, float]:
    """Run ``cmd``, output to ``log``: (exit status, peak RSS in GB, seconds)."""
    t = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss / 2**20, time.perf_counter() - t


def titlecat_train(work: Path, name: str, files: dict, model: str, sets: list[str], cache: Path) -> dict:
    """One ``titlecat train`` child: its facts (``--info-json``), peak RSS and wall time."""
    out, info = work / f"run-{name}", work / f"info-{name}.json"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "titlecat.cli", "train", "--model", model, "--output", str(out), "--no-tracking",
           "--cache-dir", str(cache), "--info-json", str(info), *[a for k, v in files.items() if v
                                                                 for a in (f"--{k}", str(v))]]
    for s in sets:
        cmd += ["--set", s]
    rc, rss, secs = run_child(cmd, work / f"log-{name}.txt")
    if rc != 0:
        raise SystemExit(f"{name}: exit {rc}; see {work / f'log-{name}.txt'}")
    facts = json.loads(info.read_text())
    bundle_mb = sum(p.stat().st_size for p in out.iterdir() if p.is_file()) / 2**20
    shutil.rmtree(out, ignore_errors=True)  # ~450 MB each
    return {"info": facts, "rss_gb": rss, "wall_seconds": secs, "bundle_mb": bundle_mb}


def epoch_figures(run: dict) -> dict:
    """Per-phase figures of a run from its facts."""
    info = run["info"]
    first = info["history"][0]
    n_read = info["n_train"] + (info["n_val"] if run.get("validation_file") else 0)  # a carved split is read once
    # epoch_seconds holds the epoch's validation too; samples_per_second is the learning alone
    learn = info["n_train"] / first["samples_per_second"] if first["samples_per_second"] else 0.0
    return {
        "n_train": info["n_train"], "n_val": info["n_val"],
        "read_seconds": info["read_seconds"], "read_titles_per_s": n_read / info["read_seconds"],
        "tokenize_seconds": info["tokenize_seconds"],
        # bench_mlp's "preprocessing" (tokenizing + vocabulary + n-grams + idf, rows already read)
        "preprocess_titles_per_s": n_read / (info["tokenize_seconds"] + info["prep_seconds"] - info["read_seconds"]),
        "features_seconds": info["prep_seconds"] - info["read_seconds"],
        "features_titles_per_s": n_read / max(1e-9, info["prep_seconds"] - info["read_seconds"]),
        "train_titles_per_s": first["samples_per_second"],
        "epoch_seconds": first["epoch_seconds"],
        "validation_seconds": max(0.0, first["epoch_seconds"] - learn) if info["n_val"] else 0.0,
        "val_balanced_accuracy": first.get("val_balanced_accuracy"),
        "holdout_balanced_accuracy": info.get("test_balanced_accuracy"),
        "total_seconds": info["total_seconds"], "rss_gb": run["rss_gb"], "bundle_mb": run["bundle_mb"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="training titles to generate")
    ap.add_argument("--format", choices=["course", "challenge"], default="course")
    ap.add_argument("--epochs", type=int, default=1, help="epochs of the default MLP on N titles")
    ap.add_argument("--models", nargs="*", default=["cnn", "rnn", "transformer"], help="other models, --steps each")
    ap.add_argument("--steps", type=int, default=60, help="training steps of each other model")
    ap.add_argument("--bad-row", action="store_true", help="also the corrupt-row check (reads the file twice more)")
    ap.add_argument("--refit", action="store_true", help="also the refit rule: two more trainings, --epochs each")
    ap.add_argument("--data", type=Path, default=Path("../shared/data/meli2019-es"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/titlecat-scale"), help="corpora, caches and logs")
    ap.add_argument("--summary", action="store_true", help="only rewrite scale.md and scale.png from the results")
    args = ap.parse_args()
    if args.summary:
        return summarize()

    t_start = time.perf_counter()
    corpus_dir = args.work / f"{args.format}-{args.n}"
    if not (corpus_dir / "corpus.json").is_file():
        subprocess.run([sys.executable, str(HERE / "corpus.py"), "--n", str(args.n), "--format", args.format,
                        "--out", str(corpus_dir), "--data", str(args.data)], check=True)
    facts = json.loads((corpus_dir / "corpus.json").read_text())
    if args.format == "course":
        files = {"train": corpus_dir / "spanish.train.jsonl.gz",
                 "validation": corpus_dir / "spanish.validation.jsonl.gz"}
        sets = []
    else:
        files = {"train": corpus_dir / "train.csv", "validation": None}
        sets = ["data.val_fraction=0.01"]  # 200,000 validation titles of 20 M: a 1% carved split
    # scored on held-out generated titles: the generator recombines every shared title, the test
    # file's too, so a model trained on its output must never be scored on the real test file
    files["test"] = holdout_file(args)
    work = args.work / f"runs-{args.format}-{args.n}"
    work.mkdir(parents=True, exist_ok=True)
    res: dict = {"n": args.n, "format": args.format, "corpus": facts, "machine": f"{os.cpu_count()} cores",
                 "epochs": args.epochs}

    # -- 1. the baseline, in this run: one epoch of the default MLP on the real titles --
    # (three epochs, the fastest counted: one epoch of 44,720 titles is 2 s, and its speed moved from
    # 11,000 to 28,000 titles/s between runs on this shared machine)
    base = titlecat_train(work, "baseline", {"train": args.data / "spanish.train.jsonl.gz"}, "mlp",
                          ["train.epochs=3", "train.refit=false"], work / "cache-baseline")
    res["baseline"] = {"train_titles_per_s": max(h["samples_per_second"] for h in base["info"]["history"]),
                       "rss_gb": base["rss_gb"], "epochs": len(base["info"]["history"])}
    print(f"baseline (44,720 real titles): {res['baseline']['train_titles_per_s']:,.0f} titles/s, "
          f"peak {base['rss_gb']:.2f} GB", flush=True)

    # -- 2. the default MLP on N titles, a fresh cache --
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    run = titlecat_train(work, "mlp", files, "mlp", [*sets, f"train.epochs={args.epochs}", "train.refit=false"], cache)
    run["validation_file"] = files["validation"] is not None
    mlp = res["mlp"] = epoch_figures(run)
    mlp["cache_mb"] = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) / 2**20
    mlp["train_ratio_to_baseline"] = mlp["train_titles_per_s"] / res["baseline"]["train_titles_per_s"]
    print(json.dumps(mlp, indent=1), flush=True)

    # -- 3. a cache hit: the files tokenized again, memory-mapped --
    code = ("import sys, time; from titlecat.cache import tokenize_file; from titlecat.config import Config; "
            "c = Config.default('mlp'); t = time.perf_counter(); "
            "n = sum(len(tokenize_file(f, c.text, c.data, cache_dir=sys.argv[1])) for f in sys.argv[2:]); "
            "print(n, time.perf_counter() - t)")
    paths = [str(p) for k, p in files.items() if p is not None and k != "test"]
    out = subprocess.run([sys.executable, "-c", code, str(cache), *paths], capture_output=True, text=True, check=True)
    n_hit, secs = out.stdout.split()
    res["cache_hit"] = {"titles": int(n_hit), "seconds": float(secs), "titles_per_s": int(n_hit) / float(secs)}
    print(f"cache hit: {int(n_hit):,} titles in {float(secs):.1f} s", flush=True)

    # -- 4. the other models, a few steps each on the same (cached) files --
    # (validated on 10,000 held-out generated titles: the point is their training speed, and a GRU
    # takes minutes to score the 1.2 M titles of the validation file)
    res["models"] = {}
    small_val = {"train": files["train"], "validation": holdout_file(args, validation=True)}
    for model in args.models:
        r = titlecat_train(work, model, small_val, model, [f"train.max_steps={args.steps}", "train.refit=false"],
                           cache)
        first = r["info"]["history"][0]
        res["models"][model] = {"train_titles_per_s": first["samples_per_second"], "rss_gb": r["rss_gb"],
                                "steps": args.steps,
                                "epoch_hours_cpu": r["info"]["n_train"] / first["samples_per_second"] / 3600}
        print(f"{model}: {first['samples_per_second']:,.0f} titles/s, peak {r['rss_gb']:.2f} GB", flush=True)

    # -- 5. a corrupt row deep in the file --
    if args.bad_row:
        res["bad_row"] = bad_row_check(files["train"], work, args.format, sets)
        print(json.dumps(res["bad_row"], indent=1), flush=True)

    # -- 6. the refit rule, judged on a held-out generated file --
    if args.refit:
        res["refit"] = refit_check(args, files, sets, work, cache)
        print(json.dumps(res["refit"], indent=1), flush=True)

    res["minutes"] = (time.perf_counter() - t_start) / 60
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"scale-{args.format}-{args.n}.json").write_text(json.dumps(res, indent=1) + "\n")
    summarize()


def bad_row_check(train: Path, work: Path, fmt: str, sets: list[str]) -> dict:
    """A copy of ``train`` (uncompressed) with one row 60% of the way in broken; train on it
    without and with ``--skip-bad-rows`` (one step: the point is the reading)."""
    import gzip

    name = "bad.jsonl" if fmt == "course" else "bad.csv"
    bad = work / name
    opener = gzip.open if train.suffix == ".gz" else open
    with opener(train, "rb") as f:
        n_lines = sum(1 for _ in f)
    where = int(n_lines * 0.6)
    with opener(train, "rb") as src, open(bad, "wb") as dst:
        for i, line in enumerate(src, start=1):
            dst.write(b'{"title": "broken row, cut\n' if i == where and fmt == "course"
                      else b'"an unclosed, quote\n' if i == where else line)
    out: dict = {"line": where}
    cmd = [sys.executable, "-m", "titlecat.cli", "train", "--model", "mlp", "--train", str(bad), "--output",
           str(work / "run-bad"), "--no-tracking", "--cache-dir", str(work / "cache-bad"),
           "--set", "train.max_steps=1", "--set", "train.refit=false", *[a for s in sets for a in ("--set", s)]]
    for flag in ([], ["--skip-bad-rows"]):
        t = time.perf_counter()
        p = subprocess.run(cmd + flag, capture_output=True, text=True)
        key = "with_skip" if flag else "without_skip"
        msg = [ln for ln in p.stderr.splitlines() if ln.startswith("titlecat:")]
        out[key] = {"exit": p.returncode, "seconds": time.perf_counter() - t, "message": msg[-1] if msg else ""}
    shutil.rmtree(work / "run-bad", ignore_errors=True)
    shutil.rmtree(work / "cache-bad", ignore_errors=True)
    bad.unlink()
    return out


def holdout_file(args, validation: bool = False) -> Path:
    """Held-out generated titles (seed 1: other recombinations, other made-up words), generated once:
    40,000 of them, or 10,000 (``validation``)."""
    hold_dir = args.work / f"holdout-{args.format}"
    if not (hold_dir / "corpus.json").is_file():
        for fmt in ("course", "challenge"):  # the course format's validation file serves both
            subprocess.run([sys.executable, str(HERE / "corpus.py"), "--n", "40000", "--format", fmt, "--seed", "1",
                            "--out", str(args.work / f"holdout-{fmt}"), "--data", str(args.data)], check=True)
    if validation:
        return args.work / "holdout-course" / "spanish.validation.jsonl.gz"
    return hold_dir / ("spanish.train.jsonl.gz" if args.format == "course" else "train.csv")


def refit_check(args, files: dict, sets: list[str], work: Path, cache: Path) -> dict:
    """The default MLP with and without a refit on the validation rows, both judged on held-out
    generated titles (the run's --test: never the real test file)."""
    holdout = files["test"]
    out = {"holdout": str(holdout)}
    for refit in (False, True):
        r = titlecat_train(work, f"refit-{refit}", files, "mlp",
                           [*sets, f"train.epochs={args.epochs}", f"train.refit={str(refit).lower()}",
                            "train.refit_max_rows=0"], cache)
        out["refit" if refit else "no_refit"] = {"holdout_balanced_accuracy": r["info"]["test_balanced_accuracy"],
                                                 "train_seconds": r["info"]["train_seconds"], "rss_gb": r["rss_gb"]}
    out["gain"] = out["refit"]["holdout_balanced_accuracy"] - out["no_refit"]["holdout_balanced_accuracy"]
    out["time_ratio"] = out["refit"]["train_seconds"] / out["no_refit"]["train_seconds"]
    return out


def summarize() -> None:
    """``results/scale.md`` and ``results/scale.png`` from every ``results/scale-*.json``."""
    runs = sorted((json.loads(p.read_text()) for p in RESULTS.glob("scale-*.json")),
                  key=lambda r: (r["format"], r["n"]))
    if not runs:
        return
    lines = ["| titles | format | peak RSS | read + tokenize | of which tokenizing | features | preprocessing | "
             "training (vs 44,720 real) | epoch | validation | cache on disk | CNN / GRU / transformer training |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        m = r["mlp"]
        others = " / ".join(f"{r['models'][k]['train_titles_per_s']:,.0f}" if k in r.get("models", {}) else "-"
                            for k in ("cnn", "rnn", "transformer"))
        lines.append(
            f"| {r['n']:,} (+{m['n_val']:,} val.) | {r['format']} | {m['rss_gb']:.2f} GB "
            f"(limit {TARGETS['rss_gb'][r['format']]:.0f}) | "
            f"{m['read_titles_per_s']:,.0f}/s ({m['read_seconds']:.0f} s) | "
            f"{m['tokenize_seconds']:.0f} s | {m['features_titles_per_s']:,.0f}/s ({m['features_seconds']:.0f} s) | "
            f"{m['preprocess_titles_per_s']:,.0f}/s | {m['train_titles_per_s']:,.0f}/s "
            f"({m['train_ratio_to_baseline']:.2f}x of {r['baseline']['train_titles_per_s']:,.0f}"
            f"{'' if r['baseline'].get('epochs', 1) > 1 else ', 1 epoch'}) | {m['epoch_seconds'] / 60:.1f} min | "
            f"{m['validation_seconds']:.0f} s | "
            f"{m['cache_mb']:,.0f} MB | {others} titles/s |")
    lines += ["", "Read + tokenize: gzip, JSON/CSV, row checks and the tokenizer, one pass; preprocessing: what "
              "`bench_mlp.py` calls so (tokenizing, vocabulary, n-grams and idf of rows already read; target "
              "100,000/s); training: titles/s of the epoch's steps (target 20,000/s, and the ratio to the same "
              "run's fastest of three epochs on the 44,720 real titles -- one epoch in runs marked so, whose baseline "
              "moved from 11,000 to 28,000 titles/s between runs); epoch: its steps and its validation."]
    lines += ["", "Cache hits (the same files again, memory-mapped): " + "; ".join(
        f"{r['n']:,}: {r['cache_hit']['seconds']:.1f} s" for r in runs if "cache_hit" in r) + "."]
    for r in runs:
        if "bad_row" in r:
            b = r["bad_row"]
            lines += ["", f"Corrupt row {b['line']:,} of {r['n']:,}: without --skip-bad-rows exit "
                      f"{b['without_skip']['exit']} after {b['without_skip']['seconds']:.0f} s: "
                      f"`{b['without_skip']['message']}`; with it exit {b['with_skip']['exit']}: "
                      f"`{b['with_skip']['message']}`."]
        if "refit" in r:
            f = r["refit"]
            lines += ["", f"Refit at {r['n']:,} titles ({r['epochs']} epochs, judged on a held-out generated file): "
                      f"{f['no_refit']['holdout_balanced_accuracy']:.4f} without, "
                      f"{f['refit']['holdout_balanced_accuracy']:.4f} "
                      f"with ({f['gain']:+.4f}), at {f['time_ratio']:.2f}x the training time."]
    lines += ["", "Each row: `python benchmarks/bench_scale.py --n N --format F` "
              "(" + ", ".join(f"{r['n']:,}: {r['minutes']:.0f} min" for r in runs) + ")."]
    (RESULTS / "scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(runs)


def plot(runs: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for fmt, marker in (("course", "o"), ("challenge", "s")):
        rs = [r for r in runs if r["format"] == fmt]
        if not rs:
            continue
        n = [r["n"] / 1e6 for r in rs]
        a.plot(n, [r["mlp"]["rss_gb"] for r in rs], marker=marker, label=f"{fmt}: peak RSS")
        b.plot(n, [r["mlp"]["read_seconds"] / 60 for r in rs], marker=marker, label=f"{fmt}: read + tokenize")
        b.plot(n, [r["mlp"]["epoch_seconds"] / 60 for r in rs], marker=marker, linestyle="--",
               label=f"{fmt}: one epoch (with validation)")
    for fmt, limit in TARGETS["rss_gb"].items():
        a.axhline(limit, color="grey", linestyle=":", linewidth=1)
        a.text(0.02, limit, f" {fmt} limit", va="bottom", fontsize=8, transform=a.get_yaxis_transform())
    a.set(xlabel="training titles (millions)", ylabel="GB", title="peak memory of `titlecat train`", ylim=(0, None))
    b.set(xlabel="training titles (millions)", ylabel="minutes", title="time (2 CPU cores)")
    for ax in (a, b):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / "scale.png", dpi=110)


if __name__ == "__main__":
    main()
