"""Hyperparameter search (``titlecat tune``): Optuna over a config's ``search`` section.

Each trial draws values for the settings under ``search`` (``config.SearchParam``),
trains with them (``recipe.train``, no test file: the test set is never read while
tuning) and returns the best epoch's validation balanced accuracy.  After every
epoch a trial reports its score to the study; Optuna's ``MedianPruner`` stops a
trial whose score is below the median of earlier trials at the same epoch.

Several processes, or machines, can work on one study: they share Optuna's database
storage (``--storage``: a SQLite file on one machine, a PostgreSQL URL across machines)
and the study's name, and each asks the study for its next trial.  The process that
creates the study also creates the study's MLflow run and records its id in the study;
every worker nests its trials under that run (MLflow's ``mlflow.parentRunId``), so a
study is one run with all its trials inside, however many workers ran them.

When a worker is done, it writes the study's best trial so far as a complete config
(``tuned_from`` says which study and trial) that ``titlecat train --config`` takes as is.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Config, ConfigError, SearchParam
from .recipe import resolve_config
from .recipe import train as train_model  # `train` is the training file here
from .tracking import (TAG_KIND, TAG_STUDY, TAG_TRIAL, RunLogger, TrackingError, make_logger, public_url,
                       sqlite_setup_lock)

PRUNER_STARTUP_TRIALS = 5  # trials that run to the end before any is pruned (the median needs company)
# a trial is never pruned in its first epochs: their scores mostly rank learning rates and
# batch sizes (a slow start is not a poor end; measured: epoch-1 pruning dropped trials
# that were on their way to the study's best)
PRUNER_WARMUP_EPOCHS = 2
SQLITE_TIMEOUT_S = 60  # how long a worker waits for another one's write to the shared SQLite file
HEARTBEAT_S = 60  # a trial of a killed worker is marked failed after a few missed heartbeats
PARENT_WAIT_S = 60  # how long a worker waits for the study's creator to record its MLflow run
# settings that may differ between the workers of one study (machines differ, results do not)
PER_WORKER = ("train.device", "train.num_threads", "train.eval_batch_size", "train.checkpoint_minutes")


@dataclass
class TuneResult:
    """What a tuning worker leaves: the study's best config (also written to ``output``) and counts."""

    config: Config  # the best trial's full config, ``tuned_from`` set
    value: float  # its validation balanced accuracy
    trial: int  # its number in the study
    complete: int  # trials of the study that ran to the end
    pruned: int  # trials of the study stopped early
    study: str
    storage: str  # password hidden
    output: Path
    mlflow_parent_run_id: str | None


def default_pruner():
    """Median pruning from epoch ``PRUNER_WARMUP_EPOCHS + 1`` on, once ``PRUNER_STARTUP_TRIALS`` have finished."""
    import optuna

    # trials report 1-based epochs as steps, and Optuna prunes at any step >= n_warmup_steps
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS,
                                       n_warmup_steps=PRUNER_WARMUP_EPOCHS + 1)


def default_storage(output: str | Path) -> str:
    """``sqlite:///<folder of output>/optuna.db``: a study beside the config it produces."""
    return f"sqlite:///{Path(output).resolve().parent / 'optuna.db'}"


