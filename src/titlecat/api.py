"""The library API, fastText-sized: ``train(...) -> Classifier``, ``load(dir)``,
``Classifier.predict / evaluate / save``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .batching import BatchLoader  # noqa: F401  (re-exported for users building their own loops)
from .bundle import (CHECKPOINT_DIR, ENSEMBLE_FORMAT, HELD_OUT_FILE, bundle_format, check_output_dir, read_bundle,
                     save_bundle)
from .checkpoint import Checkpoints, check_resumable, read_checkpoint, run_file
from .config import Config, ConfigError
from .data import DataError, read_records, stratified_split
from .evaluate import category_report, predict_logits, scores, write_predictions_csv, write_report_csv
from .features import Corpus, Encoded, Featurizer, tokenize_file, tokenize_titles
from .linear import LinearModel, TfidfConfig, fit_linear
from .models import build_model
from .models.base import tables_loaded_later
from .plots import plot_loss_curves
from .tracking import RunLogger, make_logger, run_url_hint, tuning_tags
from .train import fit, resolve_device, seed_everything
from .vectors import coverage, load_word_vectors
from .vocab import LabelEncoder


def encode_labels(corpus: Corpus, labels: LabelEncoder) -> tuple[np.ndarray, list[str]]:
    """Class index per row; categories unseen in training get ``n_classes + k`` (listed in the 2nd value)."""
    per_code = labels.transform(corpus.categories, unknown=-1)
    unseen = [c for c, i in zip(corpus.categories, per_code) if i < 0]
    extra = {c: len(labels) + k for k, c in enumerate(unseen)}
    per_code = np.array([i if i >= 0 else extra[c] for c, i in zip(corpus.categories, per_code)], dtype=np.int64)
    y = per_code[corpus.category_codes] if len(corpus.categories) else np.full(len(corpus), -1, np.int64)
    return y, unseen


@dataclass
class HeldOut:
    """A refitted model's validation scores (``train.refit``): the logits its config's first
    training -- the one that chose the epoch -- gave its validation rows.  The refitted model has
    learned from those rows, so its own logits on them would flatter it."""

    logits: np.ndarray  # (n_val, n_classes) float32
    labels: np.ndarray  # (n_val,) int64 class index of each validation row
    digest: np.ndarray  # (32,) uint8 SHA-256 of those rows' tokens and labels (``rows_digest``)


def rows_digest(corpus: Corpus, y: np.ndarray) -> np.ndarray:
    """(32,) uint8 fingerprint of tokenised rows and their class indices: which rows a refitted
    model's kept validation logits belong to (the labels alone match any file of the same shape)."""
    h = hashlib.sha256()
    h.update(np.asarray(corpus.offsets, dtype=np.int64).tobytes())
    h.update("\x1f".join(corpus.types[t] for t in corpus.token_types).encode("utf-8"))
    h.update(np.asarray(y, dtype=np.int64).tobytes())
    return np.frombuffer(h.digest(), dtype=np.uint8).copy()


