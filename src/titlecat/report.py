"""The experiment report (``titlecat report``): Markdown written from an experiment's MLflow runs.

Sections: the training runs (model, key hyperparameters, validation and test balanced
accuracy, training time); the best run of each architecture, chosen on validation;
their loss curves (a PNG beside the Markdown file); the categories of lowest recall
and the category pairs most often confused, with example titles, from the best run's
``category_report.csv`` and ``test_predictions.csv``; the effect of tuning (each
model's best untuned run against its best run from a ``titlecat tune`` config); and the
tuning studies.  Every number is read from MLflow, so running the command again
regenerates the report.

A run's kind comes from its tags (``titlecat.tracking``): a study's run and its trials
are tuning, not trainings; a training is tuned when its config came from ``titlecat tune``.
"""

from __future__ import annotations

import csv
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .config import Config, ConfigError
from .plots import plot_loss_comparison
from .tracking import TAG_KIND, TAG_PARENT, TAG_STUDY, TAG_TUNED, RunReader, RunRecord, public_url

EXAMPLES_PER_PAIR = 2  # example titles shown for each confused pair
TITLE_CHARS = 70  # example titles are cut to this length


@dataclass
class ReportFiles:
    markdown: Path
    plot: Path | None  # the loss-curve PNG (None when no run has a loss history)
    runs: int  # training runs in the report


@dataclass
class Training:
    """A finished training run, with the numbers the report shows."""

    run: RunRecord
    model: str
    tuned: bool
    val: float  # best validation balanced accuracy
    test: float | None  # test balanced accuracy (None: trained without --test)
    seconds: float | None  # training time (the loop, not preprocessing)

    @property
    def label(self) -> str:
        return f"{self.run.name or self.model} `{self.run.run_id[:8]}`"


def trainings(runs: list[RunRecord]) -> list[Training]:
    """The finished training runs: not a study's run, not a trial, with a validation score."""
    out = []
    for r in runs:
        if r.tags.get(TAG_KIND) in ("tune", "trial") or TAG_PARENT in r.tags:
            continue
        if r.status != "FINISHED" or "best_val_balanced_accuracy" not in r.metrics:
            continue
        out.append(Training(r, r.tags.get("model") or r.params.get("model.name", "?"),
                            r.tags.get(TAG_TUNED) == "true", r.metrics["best_val_balanced_accuracy"],
                            r.metrics.get("test_balanced_accuracy"), r.metrics.get("train_seconds")))
    return out


def best_by_model(runs: list[Training]) -> dict[str, Training]:
    """Each model's run with the best validation balanced accuracy (never chosen on test)."""
    best: dict[str, Training] = {}
    for t in runs:
        if t.model not in best or t.val > best[t.model].val:
            best[t.model] = t
    return dict(sorted(best.items()))


# settings that tell two configs of one model apart even when a study did not search them
# (an MLP on TF-IDF from a mean+max pooled one, the wide MLP from the narrow one)
SHAPE_PARAMS = ("model.pooling", "model.embedding_dim", "text.ngram_max", "train.batch_size", "model.members",
                "model.seeds", "train.refit")


def key_params(model: str) -> list[str]:
    """The settings shown per run: ``SHAPE_PARAMS`` and those the model's shipped config
    searches when tuning."""
    try:
        cfg = Config.default(model)
    except ConfigError:
        return []
    flat = cfg.flat()
    return [k for k in SHAPE_PARAMS if k in flat and k not in cfg.search] + list(cfg.search)


def write_report(output: str | Path, experiment: str = "titlecat", n_categories: int = 20, n_pairs: int = 10,
                 reader: RunReader | None = None) -> ReportFiles:
    """Write the report of ``experiment`` to ``output`` (Markdown) and its plot beside it."""
    reader = reader or RunReader()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    runs = reader.runs(experiment)
    trained = trainings(runs)
    best = best_by_model(trained)
    lines = [f"# Experiment report: {experiment}", "",
             f"Written by `titlecat report --experiment {experiment} --output {output}` from the MLflow runs at "
             f"{public_url(reader.uri)} ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC): {len(trained)} finished "
             "training runs.  Balanced accuracy is the mean recall over categories; runs are compared and "
             "chosen on validation, and test is read once per run, at its end.", ""]
    lines += _files_note(trained)
    lines += _runs_section(trained)
    lines += _best_section(best)
    plot = output.with_name(output.stem + "_loss_curves.png")
    plot = _loss_plot(reader, best, plot)
    lines += ["## Loss curves of the best runs", ""]
    lines += [f"![loss curves]({plot.name})", "", "Training loss dashed, validation loss solid, per epoch.", ""] \
        if plot else ["No loss history logged.", ""]
    overall = max((t for t in trained if t.test is not None), key=lambda t: t.val, default=None)
    with tempfile.TemporaryDirectory(prefix="titlecat-report-") as tmp:
        lines += _recall_section(reader, overall, n_categories, Path(tmp))
        lines += _confusion_section(reader, overall, n_pairs, Path(tmp))
    lines += _tuning_section(trained)
    lines += _studies_section(runs)
    output.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return ReportFiles(output, plot, len(trained))


