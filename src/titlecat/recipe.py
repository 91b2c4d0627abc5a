"""The training recipe: ``titlecat.train``, for every kind of model, read top to bottom.

    resolve config -> build -> read data -> split -> track -> fit -> refit -> test -> save -> log -> register

The model is found in the registry by ``model.name`` and used only through the model
protocol (``titlecat.models.protocol``): nothing here asks which kind of model it trains.
An ensemble is no exception: its ``fit`` trains its members through this same recipe
(``FitRun.train_member``), each a nested run of its own.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from . import registry
from .bundle import check_output_dir, utc_now
from .cache import tokenize_file
from .checkpoint import CHECKPOINT_DIR, Checkpoints, check_resumable, read_checkpoint, run_file
from .classifier import Classifier, HeldOut, RunInfo, wrap
from .config import PACKAGE_CONFIGS, Config, ConfigError, DistillConfig
from .corpus import Corpus
from .data import DataError, read_records
from .dataset import (Rows, Split, categories_per_language, encode_labels, fit_labels, labelled_rows, rows_digest,
                      shared_titles, split_corpus, title_keys, value_counts)
from .distill import Teacher
from .loop import seed_everything
from .models.protocol import FitRun, Model
from .plots import plot_loss_curves
from .tracking import NullLogger, RunLogger, make_logger, run_url_hint, tuning_tags
from .vocab import LabelEncoder


def resolve_config(model: str | None = None, config: Config | str | Path | None = None,
                   overrides: list[str] | dict | None = None, student: bool = False) -> Config:
    """The run's config: a ``Config``, a YAML path, or the shipped default of ``model`` -- for a
    ``student`` (a training with a teacher), its shipped student config
    ``configs/<model>-distill.yaml`` where there is one; then overrides."""
    shipped_student = PACKAGE_CONFIGS / f"{model or 'mlp'}-distill.yaml"
    if isinstance(config, Config):
        cfg = config
    elif config is not None:
        cfg = Config.from_yaml(config)
    elif student and shipped_student.is_file():
        cfg = Config.from_yaml(shipped_student)
    else:
        cfg = Config.default(model or "mlp")
    if model is not None and cfg.model.name != model:
        raise ConfigError(f"--model {model} but the config's model.name is {cfg.model.name!r}")
    return cfg.with_overrides(overrides) if overrides else cfg


def train(
    train: str | Path | None,
    test: str | Path | None = None,
    validation: str | Path | None = None,
    *,
    model: str | None = None,
    config: Config | str | Path | None = None,
    overrides: list[str] | dict | None = None,
    output: str | Path | None = None,
    tracking: bool = True,
    experiment: str = "titlecat",
    run_name: str | None = None,
    cache_dir: str | Path | None = None,
    resume: bool = False,
    on_epoch: Callable[[int, dict], None] | None = None,
    parent_run_id: str | None = None,
    teacher: str | Path | Classifier | None = None,
    register: str | None = None,
    aliases: list[str] | tuple[str, ...] = (),
) -> Classifier:
    """Train on ``train`` (validation carved from it unless ``validation`` is given),
    pick the best epoch on validation, then evaluate once on ``test``.

    Everything is logged to MLflow unless ``tracking=False``; ``output`` receives
    the model bundle.  Returns the trained ``Classifier``; ``clf.info`` (a ``RunInfo``) holds
    the run's facts and scores.  With ``output``, training is checkpointed in
    ``output/checkpoint`` (``train.checkpoint_minutes``); ``resume=True`` continues the
    interrupted training found there, in the same MLflow run, with the same config and
    files (files not given are the ones it started with; a different setting or file is an
    error naming it).  ``on_epoch(epoch, metrics)`` is called after each epoch and may raise
    to stop the training (``titlecat tune``).  ``parent_run_id`` nests the MLflow run under
    that run (an ensemble's members).

    A tracked run logs the model as the MLflow model ``model``: a pyfunc "model from code" that
    carries the bundle (``titlecat.mlflow_model``).  ``register="NAME"`` then registers it as a new
    version of ``NAME`` in the MLflow Model Registry, with ``aliases`` (e.g. ``["champion"]``)
    pointing at it; ``clf.info.registered`` says which version.

    ``model="ensemble"`` (``configs/ensemble.yaml``) trains every member this way on the same
    split, and returns an ``Ensemble`` combining them.

    ``teacher`` (a bundle directory or a ``Classifier``: distillation, ``titlecat distill``): the
    network learns from the teacher's logits of its training rows and of a transfer set made
    from them, as the config's ``distill`` section says (its defaults if it has none; with no
    config given, the shipped ``configs/<model>-distill.yaml`` where there is one); the first
    training and the refit alike.  Everything else is as above, and the student an ordinary model.
    """
    # -- resolve the config (a resumed run: the interrupted run's config and files) --
    saved = read_checkpoint(output) if resume else None
    if saved is not None:
        train, test, validation, teacher = (given or saved["call"].get(name) for name, given in
                                            (("train", train), ("test", test), ("validation", validation),
                                             ("teacher", teacher)))
        if config is None:
            config = Config.from_dict(saved["config"], source=f"{output}/{CHECKPOINT_DIR}")
    if train is None:
        raise ValueError("train needs a training file (or resume=True with the output of an interrupted run)")
    if register is not None and not tracking:
        raise ValueError("--register NAME registers the run's MLflow model: it needs tracking (drop --no-tracking)")
    if aliases and register is None:
        raise ValueError("--alias points a registered model's alias at the new version: it needs --register NAME")
    cfg = resolve_config(model, config, overrides, student=teacher is not None)
    if teacher is not None and cfg.distill is None:
        cfg = cfg.model_copy(update={"distill": DistillConfig()})
    if cfg.distill is not None and teacher is None:
        raise ConfigError("distill: this config learns from a teacher; give one (--teacher DIR), or drop the "
                          "config's distill section")
    call = {"train": run_file(train), "test": run_file(test), "validation": run_file(validation),
            # a teacher bundle as a file is recorded (a classifier object has no path to resume from)
            "teacher": run_file(teacher) if isinstance(teacher, (str, Path)) else None}
    if saved is not None:
        check_resumable(saved, cfg.flat(), call)

    # -- build: the untrained model; its settings are checked before any data is read --
    net: Model = registry.kind(cfg.model.name).new(cfg)
    if output is not None:
        check_output_dir(output, checkpoint_ok=resume)  # before hours of training, not after
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    t_start = time.perf_counter()

    # -- read and split: labels from the training rows only; validation rows unweighted --
    split = split_corpus(train, validation, net.text_config, cfg.data, cache_dir)
    labels = fit_labels(split.train)
    if len(labels) < 2:  # a one-class model trains to loss 0 and validation 1.0: nothing learned
        raise DataError(f"{train}: every training row has the category {labels.classes_[0]!r}; "
                        "a classifier needs at least two categories")
    train_rows = labelled_rows(split.train, labels, cfg.data.unreliable_weight)
    y_val, unseen = encode_labels(split.validation, labels)
    val_rows = Rows(split.validation, y_val, labels)
    # -- distillation: the teacher's logits of the training rows and of their transfer set --
    distiller, t_teacher = None, time.perf_counter()
    if teacher is not None:
        distiller = Teacher.load(teacher, labels, net.text_config, cache_dir)
        train_rows = distiller.rows(train_rows, cfg.distill, cfg.train.seed, net.text_config.max_tokens)
    teacher_seconds = time.perf_counter() - t_teacher
    n_refit = split.n_refit_rows()
    do_refit = cfg.train.refit and (not cfg.train.refit_max_rows or n_refit <= cfg.train.refit_max_rows)
    if cfg.train.refit and not do_refit:
        print(f"titlecat: no refit: {n_refit:,} rows are more than train.refit_max_rows "
              f"({cfg.train.refit_max_rows:,}); the validated model is kept", file=sys.stderr)
    if do_refit and unseen:  # said now, not after the first training
        raise ConfigError(f"train.refit: {len(unseen)} categories of the validation rows have no training row "
                          f"({', '.join(unseen[:5])}); a refit would learn categories the validated model "
                          "never scored. Drop those rows from the validation file, or set train.refit=false")
    read_seconds = time.perf_counter() - t_start - teacher_seconds

    # -- tracking: params once, up front --
    data_facts = {"n_train": len(train_rows), "n_val": len(val_rows), "categories": list(labels.classes_)}
    if saved is not None:
        check_resumable(saved, cfg.flat(), call, data_facts)
    logger = (make_logger(tracking and saved["tracking"], run_id=saved["run_id"], uri=saved["tracking_uri"])
              if saved is not None else make_logger(tracking, experiment, run_name or cfg.model.name,
                                                    parent_run_id=parent_run_id))
    logger.log_params({**cfg.flat(), **_data_params(train, test, split, train_rows, val_rows, unseen)})
    logger.set_tags({"model": cfg.model.name, **tuning_tags(cfg.tuned_from),
                     **({"teacher": str(call["teacher"])} if teacher is not None else {})})
    for note in split.notes:  # label variants, titles shared with validation: said, logged, not fatal
        print(f"titlecat: warning: {note}", file=sys.stderr)
    for corpus, path in ((split.whole, train), (None if split.carved else split.validation, validation)):
        if corpus is not None and corpus.skipped:  # with data.skip_bad_rows; the first few named
            print(f"titlecat: skipped {corpus.skipped} bad rows in {path}: " + "; ".join(corpus.bad_rows)
                  + ("; ..." if corpus.skipped > len(corpus.bad_rows) else ""), file=sys.stderr)
    checkpoints = None if output is None else Checkpoints(
        Path(output) / CHECKPOINT_DIR, cfg.train.checkpoint_minutes,
        meta={"config": cfg.to_dict(), "config_flat": cfg.flat(), "call": call, "data": data_facts,
              "tracking": logger.run_id is not None, "run_id": logger.run_id,
              "tracking_uri": getattr(logger, "uri", None)})

    train_member = _member_trainer(train, test, validation, tracking, experiment, run_name or cfg.model.name,
                                   cache_dir, logger.run_id)
    status = "FAILED"
    try:
        # -- fit: learn on the training rows, choose on the validation rows --
        seed_everything(cfg.train.seed)
        result = net.fit(train_rows, val_rows, FitRun(logger, checkpoints, on_epoch, train_member=train_member))
        info = RunInfo(mlflow_run_id=logger.run_id, best_epoch=result.best_epoch,
                       best_val_balanced_accuracy=result.best_val_balanced_accuracy,
                       val_accuracy=result.val_scores.get("accuracy"), history=result.history,
                       n_train=len(train_rows), n_val=len(val_rows), read_seconds=read_seconds,
                       val_shared_titles=split.val_shared,
                       # (a carved split's validation rows are a subset: no time of their own)
                       tokenize_seconds=sum(c.seconds.get("tokenize", 0.0) for c in (split.whole, split.validation)),
                       prep_seconds=read_seconds + result.prep_seconds,
                       train_seconds=result.train_seconds, members=result.members,
                       teacher=None if teacher is None else call["teacher"] or "a Classifier",
                       teacher_seconds=teacher_seconds if teacher is not None else None)
        logger.log_metrics({k: v for k, v in {"best_epoch": result.best_epoch,
                                              "best_val_balanced_accuracy": result.best_val_balanced_accuracy,
                                              "train_seconds": result.train_seconds,
                                              "preprocess_seconds": info.prep_seconds,
                                              "teacher_seconds": info.teacher_seconds}.items() if v is not None})

        # -- refit: the chosen epochs again, on every row; the validated model's scores are kept --
        held_out = None
        if do_refit:
            held_out = HeldOut(net.logits(val_rows.corpus), val_rows.y, rows_digest(val_rows.corpus, val_rows.y))
            everything = split.refit_rows()
            epochs = result.best_epoch if result.best_epochs is None else result.best_epochs
            epochs = int(epochs) if float(epochs).is_integer() else round(epochs, 4)  # 3, not 3.0
            net, seconds = refit(cfg, everything, labels, epochs, logger, distiller)
            info.refit_epochs, info.n_refit, info.refit_seconds = epochs, len(everything), seconds
            info.refitted = True
            info.train_seconds += seconds
            logger.log_params({"data.n_refit": len(everything)})
            logger.log_metrics({"refit_epochs": epochs, "refit_seconds": seconds})
        clf = wrap(net, info, held_out)
        info.parameters = clf.num_parameters()
        logger.log_params({"model.parameters": info.parameters})  # the saved model's (a refit's vocabulary is larger)

        # -- test once, save the bundle, log the artifacts and the MLflow model --
        info.trained_at = utc_now()
        finish_run(clf, test, output, result.history, logger, checkpoints, train,
                   train_keys=title_keys(split.whole))
        info.total_seconds = time.perf_counter() - t_start
        info.tracking = run_url_hint(logger)
        status = "FINISHED"
    finally:
        logger.close(status)

    # -- register: a new version of the MLflow model in the Model Registry --
    if register is not None:
        version = logger.register(register, aliases)
        info.registered = f"models:/{register}/{version}"
    return clf


def _member_trainer(train_file, test, validation, tracking: bool, experiment: str, run_name: str, cache_dir,
                    parent_run_id: str | None) -> Callable[[Config, str], Classifier]:
    """``FitRun.train_member``: a sub-model (an ensemble's member) trained by this recipe on the same
    files, its run nested under ``parent_run_id``."""
    def train_member(member_cfg: Config, name: str) -> Classifier:
        return train(train_file, test, validation, config=member_cfg, tracking=tracking, experiment=experiment,
                     run_name=f"{run_name}/{name}", cache_dir=cache_dir, parent_run_id=parent_run_id)

    return train_member


def refit(cfg: Config, corpus: Corpus, labels: LabelEncoder, epochs: float | None,
          logger: RunLogger | None = None, teacher: Teacher | None = None) -> tuple[Model, float]:
    """``train.refit``: ``cfg`` trained again from its seed on ``corpus`` (training and validation
    rows) for the ``epochs`` validation chose, the learning-rate schedule unchanged (the model's
    own vocabulary and idf see every row too; a student, ``teacher``'s logits of every row and a
    transfer set made from all of them).  Returns the model and the seconds it took."""
    t0 = time.perf_counter()
    rows = labelled_rows(corpus, labels, cfg.data.unreliable_weight)
    if teacher is not None:
        rows = teacher.rows(rows, cfg.distill, cfg.train.seed, cfg.text.max_tokens)
    print(f"refit on all {len(rows):,} training rows for {epochs:g} epochs", flush=True)  # progress, as the epochs
    seed_everything(cfg.train.seed)
    net: Model = registry.kind(cfg.model.name).new(cfg)
    net.fit(rows, None, FitRun(logger or NullLogger(), epochs=epochs, metric_prefix="refit_"))
    return net, time.perf_counter() - t0


def finish_run(clf: Classifier, test: str | Path | None, output: str | Path | None, history: list[dict],
               logger: RunLogger, checkpoints: Checkpoints | None, train: str | Path | None = None,
               train_keys=None) -> None:
    """The run's end: the one evaluation on ``test``, the bundle (into ``output``, else only into
    MLflow), the loss curves and the config as artifacts, the MLflow model (with two titles of
    ``train`` as its input example); the checkpoint is then removed.  ``train_keys``: the
    training rows' ``title_keys``, to say how many test titles they hold."""
    cfg = clf.config
    with tempfile.TemporaryDirectory(prefix="titlecat-run-") as tmp:
        art = Path(tmp)
        if test is not None:
            score_test(clf, test, logger, art)
            if train_keys is not None:
                _note_test_leakage(clf, test, train_keys, logger)
        if history:
            logger.log_artifact(plot_loss_curves(history, art / "loss_curve.png", cfg.model.name))
        cfg.to_yaml(art / "config.yaml")
        logger.log_artifact(art / "config.yaml")
        bundle_dir = clf.save(output if output is not None else art / "bundle")
        if checkpoints is not None:
            # the bundle holds the result; the checkpoint was only needed until then (and must
            # not be logged with the bundle: it is the optimizer state too, ~4x the weights)
            checkpoints.remove()
        if logger.run_id is not None:  # tracked: the MLflow model, the bundle inside it (logged once)
            from .mlflow_model import BUNDLE_PATH, save_model

            model_dir = save_model(bundle_dir, art / "model", example_titles(train), copy_bundle=False)
            logger.log_artifact(model_dir, "model")
            logger.log_artifact(bundle_dir, f"model/{BUNDLE_PATH}")
        if output is not None and history:
            plot_loss_curves(history, Path(output) / "loss_curve.png", cfg.model.name)