def suggest(trial, space: dict[str, SearchParam]) -> dict[str, Any]:
    """One value per searched setting, drawn by ``trial`` (Optuna) within ``space``."""
    values: dict[str, Any] = {}
    for key, p in space.items():
        if p.type == "float":
            values[key] = trial.suggest_float(key, p.low, p.high, log=p.log, step=p.step)
        elif p.type == "int":
            values[key] = trial.suggest_int(key, int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
        elif all(c is None or isinstance(c, (bool, int, float, str)) for c in p.choices):
            values[key] = trial.suggest_categorical(key, p.choices)
        else:  # Optuna's choices are scalars; lists such as hidden_sizes travel as JSON text
            values[key] = json.loads(trial.suggest_categorical(key, [json.dumps(c) for c in p.choices]))
    return values


def run_study(
    train: str | Path,
    validation: str | Path | None = None,
    *,
    model: str | None = None,
    config: Config | str | Path | None = None,
    overrides: list[str] | dict | None = None,
    trials: int = 20,
    timeout: float | None = None,
    output: str | Path = "best.yaml",
    storage: str | None = None,
    study_name: str | None = None,
    experiment: str = "titlecat",
    tracking: bool = True,
    cache_dir: str | Path | None = None,
    seed: int | None = None,
    pruner=None,
    command: str | None = None,
    repeats: int = 1,
) -> TuneResult:
    """Run ``trials`` trials (fewer if ``timeout`` seconds pass) of a study, then write its best config.

    ``trials`` counts this process's trials; other workers on the same ``storage`` and
    ``study_name`` add theirs.  ``storage`` defaults to ``default_storage(output)``,
    ``study_name`` to ``titlecat-<model>``; joining an existing study needs the same
    settings and search space (a difference is a ``ConfigError`` naming the setting).
    A setting given in ``overrides`` is fixed for every trial, searched or not.
    ``seed`` seeds the sampler (give each worker its own, or none); ``pruner`` replaces
    the default ``MedianPruner``; ``command`` is written into the config's header.

    ``repeats`` > 1 trains every trial that many times -- with other training seeds and,
    when validation is carved from ``train``, other stratified splits -- and scores it by
    the mean.  One training's score moves by several tenths of a point with the seed and
    the split alone (measured on meli2019-es), so the best of many single trainings is
    partly the luckiest; the mean of a few is a fairer ranking, at ``repeats`` times the
    cost.  Pruning looks at the first repeat, so a poor trial still stops early.
    """
    import optuna

    base = resolve_config(model, config, overrides)
    fixed = set(overrides) if isinstance(overrides, dict) else {o.split("=", 1)[0].strip() for o in overrides or []}
    base = base.model_copy(update={"search": {k: v for k, v in base.search.items() if k not in fixed}})
    if not base.search:
        raise ConfigError(f"the {base.model.name} config has no 'search' section: nothing to tune (add one, "
                          "as in configs/mlp.yaml)")
    if trials < 1:
        raise ValueError(f"--trials must be >= 1, got {trials}")
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {repeats}")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    url = storage or default_storage(output)
    name = study_name or f"titlecat-{base.model.name}"
    sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)  # constant liar: workers spread out
    pruner = pruner or default_pruner()
    files = {"tune.train_file": str(train), "tune.validation": str(validation) if validation else
             f"stratified {base.data.val_fraction:g} of {train} (seed {base.data.split_seed})",
             "tune.repeats": str(repeats)}
    study, parent = _open_study(url, name, base, sampler, pruner, experiment, tracking, files, repeats)
    parent_id = study.user_attrs.get("mlflow_parent_run_id") or None

    def objective(trial) -> float:
        return _run_trial(trial, base, train, validation, name, parent_id, experiment, tracking, cache_dir, files,
                          repeats)

    status = "FAILED"
    try:
        study.optimize(objective, n_trials=trials, timeout=timeout, gc_after_trial=True)
        # the guard MLflow's SQLite file has, for Optuna's: on one machine, the last worker to write
        # has seen every trial
        with sqlite_setup_lock(url):
            result = _write_best(study, base, url, name, output, command, parent_id)
        status = "FINISHED"
    finally:
        if parent is not None:  # this worker created the study's run: it stays open while the worker runs
            parent.close(status)
    _summarise(result, experiment, tracking)
    return result


# ---- the study and its MLflow run ------------------------------------------------------


def _signature(cfg: Config, repeats: int = 1) -> dict[str, str]:
    """What all workers of a study must share: every setting (bar ``PER_WORKER``), the space, the repeats."""
    out = {k: v for k, v in cfg.flat().items() if k not in PER_WORKER}
    if repeats != 1:  # (a study of single trainings, as before repeats existed, records none)
        out["tune.repeats"] = str(repeats)
    out.update({f"search.{k}": json.dumps(v.model_dump(mode="json")) for k, v in cfg.search.items()})
    return out