# ---- sections ---------------------------------------------------------------------------


def _files_note(trained: list[Training]) -> list[str]:
    out = []
    for what, key in (("Training", "data.train_file"), ("Test", "data.test_file")):
        files = sorted({t.run.params.get(key, "?") for t in trained} - {"None"})
        if files:
            out.append(f"{what} file{'s' if len(files) > 1 else ''}: " + ", ".join(f"`{f}`" for f in files) + ".")
    if len({t.run.params.get("data.test_file") for t in trained if t.test is not None}) > 1:
        out.append("**The runs were tested on different files: compare test scores within one file only.**")
    return out + [""] if out else []


def _runs_section(trained: list[Training]) -> list[str]:
    lines = ["## Runs", ""]
    if not trained:
        return lines + ["No finished training runs in this experiment.", ""]
    lines += ["| run | model | tuned | key hyperparameters | val. bal. acc. | test bal. acc. | training time "
              "| best epoch |", "|---|---|---|---|---:|---:|---:|---:|"]
    for t in sorted(trained, key=lambda t: (t.model, -t.val)):
        params = ", ".join(f"{k.split('.', 1)[1]}={_value(t.run.params[k])}" for k in key_params(t.model)
                           if k in t.run.params)
        epoch = t.run.metrics.get("best_epoch")
        lines.append(f"| {_cell(t.label)} | {t.model} | {'yes' if t.tuned else 'no'} | {_cell(params)} | "
                     f"{t.val:.4f} | {_num(t.test)} | {_duration(t.seconds)} | {'' if epoch is None else int(epoch)} |")
    return lines + [""]


def _best_section(best: dict[str, Training]) -> list[str]:
    lines = ["## Best run per architecture", "", "Chosen on validation balanced accuracy.", ""]
    if not best:
        return lines[:2] + ["No finished training runs.", ""]
    lines += ["| model | run | tuned | val. bal. acc. | test bal. acc. | training time | parameters |",
              "|---|---|---|---:|---:|---:|---:|"]
    for model, t in best.items():
        n = t.run.params.get("model.parameters", "")
        lines.append(f"| {model} | {_cell(t.label)} | {'yes' if t.tuned else 'no'} | {t.val:.4f} | {_num(t.test)} | "
                     f"{_duration(t.seconds)} | {f'{int(n):,}' if n.isdigit() else ''} |")
    return lines + [""]


def _loss_plot(reader: RunReader, best: dict[str, Training], path: Path) -> Path | None:
    curves = {f"{m} ({t.run.run_id[:8]})": (reader.history(t.run.run_id, "train_loss"),
                                            reader.history(t.run.run_id, "val_loss")) for m, t in best.items()}
    curves = {k: v for k, v in curves.items() if v[0] or v[1]}
    return plot_loss_comparison(curves, path, "loss of the best run per architecture") if curves else None


def _recall_section(reader: RunReader, run: Training | None, n: int, tmp: Path) -> list[str]:
    lines = [f"## The {n} categories with the lowest recall", ""]
    rows = _artifact_csv(reader, run, "category_report.csv", tmp)
    if rows is None:
        return lines + [_missing_artifact(run, "category_report.csv"), ""]
    rows = [r for r in rows if int(r["support"]) > 0]
    rows.sort(key=lambda r: (float(r["recall"]), -int(r["support"]), r["category"]))
    lines += [f"On test, of the best run overall ({_cell(run.label)}, {run.model}).", "",
              "| category | recall | precision | F1 | test titles |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {_cell(r['category'])} | {float(r['recall']):.4f} | {float(r['precision']):.4f} | "
              f"{float(r['f1']):.4f} | {r['support']} |" for r in rows[:n]]
    return lines + [""]