def _note_test_leakage(clf: Classifier, test: str | Path, train_keys, logger: RunLogger) -> None:
    """Warn when test titles are also training titles: their score is memory, not generalisation
    (the test file's tokens come from the cache ``evaluate`` just filled)."""
    keys = title_keys(tokenize_file(test, clf.text_config, clf.config.data))
    shared = shared_titles(keys, train_keys)
    clf.info.test_shared_titles = shared
    logger.log_params({"data.test_shared_titles": shared})
    if shared:
        print(f"titlecat: warning: {shared:,} of {len(keys):,} test titles ({shared / len(keys):.1%}) also appear "
              f"among the training rows ({test}); the test score is inflated by them", file=sys.stderr)


def example_titles(path: str | Path | None, n: int = 2) -> list[str]:
    """The first ``n`` titles of a training file: an MLflow model's input example."""
    titles = []
    if path is not None:
        for record in read_records(path, skip_bad_rows=True):
            titles.append(record.title)
            if len(titles) == n:
                break
    return titles or ["Zapatillas Nike Air Max 90 Talle 42"]


def score_test(clf: Classifier, test: str | Path, logger: RunLogger, art: Path) -> None:
    """The run's one evaluation on ``test``: scores into ``clf.info`` and MLflow, the per-category
    report and every prediction as artifacts (written into ``art``)."""
    data_cfg = clf.config.data
    report = art / "category_report.csv"
    out = clf.evaluate(test, report=report, predictions=art / "test_predictions.csv",
                       skip_bad_rows=data_cfg.skip_bad_rows, language=data_cfg.language,
                       label_quality=data_cfg.label_quality)
    info = clf.info
    info.test_balanced_accuracy, info.test_accuracy = out["balanced_accuracy"], out["accuracy"]
    info.test_loss, info.test_n, info.test_unseen_categories = out["loss"], out["n"], out["unseen_categories"]
    logger.log_params({"data.test_languages": ",".join(f"{k}:{v}" for k, v in out["languages"].items())})
    logger.log_metrics({"test_balanced_accuracy": out["balanced_accuracy"], "test_accuracy": out["accuracy"],
                        "test_loss": out["loss"]})
    for lang, sc in out.get("per_language", {}).items():
        logger.log_metrics({f"test_{lang}_balanced_accuracy": sc["balanced_accuracy"],
                            f"test_{lang}_accuracy": sc["accuracy"]})
    if out["unseen_categories"]:
        print(f"titlecat: {sum(out['unseen_categories'].values())} test rows have categories "
              f"never seen in training ({', '.join(list(out['unseen_categories'])[:5])}); "
              "they count as errors", file=sys.stderr)
    logger.log_artifact(report)
    logger.log_artifact(art / "test_predictions.csv")


def _data_params(train, test, split: Split, train_rows: Rows, val_rows: Rows, unseen: list[str]) -> dict:
    """What the run read, as MLflow params: files, split, sizes, languages and label qualities."""
    tr, va = train_rows.corpus, val_rows.corpus
    return {
        "data.train_file": str(train), "data.test_file": str(test), "data.validation": split.description,
        "data.n_train": len(tr), "data.n_val": len(va), "data.n_classes": len(train_rows.labels),
        "data.val_unseen_categories": len(unseen), "data.skipped_rows": split.whole.skipped,
        "data.val_shared_titles": split.val_shared,
        "data.train_languages": value_counts(tr.languages, tr.language_codes),
        "data.val_languages": value_counts(va.languages, va.language_codes),
        **categories_per_language(tr),
        "data.train_label_quality": value_counts(tr.qualities, tr.quality_codes),
    }
