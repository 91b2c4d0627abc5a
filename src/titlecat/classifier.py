"""``Classifier``: a trained model with everything needed to use it, whatever its kind.

It wraps a model of the model protocol (``titlecat.models.protocol``) -- a network, the TF-IDF
baseline, an ensemble -- and adds what every kind shares: tokenizing raw titles with the
model's text settings, top-k predictions, scores on a labelled file, a submission, the
bundle.  ``titlecat.load`` reads a bundle back, finding the model's class in the registry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from . import registry
from .bundle import (HELD_OUT_FILE, BundleError, listed_file, read_bundle, read_json, read_tensors, write_bundle,
                     write_json, write_tensors)
from .cache import tokenize_file
from .config import Config, TextConfig
from .corpus import Corpus
from .data import LANGUAGES, read_records
from .dataset import encode_labels, rows_digest, split_corpus
from .evaluate import category_report, scores, write_predictions_csv, write_report_csv
from .quantize import QuantizeSpec
from .submission import SubmissionStats, write_submission
from .tokenizer import tokenize_titles
from .vocab import LabelEncoder

if TYPE_CHECKING:  # a type only: importing titlecat.models here would import this module back (models.ensemble)
    from .models.protocol import Model


@dataclass
class HeldOut:
    """A refitted model's validation scores (``train.refit``): the logits its config's first
    training -- the one that chose the epoch -- gave its validation rows.  The refitted model has
    learned from those rows, so its own logits on them would flatter it."""

    logits: np.ndarray  # (n_val, n_classes) float32
    labels: np.ndarray  # (n_val,) int64 class index of each validation row
    digest: np.ndarray  # (32,) uint8 SHA-256 of those rows' tokens and labels (``rows_digest``)


@dataclass
class MemberInfo:
    """One trained member of an ensemble (``RunInfo.members``)."""

    model: str  # its model name
    config: str  # the member spec it came from (a shipped config's name or a YAML path)
    seed: int  # its train.seed
    mlflow_run_id: str | None = None
    best_epoch: int | None = None
    refit_epochs: float | None = None
    best_val_balanced_accuracy: float | None = None
    train_seconds: float | None = None
    test_balanced_accuracy: float | None = None


@dataclass
class RunInfo:
    """Facts of the training that made a model (``Classifier.info``).

    ``titlecat.train`` fills every field it knows; a loaded bundle knows the few it keeps
    (run id, test score, titlecat version).  Fields that do not apply stay None.
    """

    mlflow_run_id: str | None = None  # the MLflow run of the training (None without tracking)
    tracking: str | None = None  # where to look at that run (a URL or a hint)
    best_epoch: int | None = None  # the epoch validation chose (None: an ensemble, whose members chose theirs)
    best_val_balanced_accuracy: float | None = None  # validation balanced accuracy of the chosen model
    val_accuracy: float | None = None  # its validation accuracy, where the fit reports it (an ensemble)
    history: list[dict] = field(default_factory=list)  # per-epoch metrics of the first training
    n_train: int | None = None  # rows learned from (before a refit)
    n_val: int | None = None  # validation rows
    parameters: int | None = None  # the saved model's parameter count
    read_seconds: float | None = None  # reading and tokenizing the files (or loading them from the cache)
    tokenize_seconds: float | None = None  # of which the tokenizer's own work (0: loaded from the cache)
    prep_seconds: float | None = None  # reading, tokenizing, featurizing
    train_seconds: float | None = None  # learning, the refit included
    total_seconds: float | None = None  # the whole call of titlecat.train
    # train.refit: epochs of the refit (fractional: chosen mid-epoch; None: not refitted)
    refit_epochs: float | None = None
    refitted: bool | None = None  # it learned from its validation rows too (train.refit); kept in the bundle
    teacher: str | None = None  # distillation: the teacher bundle it learned from; kept in the bundle
    teacher_seconds: float | None = None  # distillation: the teacher's scoring of the training and transfer titles
    n_refit: int | None = None  # train.refit: rows the refit learned from
    refit_seconds: float | None = None
    test_balanced_accuracy: float | None = None  # the one evaluation on the test file
    test_accuracy: float | None = None
    test_loss: float | None = None
    test_n: int | None = None  # test rows scored
    test_unseen_categories: dict[str, int] = field(default_factory=dict)  # test categories never trained on -> rows
    val_shared_titles: int | None = None  # validation rows whose title is also a training row's (a leak)
    test_shared_titles: int | None = None  # test rows whose title is also in the training file
    members: list[MemberInfo] = field(default_factory=list)  # an ensemble's members
    titlecat_version: str | None = None  # the titlecat that wrote the bundle (loaded bundles)
    trained_at: str | None = None  # when the training ended (UTC, ISO 8601)
    saved_at: str | None = None  # when the bundle was written (UTC, ISO 8601; loaded bundles)
    registered: str | None = None  # the Model Registry version ``train(register=...)`` made: models:/NAME/VERSION

    # what a bundle keeps of a run (``titlecat serve`` shows them: GET /model)
    KEPT = ("mlflow_run_id", "test_balanced_accuracy", "test_accuracy", "test_n", "best_val_balanced_accuracy",
            "best_epoch", "trained_at", "refitted", "teacher")

    @classmethod
    def from_bundle(cls, meta: dict) -> "RunInfo":
        names = {f.name for f in fields(cls)} - {"members"}
        return cls(**{k: v for k, v in meta.items() if k in names})


class Classifier:
    """A trained model with everything needed to use it: config, labels, model, run facts."""

    def __init__(self, model: Model, info: RunInfo | None = None, held_out: HeldOut | None = None):
        self.model = model
        self.info = info or RunInfo()  # facts of the training run (scores, run id), filled by titlecat.train
        self.held_out = held_out  # validation logits of a refitted model (train.refit)

    @classmethod
    def from_model(cls, model: Model, info: RunInfo | None = None, held_out: HeldOut | None = None) -> "Classifier":
        """A classifier of this class around a trained ``model`` (a subclass's own constructor
        may take other arguments: ``Ensemble(members)``)."""
        clf = cls.__new__(cls)
        Classifier.__init__(clf, model, info, held_out)
        return clf

    @property
    def config(self) -> Config:
        return self.model.config

    @property
    def labels(self) -> LabelEncoder:
        return self.model.labels

    @property
    def text_config(self) -> TextConfig:
        """The text settings titles are tokenized with before ``logits``."""
        return self.model.text_config

    # ---- prediction -------------------------------------------------------------------

    def logits(self, corpus: Corpus) -> np.ndarray:
        """(n, n_classes) scores of a tokenized corpus."""
        return self.model.logits(corpus)

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
        """(n, n_classes) scores of raw titles (tokenized with the model's text settings)."""
        if language is not None and language not in LANGUAGES:  # a typo would silently add an unknown token
            raise ValueError(f"unknown language {language!r}; known: {', '.join(LANGUAGES)} (or none)")
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
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"k must be an integer, got {type(k).__name__}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        single = isinstance(titles, str)
        # a dict or a string of bytes is iterable too, but predicting its keys or byte values is never meant
        if not single and (isinstance(titles, (Mapping, bytes, bytearray)) or not isinstance(titles, Iterable)):
            raise TypeError(f"predict() takes a title (str) or a list of titles, got {type(titles).__name__}")
        batch = [titles] if single else list(titles)
        if not batch:
            raise ValueError("predict() needs at least one title")
        bad = [i for i, t in enumerate(batch) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"titles must be strings; item {bad[0]} is {type(batch[bad[0]]).__name__}")
        # top-k by partial selection, not a full sort of every row (a full sort cost a third of predict)
        top, p = self._top_k(batch, k, language)
        names = self.labels.classes_
        labels = [tuple(map(names.__getitem__, row)) for row in top.tolist()]
        return (labels[0], p[0]) if single else (labels, p)

    def predict_file(self, path: str | Path, output: str | Path, chunk_size: int = 10_000,
                     skip_bad_rows: bool = False) -> SubmissionStats:
        """Write the challenge submission ``id,category`` for every row of ``path``, streamed in chunks.

        Returns a ``SubmissionStats`` (rows, empty titles, rows per language, rows skipped).
        ``skip_bad_rows``: skip unreadable rows (their ids are then missing) instead of stopping.
        """
        return write_submission(self, path, output, chunk_size=chunk_size, skip_bad_rows=skip_bad_rows)

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
            if self.info.refitted:  # (a quantized copy of a refitted model: no first training's logits fit it)
                raise ValueError(f"this {self.config.model.name} model learned from its validation rows (train.refit) "
                                 "and keeps no scores of its first training on them (a quantized copy); validate "
                                 "the model it was made from, or on a file it never learned from (validation=...)")
            return self.logits(corpus)
        if not np.array_equal(self.held_out.digest, rows_digest(corpus, y)):
            raise ValueError(f"this {self.config.model.name} model was refitted on its validation rows "
                             f"(train.refit) and can only be validated on the {len(self.held_out.labels)} rows "
                             f"it held out; these {len(y)} rows are others (another file or data.split_seed?)")
        return self.held_out.logits

    def _validation_rows(self, train: str | Path, validation: str | Path | None,
                         cache_dir: str | Path | None) -> tuple[Corpus, np.ndarray]:
        """The validation corpus of ``validate`` and its class indices."""
        val_corpus = split_corpus(train, validation, self.text_config, self.config.data, cache_dir).validation
        return val_corpus, encode_labels(val_corpus, self.labels)[0]

    # ---- persistence ------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write the bundle (``titlecat.bundle``) that ``titlecat.load`` reads back."""
        def write(tmp: Path) -> dict:
            write_json(tmp / "labels.json", self.labels.to_dict())
            if self.held_out is not None:
                write_tensors(tmp / HELD_OUT_FILE, {"logits": torch.from_numpy(self.held_out.logits),
                                                    "labels": torch.from_numpy(self.held_out.labels),
                                                    "digest": torch.from_numpy(self.held_out.digest)})
            return {"n_classes": len(self.labels), **self.model.save(tmp)}

        kept = {k: getattr(self.info, k) for k in RunInfo.KEPT if getattr(self.info, k) is not None}
        return write_bundle(directory, self.config, self.model.bundle_format, write, kept)

    def num_parameters(self) -> int:
        return self.model.num_parameters()

    # ---- quantization -----------------------------------------------------------------

    def quantize(self, method: str = "int8", *, keep: int = 0, dsub: int = 2) -> "Classifier":
        """A smaller copy, as fastText's ``quantize``: embedding tables pruned to the rows that
        carry most (all those some title can use; ``keep``: that many over all tables) and coded
        in fewer bits -- ``method`` ``int8`` or ``int4`` per row, ``pq`` (product quantization,
        ``dsub`` values a byte) or ``none`` (pruning only).  It predicts, saves and loads as any
        classifier (``titlecat.quantize``).  An ensemble's members are quantized each."""
        return self.quantized(QuantizeSpec(method, keep, dsub))

    def quantized(self, spec: QuantizeSpec) -> "Classifier":
        """``quantize`` by a ``QuantizeSpec``."""
        refitted = self.held_out is not None or bool(self.info.refitted)
        info = RunInfo(mlflow_run_id=self.info.mlflow_run_id, refitted=refitted or None)
        return wrap(quantized_model(self.model, spec), info)


def quantized_model(model: Model, spec: QuantizeSpec) -> Model:
    """``model.quantized(spec)``: an optional capability of a kind of model (the networks, the
    ensemble; see ``models.protocol``), so a kind without it gets a ``ValueError`` saying so."""
    method = getattr(model, "quantized", None)
    if method is None:
        raise ValueError(f"a {model.config.model.name} model cannot be quantized: only networks (and ensembles of "
                         "them) have embedding tables to store in fewer bits")
    return method(spec)


def wrap(model: Model, info: RunInfo | None = None, held_out: HeldOut | None = None) -> Classifier:
    """The classifier of a trained ``model``: a ``Classifier``, or the subclass its registry entry
    names (an ensemble's is an ``Ensemble``)."""
    kind = registry.kind(model.config.model.name)
    return (kind.classifier_class or Classifier).from_model(model, info, held_out)


def load(directory: str | Path, device: str = "cpu") -> Classifier:
    """Load a bundle written by ``Classifier.save`` / ``titlecat train --output``, of any kind of model."""
    directory = Path(directory)
    meta, config = read_bundle(directory)
    kind = registry.kind(config.model.name)
    if kind.model_class.bundle_format != meta["format"]:
        raise BundleError(f"{directory / 'bundle.json'}: format {meta['format']!r} does not hold a "
                          f"{config.model.name} model")
    labels = _read_labels(directory, meta)
    try:
        model = kind.load(directory, config, labels, device)
    except (RuntimeError, KeyError, ValueError, TypeError, OSError) as e:
        if isinstance(e, BundleError):
            raise
        raise BundleError(f"{directory}: weights do not fit the bundle's config ({str(e).splitlines()[0]})") from None
    # bundle.json is not checksummed (it holds the checksums): what it says must agree with the files
    if meta.get("model") != config.model.name:
        raise BundleError(f"{directory / 'bundle.json'}: says model {meta.get('model')!r} but its config.yaml "
                          f"holds a {config.model.name} model; the file was edited")
    if meta.get("n_classes") != len(model.labels):
        raise BundleError(f"{directory / 'bundle.json'}: says n_classes {meta.get('n_classes')!r} but the model "
                          f"has {len(model.labels)} categories; the file was edited")
    held_out = _read_held_out(directory, meta, len(model.labels)) if HELD_OUT_FILE in meta["files"] else None
    return wrap(model, RunInfo.from_bundle(meta), held_out)


def _read_labels(directory: Path, meta: dict) -> LabelEncoder | None:
    if "labels.json" not in meta["files"]:
        return None  # an ensemble's: its members carry them
    path = listed_file(directory, "labels.json", meta)
    try:
        return LabelEncoder.from_dict(read_json(path))
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"{path}: damaged ({type(e).__name__}: {e})") from None


def _read_held_out(directory: Path, meta: dict, n_classes: int) -> HeldOut:
    path = listed_file(directory, HELD_OUT_FILE, meta)
    held = read_tensors(path)
    try:
        logits, rows, digest = held["logits"], held["labels"], held["digest"]
    except KeyError as e:
        raise BundleError(f"{path}: damaged (no tensor {e})") from None
    if logits.dim() != 2 or logits.shape[1] != n_classes or rows.shape != (logits.shape[0],) or digest.shape != (32,):
        raise BundleError(f"{path}: damaged (logits {tuple(logits.shape)} and labels {tuple(rows.shape)} do not fit "
                          f"{n_classes} categories)")
    return HeldOut(logits.numpy(), rows.numpy(), digest.numpy())