def _storage(url: str):
    import optuna

    kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if url.startswith("sqlite") else {}
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna, and we want them
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S)
    except Exception as e:  # noqa: BLE001  (a bad URL, an unreachable server, a missing driver)
        raise ValueError(f"--storage {public_url(url)}: cannot open the Optuna storage "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def _open_study(url: str, name: str, base: Config, sampler, pruner, experiment: str, tracking: bool,
                files: dict[str, str], repeats: int = 1):
    """Create the study (and its MLflow run) or join it: ``(study, the run's logger if created here)``.

    On SQLite a file lock makes creating the tables, the study and its MLflow run one step
    that a second worker waits for; elsewhere the database's unique study name decides who
    creates, and the others wait for the run id to appear in the study.
    """
    import optuna

    with sqlite_setup_lock(url):
        storage = _storage(url)
        parent = None
        try:
            study = optuna.create_study(storage=storage, study_name=name, direction="maximize", sampler=sampler,
                                        pruner=pruner)
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        else:
            try:
                parent = make_logger(tracking, experiment, f"tune {name}")
            except TrackingError:
                optuna.delete_study(study_name=name, storage=storage)  # not half made: a rerun starts it afresh
                raise
            space = {f"search.{k}": json.dumps(v.model_dump(mode="json")) for k, v in base.search.items()}
            parent.log_params({**base.flat(), **files, "tune.study": name, "tune.storage": public_url(url), **space})
            parent.set_tags({"model": base.model.name, TAG_KIND: "tune", TAG_STUDY: name})
            study.set_user_attr("mlflow_parent_run_id", parent.run_id or "")
            study.set_user_attr("settings", _signature(base, repeats))  # last: its presence says the study is ready
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ConfigError(f"study {name!r} at {public_url(url)} minimises; titlecat maximises validation "
                          "balanced accuracy: choose another --study-name")
    deadline = time.monotonic() + PARENT_WAIT_S
    while "settings" not in study.user_attrs:  # another machine is creating the study right now
        if time.monotonic() > deadline:
            raise ConfigError(f"study {name!r} at {public_url(url)} was not made by titlecat tune (no settings "
                              "recorded after waiting); choose another --study-name")
        time.sleep(1.0)
    _check_same(study.user_attrs["settings"], _signature(base, repeats), name)
    return study, parent


def _check_same(theirs: dict[str, str], ours: dict[str, str], name: str) -> None:
    diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    if diff:
        shown = "; ".join(f"{k}: study {theirs.get(k, '(unset)')}, here {ours.get(k, '(unset)')}" for k in diff[:5])
        more = "; ..." if len(diff) > 5 else ""
        raise ConfigError(f"study {name!r} was started with other settings ({shown}{more}); use the same config "
                          "and --set, or another --study-name")


# ---- one trial -------------------------------------------------------------------------


def _run_trial(trial, base: Config, train, validation, study: str, parent_id: str | None, experiment: str,
               tracking: bool, cache_dir, files: dict[str, str], repeats: int = 1) -> float:
    """Train one configuration drawn by ``trial`` (``repeats`` times); a nested MLflow run records it."""
    import optuna

    values = suggest(trial, base.search)
    trial.set_user_attr("overrides", values)
    cfg = base.with_overrides(values)
    run: RunLogger = make_logger(tracking, experiment, f"{study} trial {trial.number}", parent_run_id=parent_id)
    run.log_params({**cfg.flat(), **files})
    run.set_tags({"model": cfg.model.name, TAG_KIND: "trial", TAG_STUDY: study, TAG_TRIAL: str(trial.number)})
    logged: set[int] = set()

    def on_epoch(epoch: int, metrics: dict) -> None:  # the first repeat: curves, reports, pruning
        run.log_metrics(metrics, step=epoch)
        logged.add(epoch)
        trial.report(metrics["val_balanced_accuracy"], epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"epoch {epoch}: validation balanced accuracy "
                                     f"{metrics['val_balanced_accuracy']:.4f} is below the median")

    status = "FAILED"
    try:
        scores = []
        for r in range(repeats):
            # repeat r: training seed + r and, on a carved split, split seed + r (repeat 0: the config's own),
            # never refitted: a trial is scored on validation only, which a refit (train.refit) cannot
            # change, so it would only double the time; the written config keeps the base's refit setting
            moved = {"train.seed": cfg.train.seed + r, "train.refit": False}
            if validation is None:
                moved["data.split_seed"] = cfg.data.split_seed + r
            clf = train_model(train, None, validation, config=cfg.with_overrides(moved),
                              tracking=False, cache_dir=cache_dir, on_epoch=on_epoch if r == 0 else None)
            if r == 0:
                first = clf.info
                for h in clf.info.history:  # models without epochs (tfidf) report their one fit here
                    if h["epoch"] not in logged:
                        run.log_metrics({k: v for k, v in h.items() if k != "epoch"}, step=h["epoch"])
            scores.append(clf.info.best_val_balanced_accuracy)
            if repeats > 1:
                run.log_metrics({"repeat_val_balanced_accuracy": scores[-1]}, step=r)
        value = sum(scores) / len(scores)
        trial.set_user_attr("repeat_values", scores)
        run.log_metrics({"best_val_balanced_accuracy": value, "best_epoch": first.best_epoch,
                         "train_seconds": first.train_seconds})
        run.set_tags({"titlecat.trial_state": "complete"})
        status = "FINISHED"
        return value
    except optuna.TrialPruned:
        run.set_tags({"titlecat.trial_state": "pruned"})
        status = "KILLED"  # MLflow's word for a run stopped before its end
        raise
    finally:
        run.close(status)


# ---- the result ------------------------------------------------------------------------


def _trial_counts(study) -> tuple[int, int]:
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    return states.count(TrialState.COMPLETE), states.count(TrialState.PRUNED)


def _write_best(study, base: Config, url: str, name: str, output: Path, command: str | None,
                parent_id: str | None) -> TuneResult:
    """Write the study's best trial as a complete config file headed by how to use it and where it came from."""
    try:
        best = study.best_trial
    except ValueError:
        raise ValueError(f"study {name!r}: no trial has finished yet (all pruned or failed), so there is no "
                         "best config to write; run more trials") from None
    complete, pruned = _trial_counts(study)
    values = best.user_attrs["overrides"]
    data = base.with_overrides(values).to_dict()
    data["tuned_from"] = {"study": name, "storage": public_url(url), "trial": best.number,
                          "val_balanced_accuracy": round(float(best.value), 6), "trials": complete + pruned,
                          "mlflow_parent_run_id": parent_id}
    repeat_values = best.user_attrs.get("repeat_values") or []
    if len(repeat_values) > 1:
        data["tuned_from"]["repeat_val_balanced_accuracy"] = [round(float(v), 6) for v in repeat_values]
    cfg = Config.from_dict(data, source=f"study {name} trial {best.number}")
    header = [
        f"# titlecat train --config {output} --train FILE --test FILE --output runs/{cfg.model.name}-tuned",
        *([f"# Written by: {command}"] if command else []),
        f"# The best of {complete + pruned} trials ({complete} complete, {pruned} pruned) of Optuna study "
        f"{name!r} at {public_url(url)}:",
        f"# trial {best.number}, validation balanced accuracy {best.value:.4f}"
        + (f" (mean of {len(repeat_values)} trainings: --repeats)" if len(repeat_values) > 1 else "")
        + ", with "
        + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={json.dumps(v)}" for k, v in values.items())
        + ".",
    ]
    text = "\n".join(header) + "\n" + cfg.to_yaml()
    # written whole or not at all: workers of one study may write the same file as they finish
    fd, tmp = tempfile.mkstemp(prefix=output.name + ".", dir=output.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, output)
    return TuneResult(cfg, float(best.value), best.number, complete, pruned, name, public_url(url), output, parent_id)


def _summarise(result: TuneResult, experiment: str, tracking: bool) -> None:
    """The study's MLflow run gets the best score so far and the config; best effort (the file is written)."""
    if not (tracking and result.mlflow_parent_run_id):
        return
    try:
        run = make_logger(True, experiment, run_id=result.mlflow_parent_run_id)
    except TrackingError as e:
        print(f"titlecat: warning: could not update the study's MLflow run: {e}", file=sys.stderr)
        return
    run.log_metrics({"best_val_balanced_accuracy": result.value, "best_trial": result.trial,
                     "trials_complete": result.complete, "trials_pruned": result.pruned})
    run.log_artifact(result.output, "best_config")
    run.close("FINISHED")


def command_line(argv: list[str]) -> str:
    """``titlecat tune ...`` as typed, with a storage password hidden."""
    shown, hide = [], False
    for a in argv:
        if hide or a.startswith("--storage="):
            a = public_url(a) if hide else "--storage=" + public_url(a.split("=", 1)[1])
        hide = a == "--storage"
        shown.append(a)
    return "titlecat " + shlex.join(shown)