def _confusion_section(reader: RunReader, run: Training | None, n: int, tmp: Path) -> list[str]:
    lines = ["## Category pairs most often confused", ""]
    rows = _artifact_csv(reader, run, "test_predictions.csv", tmp)
    if rows is None:
        return lines + [_missing_artifact(run, "test_predictions.csv"), ""]
    per_category = Counter(r["category"] for r in rows)
    pairs = Counter((r["category"], r["predicted"]) for r in rows if r["category"] != r["predicted"])
    examples: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        pair = (r["category"], r["predicted"])
        if pair in pairs and len(examples.setdefault(pair, [])) < EXAMPLES_PER_PAIR:
            examples[pair].append(r["title"])
    lines += [f"On test, of the best run overall ({_cell(run.label)}, {run.model}): {sum(pairs.values())} of "
              f"{len(rows)} titles misclassified.", ""]
    if not pairs:
        return lines + ["No title was misclassified.", ""]
    lines += ["| category | predicted as | titles | share of the category | examples |", "|---|---|---:|---:|---|"]
    for (true, pred), count in pairs.most_common(n):
        shown = "; ".join(f"“{_cell(_cut(t))}”" for t in examples[(true, pred)])
        lines.append(f"| {_cell(true)} | {_cell(pred)} | {count} | {count / per_category[true]:.1%} | {shown} |")
    return lines + [""]


def _tuning_section(trained: list[Training]) -> list[str]:
    lines = ["## Effect of tuning", "",
             "Per model, the best run (on validation) of a config from `titlecat tune` against the best run of "
             "an untuned config (one without a `tuned_from` section, e.g. `configs/untuned/`, possibly with `--set`).",
             ""]
    rows, untuned_only = [], []
    for model in sorted({t.model for t in trained}):
        default = best_by_model([t for t in trained if t.model == model and not t.tuned]).get(model)
        tuned = best_by_model([t for t in trained if t.model == model and t.tuned]).get(model)
        if default and tuned:
            rows.append(f"| {model} | {_cell(default.label)} | {_cell(tuned.label)} | {default.val:.4f} | "
                        f"{tuned.val:.4f} | {tuned.val - default.val:+.4f} | {_num(default.test)} | "
                        f"{_num(tuned.test)} | {_delta(default.test, tuned.test)} |")
        else:
            untuned_only.append(model)
    if rows:
        lines += ["| model | untuned run | tuned run | val. untuned | val. tuned | Δ val. | test untuned | "
                  "test tuned | Δ test |", "|---|---|---|---:|---:|---:|---:|---:|---:|", *rows, ""]
    if untuned_only:
        lines += [f"No untuned and tuned runs to compare for: {', '.join(untuned_only)}.", ""]
    return lines


def _studies_section(runs: list[RunRecord]) -> list[str]:
    studies = [r for r in runs if r.tags.get(TAG_KIND) == "tune"]
    if not studies:
        return []
    trials = Counter(r.tags.get(TAG_PARENT) for r in runs if r.tags.get(TAG_KIND) == "trial")
    lines = ["## Tuning studies", "", "Each study is one MLflow run with its trials nested inside (objective: "
             "validation balanced accuracy; the test file is never read).", "",
             "| study | model | trials logged | complete | pruned | best val. bal. acc. | best trial |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in studies:
        m = r.metrics
        lines.append(f"| {_cell(r.tags.get(TAG_STUDY, r.name))} | {r.tags.get('model', '?')} | {trials[r.run_id]} | "
                     f"{_int(m.get('trials_complete'))} | {_int(m.get('trials_pruned'))} | "
                     f"{_num(m.get('best_val_balanced_accuracy'))} | {_int(m.get('best_trial'))} |")
    return lines + [""]


# ---- helpers ----------------------------------------------------------------------------


def _artifact_csv(reader: RunReader, run: Training | None, name: str, tmp: Path) -> list[dict] | None:
    if run is None:
        return None
    path = reader.artifact(run.run.run_id, name, tmp / run.run.run_id)
    if path is None or not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _missing_artifact(run: Training | None, name: str) -> str:
    if run is None:
        return "No finished run was evaluated on a test file."
    return f"The best run ({_cell(run.label)}) has no `{name}` artifact (trained before titlecat logged it)."


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _cut(title: str) -> str:
    return title if len(title) <= TITLE_CHARS else title[: TITLE_CHARS - 1] + "…"


def _value(raw: str) -> str:
    """A param as shown: floats to 4 significant digits, everything else as logged."""
    try:
        return f"{float(raw):.4g}" if "." in raw or "e" in raw.lower() else raw
    except ValueError:
        return raw


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.4f}"


def _int(x: float | None) -> str:
    return "" if x is None else str(int(x))


def _delta(a: float | None, b: float | None) -> str:
    return "" if a is None or b is None else f"{b - a:+.4f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"