class Classifier:
    """A trained model with everything needed to use it: config, featurizer, labels, weights."""

    def __init__(self, config: Config, featurizer: Featurizer, labels: LabelEncoder,
                 model: torch.nn.Module | LinearModel, device: str | torch.device = "cpu"):
        self.config = config
        self.featurizer = featurizer
        self.labels = labels
        self.device = torch.device(device)
        self.model = model if isinstance(model, LinearModel) else model.to(self.device).eval()
        self.info: dict = {}  # facts of the training run (scores, run id), filled by train()
        self.held_out: HeldOut | None = None  # validation logits of a refitted model (train.refit)

    @property
    def text_config(self):
        """The text settings titles are tokenised with before ``logits`` (``TextConfig``)."""
        return self.featurizer.cfg

    # ---- prediction -------------------------------------------------------------------

    def logits(self, corpus: Corpus) -> np.ndarray:
        """(n, n_classes) scores of a tokenised corpus: the one place that runs the model."""
        if isinstance(self.model, LinearModel):
            return self.model.logits(corpus)
        return predict_logits(self.model, self.featurizer.encode(corpus), self.config.train.eval_batch_size,
                              self.device)

    def predict_proba(self, titles: list[str], language: str | None = None) -> np.ndarray:
        """(n, n_classes) probabilities (for ``tfidf``: a softmax of the SVM's decision values).

        ``language``: the titles' language, used by models trained with ``text.language_token``.
        """
        logits = self._title_logits(list(titles), language)
        if not len(logits):
            return logits.numpy()
        # exp(logit - logsumexp), not torch.softmax: the very numbers predict()'s top-k gives
        return torch.exp(logits - torch.logsumexp(logits, dim=1, keepdim=True)).numpy()

    def _title_logits(self, titles: list[str], language: str | None) -> torch.Tensor:
        """(n, n_classes) scores of raw titles (tokenised with the bundle's text settings)."""
        return torch.from_numpy(self.logits(tokenize_titles(titles, self.text_config, language)))

    def _top_k(self, titles: list[str], k: int, language: str | None) -> tuple[np.ndarray, np.ndarray]:
        """(n, k) class indices and probabilities of each title's ``k`` most probable classes.

        Selected on the logits, and only those ``k`` are normalised (``exp(logit - logsumexp)``):
        the same numbers as ``predict_proba`` then top-k, without a softmax over every class
        and an (n, n_classes) probability matrix to select from."""
        logits = self._title_logits(titles, language)
        top_logits, top = torch.topk(logits, min(k, logits.shape[1]), dim=1)
        probs = torch.exp(top_logits - torch.logsumexp(logits, dim=1, keepdim=True))
        return top.numpy(), probs.numpy()

    def predict(self, titles: str | list[str], k: int = 1, language: str | None = None):
        """Top-``k`` categories and probabilities.

        One title -> ``(labels: tuple[str], probs: ndarray (k,))``;
        a list -> ``(list of label tuples, ndarray (n, k))``, as fastText does.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        single = isinstance(titles, str)
        batch = [titles] if single else list(titles)
        if not batch:
            raise ValueError("predict() needs at least one title")
        bad = [i for i, t in enumerate(batch) if not isinstance(t, str)]
        if bad:
            raise ValueError(f"titles must be strings; item {bad[0]} is {type(batch[bad[0]]).__name__}")
        # top-k by partial selection, not a full sort of every row (a full sort cost a third of predict)
        top, p = self._top_k(batch, k, language)
        names = self.labels.classes_
        labels = [tuple(map(names.__getitem__, row)) for row in top.tolist()]
        return (labels[0], p[0]) if single else (labels, p)

    def predict_file(self, input: str | Path, output: str | Path, chunk_size: int = 10_000):
        """Write the challenge submission ``id,category`` for every row of ``input``, streamed in chunks.

        Returns a ``SubmissionStats`` (rows, empty titles, rows per language).
        """
        from .submission import write_submission

        return write_submission(self, input, output, chunk_size=chunk_size)

    # ---- evaluation -------------------------------------------------------------------

    def evaluate(self, path: str | Path, *, report: str | Path | None = None, skip_bad_rows: bool = False,
                 language: str = "all", label_quality: str = "all", predictions: str | Path | None = None) -> dict:
        """Scores on a labelled file: ``balanced_accuracy``, ``accuracy``, ``loss``, ``n``, per language.

        Categories absent from training are counted as errors and listed under
        ``unseen_categories`` (name -> rows).  ``report`` writes the per-category CSV,
        ``predictions`` a CSV ``title,category,predicted`` of every row.
        """
        data_cfg = self.config.data.model_copy(update={"skip_bad_rows": skip_bad_rows, "language": language,
                                                        "label_quality": label_quality})
        corpus = tokenize_file(path, self.text_config, data_cfg)
        y, unseen = encode_labels(corpus, self.labels)
        logits = self.logits(corpus)
        out = scores(y, logits)
        out["skipped_rows"] = corpus.skipped
        out["unseen_categories"] = {c: int((y == len(self.labels) + k).sum()) for k, c in enumerate(unseen)}
        out["languages"] = dict(zip(corpus.languages, np.bincount(corpus.language_codes,
                                                                  minlength=len(corpus.languages)).tolist()))
        if len(corpus.languages) > 1:
            out["per_language"] = {
                lang: scores(y[corpus.language_codes == i], logits[corpus.language_codes == i])
                for i, lang in enumerate(corpus.languages)
            }
        if report is not None:
            write_report_csv(category_report(y, logits.argmax(1), self.labels.classes_, unseen), report)
        if predictions is not None:  # the titles themselves: read again, with the same filters, in the same order
            titles = [r.title for r in read_records(path, skip_bad_rows=skip_bad_rows, language=language,
                                                    label_quality=label_quality)]
            assert len(titles) == len(y), "rows re-read differ from the rows scored"
            names = list(self.labels.classes_) + list(unseen)
            write_predictions_csv(titles, [names[i] for i in y], [names[j] for j in logits.argmax(1)], predictions)
        return out

    def validate(self, train: str | Path, validation: str | Path | None = None,
                 cache_dir: str | Path | None = None) -> dict:
        """Scores on the validation rows of a training on ``train`` with this model's data settings.

        The rows ``titlecat train`` carved out of ``train`` (``data.val_fraction``, ``data.split_seed``),
        or the file ``validation`` when given: e.g. to score an ensemble of separately trained models
        on the rows none of them learned from.  A model trained with a validation file learned from
        every row of ``train``: pass it that file, or the carved rows are rows it has seen.
        A refitted model (``train.refit``) learned from its validation rows too: its scores are
        those of its first training, which the bundle keeps.
        """
        corpus, y = self._validation_rows(train, validation, cache_dir)
        return scores(y, self.validation_logits(corpus, y))

    def validation_logits(self, corpus: Corpus, y: np.ndarray) -> np.ndarray:
        """(n, n_classes) scores of validation rows ``corpus`` (class indices ``y``): the model's
        own, or for a refitted model those its first training gave the rows it held out."""
        if self.held_out is None:
            return self.logits(corpus)
        if not np.array_equal(self.held_out.digest, rows_digest(corpus, y)):
            raise ValueError(f"this {self.config.model.name} model was refitted on its validation rows "
                             f"(train.refit) and can only be validated on the {len(self.held_out.labels)} rows "
                             f"it held out; these {len(y)} rows are others (another file or data.split_seed?)")
        return self.held_out.logits

    def _validation_rows(self, train: str | Path, validation: str | Path | None,
                         cache_dir: str | Path | None) -> tuple[Corpus, np.ndarray]:
        """The validation corpus of ``validate`` and its class indices."""
        _, _, val_corpus, _ = split_corpus(train, validation, self.text_config, self.config.data, cache_dir)
        return val_corpus, encode_labels(val_corpus, self.labels)[0]

    # ---- persistence ------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        extra = {k: self.info[k] for k in ("mlflow_run_id", "test_balanced_accuracy") if k in self.info}
        tensor_files = {} if self.held_out is None else {HELD_OUT_FILE: {
            "logits": torch.from_numpy(self.held_out.logits), "labels": torch.from_numpy(self.held_out.labels),
            "digest": torch.from_numpy(self.held_out.digest)}}
        if isinstance(self.model, LinearModel):
            tensors, linear_meta = self.model.state()
            return save_bundle(directory, self.config, self.featurizer, self.labels, tensors, extra,
                               extra_files={"linear.json": linear_meta}, tensor_files=tensor_files)
        return save_bundle(directory, self.config, self.featurizer, self.labels, self.model.state_dict(), extra,
                           tensor_files=tensor_files)

    def num_parameters(self) -> int:
        return self.model.num_parameters()


def load(directory: str | Path, device: str = "cpu") -> Classifier:
    """Load a bundle written by ``Classifier.save`` / ``titlecat train --output`` (an ensemble's too)."""
    from .bundle import BundleError

    if bundle_format(directory) == ENSEMBLE_FORMAT:
        return load_ensemble(directory, device)
    meta, config, featurizer, labels, state, tensor_files = read_bundle(directory)
    try:
        if isinstance(config.model, TfidfConfig):
            linear_meta = json.loads((Path(directory) / "linear.json").read_text(encoding="utf-8"))
            model = LinearModel.from_state(config.model, state, linear_meta)
        else:
            with tables_loaded_later():  # strict loading below overwrites every table
                model = build_model(config.model, n_classes=len(labels), **featurizer.sizes())
            model.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, OSError) as e:
        raise BundleError(f"{directory}: weights do not fit the bundle's config ({str(e).splitlines()[0]})") from None
    clf = Classifier(config, featurizer, labels, model, device)
    clf.info = {k: v for k, v in meta.items() if k not in ("files",)}
    if HELD_OUT_FILE in tensor_files:
        held = tensor_files[HELD_OUT_FILE]
        clf.held_out = HeldOut(held["logits"].numpy(), held["labels"].numpy(), held["digest"].numpy())
    return clf


