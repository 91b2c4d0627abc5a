"""Is a quantized model's prediction slower?  The default MLP against its ``titlecat quantize`` copies,
timed in alternation.

    python benchmarks/quantize_speed.py [--model DIR] [--rounds 9] [--lock /tmp/titlecat-cpu.lock]

One timing of a fast model on this shared 2-core machine moves by 10-40% (in one comparison run
the MLP and the distilled MLP, the same network, predicted at 55,267 and 99,141 titles/s), more
than the difference asked about.  So the unquantized model and each quantized copy (int8, int4,
product quantization: each decoded at load into an ordinary network of the useful rows) predict
the same titles in turn, ``--rounds`` times, and each round gives each copy's speed as a ratio to
the unquantized model's in that round; the median ratio is the answer (> 1: faster).  The titles
are the training file's (speed only: nothing is scored, the test file is not read); the model is
``--model DIR`` or the default MLP trained here (no refit, no tracking).
Writes benchmarks/results/quantize_speed.md (also printed) and quantize_speed.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import titlecat
from titlecat.tracking import file_lock  # the machine's shared benchmark lock (--lock)
# benchmarks/ is on sys.path when run as a script
from _measure import RESULTS, load_seconds
from titlecat.bundle import directory_bytes
from titlecat.data import read_records

COPIES = [("int8", {"method": "int8"}), ("int4", {"method": "int4"}), ("pq, dsub 2", {"method": "pq", "dsub": 2})]
TITLES = 20_000  # per timing: about 0.2-0.4 s of the MLP's prediction


def seconds(clf, titles: list[str]) -> float:
    t = time.perf_counter()
    clf.predict(titles)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/meli2019-es"))
    ap.add_argument("--model", type=Path, help="a network's bundle (default: train the default MLP here)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--lock", type=Path, help="hold this lock file (flock) while timing")
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    train_file = args.data / "spanish.train.jsonl.gz"
    titles = [r.title for r in read_records(train_file)][:TITLES]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="titlecat-quantize-speed-") as tmp, file_lock(args.lock):
        tmp = Path(tmp)
        source = args.model
        if source is None:
            source = tmp / "mlp"
            titlecat.train(train_file, model="mlp", overrides={"train.refit": False}, output=source, tracking=False)
        paths = {"unquantized": source}
        original = titlecat.load(source)
        for name, spec in COPIES:
            paths[name] = tmp / name.replace(", ", "-").replace(" ", "")
            original.quantize(**spec).save(paths[name])
        models = {name: titlecat.load(path) for name, path in paths.items()}
        for clf in models.values():
            clf.predict(titles[:200])  # warm-up
        times: dict[str, list[float]] = {name: [] for name in models}
        for r in range(args.rounds):
            order = list(models) if r % 2 == 0 else list(models)[::-1]  # neither side always first
            for name in order:
                times[name].append(seconds(models[name], titles))
        rows = []
        for name in models:
            ratios = [b / t for b, t in zip(times["unquantized"], times[name])]
            rows.append({"copy": name, "bundle_mb": directory_bytes(paths[name]) / 1e6,
                         "load_seconds": load_seconds(paths[name]),
                         "median_titles_per_s": len(titles) / statistics.median(times[name]),
                         "best_titles_per_s": len(titles) / min(times[name]),
                         "median_speed_ratio": statistics.median(ratios), "min_speed_ratio": min(ratios),
                         "max_speed_ratio": max(ratios), "seconds": times[name]})
    minutes = (time.perf_counter() - started) / 60
    lines = [f"{source.name if args.model else 'The default MLP (trained here without refit)'} and its quantized "
             f"copies predicting the same {len(titles):,} titles in turn, {args.rounds} rounds; speed ratio = the "
             "unquantized model's seconds / the copy's in the same round (> 1: the copy is faster).", "",
             "| model | bundle MB | load s | median titles/s | best titles/s | speed ratio, median (min–max) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['copy']} | {r['bundle_mb']:.1f} | {r['load_seconds']:.2f} | "
                     f"{r['median_titles_per_s']:,.0f} | {r['best_titles_per_s']:,.0f} | {r['median_speed_ratio']:.2f} ({r['min_speed_ratio']:.2f}–"
                     f"{r['max_speed_ratio']:.2f}) |")
    text = "\n".join([*lines, "", f"{minutes:.1f} minutes on this machine."]) + "\n"
    print("\n" + text)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "quantize_speed.md").write_text(text)
    (args.output / "quantize_speed.json").write_text(json.dumps({"rows": rows, "rounds": args.rounds,
                                                                 "titles": len(titles), "minutes": minutes}, indent=2))


if __name__ == "__main__":
    main()
