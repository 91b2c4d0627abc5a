"""Measurements shared by the benchmark scripts, so that their figures mean the same thing."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def predict_titles_per_s(clf, titles: list[str], repeats: int = 3) -> float:
    """``Classifier.predict`` throughput on ``titles``: best of ``repeats`` after a warm-up
    (the machine is shared and noisy; the best run is the least disturbed one)."""
    clf.predict(titles[:100])  # warm-up: first-call allocations and thread start-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        clf.predict(titles)
        best = min(best, time.perf_counter() - t)
    return len(titles) / best


def load_seconds(path: str | Path, repeats: int = 3) -> float:
    """``titlecat.load`` of a bundle: best of ``repeats`` (after the first, the files are in the page cache)."""
    import titlecat

    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        titlecat.load(path)
        best = min(best, time.perf_counter() - t)
    return best


def temporary_tracking(tmp: str | Path, experiment: str) -> None:
    """Track into a throwaway SQLite store in ``tmp`` (unless MLFLOW_TRACKING_URI is set), with
    ``experiment``'s artifacts in ``tmp`` too: MLflow puts a SQLite store's artifacts in
    ``./mlruns`` of the working directory by default, where each benchmark run left its model
    bundle (~430 MB for the default MLP) after its database was deleted."""
    if "MLFLOW_TRACKING_URI" in os.environ:
        return
    from mlflow.tracking import MlflowClient

    uri = os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
    MlflowClient(uri).create_experiment(experiment, artifact_location=(Path(tmp) / "mlruns").resolve().as_uri())


def write_results(output: Path, name: str, lines: list[str], minutes: float, n_trainings: int, data: dict) -> None:
    """A validation benchmark's table (``lines`` + how long it took; printed too) to
    ``output/name.md`` and its figures (``data`` + ``minutes``) to ``output/name.json``."""
    text = "\n".join([*lines, "", f"{n_trainings} trainings, {minutes:.1f} minutes on this machine."]) + "\n"
    print("\n" + text)
    output.mkdir(parents=True, exist_ok=True)
    (output / f"{name}.md").write_text(text)
    (output / f"{name}.json").write_text(json.dumps({**data, "minutes": minutes}, indent=2))


def validation_parser(doc: str, models: list[str]) -> argparse.ArgumentParser:
    """The options of every validation benchmark (--data, --splits, --models, --threads, --set,
    --output), described by the first line of ``doc``; a script adds its own."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/meli2019-es"))
    ap.add_argument("--splits", type=int, nargs="+", default=[7, 21])
    ap.add_argument("--models", nargs="+", default=models)
    ap.add_argument("--threads", type=int, default=0, help="torch threads per training (0 = torch's default)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a further setting for every training (e.g. train.epochs=5 for a quick look)")
    ap.add_argument("--output", type=Path, default=RESULTS)
    return ap