def resolve_config(model: str | None = None, config: Config | str | Path | None = None,
                   overrides: list[str] | dict | None = None) -> Config:
    """The run's config: a ``Config``, a YAML path, or the shipped default of ``model``; then overrides."""
    if isinstance(config, Config):
        cfg = config
    elif config is not None:
        cfg = Config.from_yaml(config)
    else:
        cfg = Config.default(model or "mlp")
    if model is not None and cfg.model.name != model:
        raise ConfigError(f"--model {model} but the config's model.name is {cfg.model.name!r}")
    return cfg.with_overrides(overrides) if overrides else cfg


def train(
    train: str | Path,
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
) -> Classifier:
    """Train on ``train`` (validation carved from it unless ``validation`` is given),
    pick the best epoch on validation, then evaluate once on ``test``.

    Everything is logged to MLflow unless ``tracking=False``; ``output`` receives
    the model bundle.  Returns the trained ``Classifier``; ``clf.info`` holds the
    run's facts and scores.  With ``output``, training is checkpointed in
    ``output/checkpoint`` (``train.checkpoint_minutes``); ``resume=True`` continues the
    interrupted training found there, in the same MLflow run, with the same config and
    files (a different setting or file is an error naming it).  ``on_epoch(epoch, metrics)``
    is called after each epoch and may raise to stop the training (``titlecat tune``).
    ``parent_run_id`` nests the MLflow run under that run (an ensemble's members).

    With ``model="ensemble"`` (``configs/ensemble.yaml``) every member is trained this way on
    the same split, and the returned ``Ensemble`` combines them (``titlecat.ensemble``).
    """
    saved = read_checkpoint(output) if resume else None  # how the interrupted run started
    if saved is not None and config is None:
        config = Config.from_dict(saved["config"], source=f"{output}/checkpoint")
    cfg = resolve_config(model, config, overrides)
    if isinstance(cfg.model, EnsembleConfig):  # (never resumed: an ensemble keeps no checkpoint of its own)
        return train_ensemble(cfg, train, test, validation, output=output, tracking=tracking, experiment=experiment,
                              run_name=run_name, cache_dir=cache_dir)
    call = {k: run_file(v) for k, v in (("train", train), ("test", test), ("validation", validation))}
    if saved is not None:
        check_resumable(saved, cfg.flat(), call)
    if isinstance(cfg.model, TfidfConfig) and cfg.data.unreliable_weight != 1.0:
        raise ConfigError("data.unreliable_weight: not supported by the tfidf model (its SVM takes no row "
                          "weights here); use 1.0, or --label-quality reliable")
    if output is not None:
        check_output_dir(output, checkpoint_ok=resume)  # before hours of training, not after
    seed_everything(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    t_start = time.perf_counter()

    # -- data: read, split, fit featurizer and labels on training rows only --
    t0 = time.perf_counter()
    corpus, train_corpus, val_corpus, split_desc = split_corpus(train, validation, cfg.text, cfg.data, cache_dir)
    featurizer = Featurizer(cfg.text).fit(train_corpus)
    labels = LabelEncoder().fit(train_corpus.categories[c] for c in np.unique(train_corpus.category_codes))
    y_train, _ = encode_labels(train_corpus, labels)
    y_val, val_unseen = encode_labels(val_corpus, labels)
    if cfg.train.refit and val_unseen:  # said now, not after the first training
        raise ConfigError(f"train.refit: {len(val_unseen)} categories of the validation rows have no training row "
                          f"({', '.join(val_unseen[:5])}); a refit would learn categories the validated model "
                          "never scored. Drop those rows from the validation file, or set train.refit=false")
    linear = isinstance(cfg.model, TfidfConfig)  # the baseline is fitted by scikit-learn, not by the loop
    if not linear:  # only the neural models read encoded arrays (the baseline reads the corpus itself)
        train_data = featurizer.encode(train_corpus, y_train)
        train_data.weights = unreliable_weights(train_corpus, cfg.data.unreliable_weight)  # validation: unweighted
        val_data = featurizer.encode(val_corpus, y_val)
    prep_seconds = time.perf_counter() - t0

    # -- model --
    net, vectors_info = new_model(cfg, featurizer, labels, None if linear else train_data)

    # -- tracking: params once, up front --
    data_facts = {"n_train": len(train_corpus), "n_val": len(val_corpus), "vocab_size": len(featurizer.vocab_),
                  "categories": list(labels.classes_)}
    if saved is not None:
        check_resumable(saved, cfg.flat(), call, data_facts)
    logger: RunLogger = (make_logger(tracking and saved["tracking"], run_id=saved["run_id"], uri=saved["tracking_uri"])
                         if saved is not None else make_logger(tracking, experiment, run_name or f"{cfg.model.name}",
                                                               parent_run_id=parent_run_id))
    checkpoints = None if output is None or linear else Checkpoints(
        Path(output) / CHECKPOINT_DIR, cfg.train.checkpoint_minutes,
        meta={"config": cfg.to_dict(), "config_flat": cfg.flat(), "call": call, "data": data_facts,
              "tracking": logger.run_id is not None, "run_id": logger.run_id, "tracking_uri": getattr(logger, "uri", None)})
    params = {
        **cfg.flat(),
        "data.train_file": str(train), "data.test_file": str(test), "data.validation": split_desc,
        "data.n_train": len(train_corpus), "data.n_val": len(val_corpus), "data.n_classes": len(labels),
        "data.val_unseen_categories": len(val_unseen), "data.skipped_rows": corpus.skipped,
        "data.vocab_size": len(featurizer.vocab_),
        "data.train_languages": _mix(train_corpus), "data.val_languages": _mix(val_corpus), **vectors_info,
        **_categories_per_language(train_corpus),
        "data.train_label_quality": _mix(train_corpus, "quality"),
    }
    logger.log_params(params)
    logger.set_tags({"model": cfg.model.name, **tuning_tags(cfg.tuned_from)})
    if corpus.skipped:
        print(f"titlecat: skipped {corpus.skipped} bad rows in {train}", file=sys.stderr)

    status = "FAILED"
    try:
        if linear:
            result = fit_linear(net, train_corpus, y_train, val_corpus, y_val, len(labels), logger)
        else:
            result = fit(net, train_data, val_data, cfg.train, logger, device, checkpoints, on_epoch)
        clf = Classifier(cfg, featurizer, labels, net, device)
        logger.log_metrics({"best_epoch": result.best_epoch,
                            "best_val_balanced_accuracy": result.best_val_balanced_accuracy,
                            "train_seconds": result.train_seconds, "preprocess_seconds": prep_seconds})
        refit_info = {}
        if cfg.train.refit:
            # -- refit: the chosen epochs again, on every row; the validated model's scores are kept --
            held_out = HeldOut(clf.logits(val_corpus), y_val, rows_digest(val_corpus, y_val))
            everything = corpus if validation is None else train_corpus.concat(val_corpus)
            clf, refit_info = refit(cfg, everything, labels, result.best_epoch, device, logger)
            clf.held_out = held_out
        logger.log_params({"model.parameters": clf.num_parameters()})  # the saved model's (a refit's vocabulary is larger)
        clf.info = {"mlflow_run_id": logger.run_id, "best_epoch": result.best_epoch,
                    "best_val_balanced_accuracy": result.best_val_balanced_accuracy,
                    "train_seconds": result.train_seconds + refit_info.get("refit_seconds", 0.0),
                    "prep_seconds": prep_seconds, "history": result.history, "n_train": len(train_corpus),
                    "n_val": len(val_corpus), "parameters": clf.num_parameters(), **refit_info}

        with tempfile.TemporaryDirectory(prefix="titlecat-run-") as tmp:
            art = Path(tmp)
            # -- the single test evaluation, with the best checkpoint --
            if test is not None:
                score_test(clf, test, cfg.data, logger, art)
            # -- artifacts: loss curves, config, bundle --
            logger.log_artifact(plot_loss_curves(result.history, art / "loss_curve.png", f"{cfg.model.name}"))
            cfg.to_yaml(art / "config.yaml")
            logger.log_artifact(art / "config.yaml")
            bundle_dir = clf.save(output if output is not None else art / "model")
            if checkpoints is not None:
                # the bundle holds the result; the checkpoint was only needed until then (and must
                # not be logged with the bundle: it is the optimizer state too, ~4x the weights)
                checkpoints.remove()
            logger.log_artifact(bundle_dir, "model")
            if output is not None:
                plot_loss_curves(result.history, Path(output) / "loss_curve.png", cfg.model.name)
        clf.info["total_seconds"] = time.perf_counter() - t_start
        clf.info["tracking"] = run_url_hint(logger)
        status = "FINISHED"
        return clf
    finally:
        logger.close(status)


def new_model(cfg: Config, featurizer: Featurizer, labels: LabelEncoder,
              train_data: Encoded | None) -> tuple[torch.nn.Module | LinearModel, dict]:
    """The untrained model of ``cfg`` (adapted to ``train_data``, e.g. the MLP's idf), with pretrained
    word vectors loaded if the config names them; and facts about those vectors to log."""
    if isinstance(cfg.model, TfidfConfig):
        return LinearModel(cfg.model), {}
    net = build_model(cfg.model, n_classes=len(labels), **featurizer.sizes())
    net.adapt(train_data)  # from training rows only
    if not cfg.model.pretrained_vectors:
        return net, {}
    vecs, found = load_word_vectors(cfg.model.pretrained_vectors, featurizer.vocab_, cfg.model.embedding_dim,
                                    cfg.text.fold_accents)
    net.load_word_vectors(vecs, found, cfg.model.freeze_pretrained)
    return net, {"pretrained_coverage": round(coverage(found), 4)}


def refit(cfg: Config, corpus: Corpus, labels: LabelEncoder, epochs: int, device: torch.device,
          logger: RunLogger) -> tuple[Classifier, dict]:
    """``train.refit``: ``cfg`` trained again from its seed on ``corpus`` (training and validation
    rows) for the ``epochs`` validation chose, the learning-rate schedule unchanged; the new
    featurizer (vocabulary, idf) sees every row too.  Returns the classifier and its facts."""
    t0 = time.perf_counter()
    seed_everything(cfg.train.seed)
    featurizer = Featurizer(cfg.text).fit(corpus)
    y, _ = encode_labels(corpus, labels)
    print(f"refit on all {len(corpus):,} training rows for {epochs} epochs", flush=True)  # progress, as the epochs
    if isinstance(cfg.model, TfidfConfig):
        net = LinearModel(cfg.model).fit(corpus, y, len(labels))
    else:
        data = featurizer.encode(corpus, y)
        data.weights = unreliable_weights(corpus, cfg.data.unreliable_weight)
        net, _ = new_model(cfg, featurizer, labels, data)
        fit(net, data, None, cfg.train, logger, device, stop_after=epochs, metric_prefix="refit_")
    seconds = time.perf_counter() - t0
    info = {"refit_epochs": epochs, "n_refit": len(corpus), "refit_seconds": seconds}
    logger.log_params({"data.n_refit": len(corpus)})
    logger.log_metrics({"refit_epochs": epochs, "refit_seconds": seconds})
    return Classifier(cfg, featurizer, labels, net, device), info


def score_test(clf: Classifier, test: str | Path, data_cfg, logger: RunLogger, art: Path) -> None:
    """The run's one evaluation on ``test``: scores into ``clf.info`` and MLflow, the per-category
    report and every prediction as artifacts (written into ``art``)."""
    report = art / "category_report.csv"
    test_scores = clf.evaluate(test, report=report, predictions=art / "test_predictions.csv",
                               skip_bad_rows=data_cfg.skip_bad_rows, language=data_cfg.language,
                               label_quality=data_cfg.label_quality)
    clf.info.update({f"test_{k}": v for k, v in test_scores.items() if k in ("balanced_accuracy", "accuracy", "loss", "n")})
    clf.info["test_unseen_categories"] = test_scores["unseen_categories"]
    test_mix = ",".join(f"{k}:{v}" for k, v in test_scores["languages"].items())
    logger.log_params({"data.test_languages": test_mix})
    logger.log_metrics({"test_balanced_accuracy": test_scores["balanced_accuracy"],
                        "test_accuracy": test_scores["accuracy"], "test_loss": test_scores["loss"]})
    for lang, sc in test_scores.get("per_language", {}).items():
        logger.log_metrics({f"test_{lang}_balanced_accuracy": sc["balanced_accuracy"],
                            f"test_{lang}_accuracy": sc["accuracy"]})
    if test_scores["unseen_categories"]:
        print(f"titlecat: {sum(test_scores['unseen_categories'].values())} test rows have categories "
              f"never seen in training ({', '.join(list(test_scores['unseen_categories'])[:5])}); "
              "they count as errors", file=sys.stderr)
    logger.log_artifact(report)
    logger.log_artifact(art / "test_predictions.csv")


def split_corpus(train: str | Path, validation: str | Path | None, text_cfg, data_cfg,
                 cache_dir: str | Path | None = None) -> tuple[Corpus, Corpus, Corpus, str]:
    """``(whole training file, training rows, validation rows, description)``: the validation rows
    are the file ``validation``, or a stratified split of ``train`` by ``data_cfg`` (the same rows
    for any text settings: the split reads only categories and languages)."""
    corpus = tokenize_file(train, text_cfg, data_cfg, cache_dir=cache_dir)
    desc = split_description(train, validation, data_cfg)
    if validation is not None:
        return corpus, corpus, tokenize_file(validation, text_cfg, data_cfg, cache_dir=cache_dir), desc
    train_idx, val_idx = language_aware_split(corpus, data_cfg.val_fraction, data_cfg.split_seed)
    if len(val_idx) == 0:
        raise DataError(f"{train}: too few rows per category to carve a validation split; pass --validation")
    return corpus, corpus.subset(train_idx), corpus.subset(val_idx), desc


def split_description(train: str | Path, validation: str | Path | None, data_cfg) -> str:
    """Where a training's validation rows come from, as logged (param ``data.validation``)."""
    if validation is not None:
        return f"file {validation}"
    return f"stratified {data_cfg.val_fraction:g} of {train} (seed {data_cfg.split_seed})"


def _mix(corpus: Corpus, what: str = "language") -> str:
    names, codes = ((corpus.languages, corpus.language_codes) if what == "language"
                    else (corpus.qualities, corpus.quality_codes))
    counts = np.bincount(codes, minlength=len(names))
    return ",".join(f"{name}:{int(c)}" for name, c in zip(names, counts))


def language_aware_split(corpus: Corpus, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(train, validation)`` stratified by (category, language) pairs.

    Every pair with >= 2 rows is on both sides, so each language is validated on each of
    its categories; with one language this is exactly the split by category.
    """
    pair = corpus.category_codes.astype(np.int64) * len(corpus.languages) + corpus.language_codes
    return stratified_split(pair, fraction, seed)


def unreliable_weights(corpus: Corpus, weight: float) -> np.ndarray | None:
    """(n,) float32 loss weights: ``weight`` for rows labelled ``unreliable``, 1 otherwise (None if all 1)."""
    if weight == 1.0 or "unreliable" not in corpus.qualities:
        return None
    unreliable = corpus.quality_codes == corpus.qualities.index("unreliable")
    return np.where(unreliable, np.float32(weight), np.float32(1.0)).astype(np.float32)


def _categories_per_language(corpus: Corpus) -> dict[str, str | int]:
    """Distinct categories per language, and how many categories occur in one language only."""
    pairs = np.unique(corpus.category_codes.astype(np.int64) * len(corpus.languages) + corpus.language_codes)
    cats, langs = pairs // len(corpus.languages), pairs % len(corpus.languages)
    per_lang = np.bincount(langs, minlength=len(corpus.languages))
    langs_per_cat = np.bincount(cats, minlength=len(corpus.categories))
    return {"data.train_categories_per_language": ",".join(f"{lang}:{int(n)}"
                                                           for lang, n in zip(corpus.languages, per_lang)),
            "data.train_categories_one_language": int((langs_per_cat == 1).sum())}


# at the end: the ensemble module subclasses Classifier and calls train() for its members
from .ensemble import EnsembleConfig, load_ensemble, train_ensemble  # noqa: E402
