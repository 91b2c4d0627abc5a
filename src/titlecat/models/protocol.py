"""The one interface every kind of model implements: the neural networks (``NeuralModel``),
the TF-IDF baseline (``TfidfModel``), the ensemble (``EnsembleModel``) and whatever comes next.

The recipe (``titlecat.recipe``), ``Classifier`` and the bundle talk to a model only through
this protocol, and find its class in ``titlecat.registry`` by the config's ``model.name``:
none of them asks which kind of model it holds.

A model's life, scikit-learn style::

    model = Kind(config, device=...)          # stores settings and checks them; learns nothing
    model.text_config                          # how titles must be tokenized for it
    result = model.fit(train, validation, run) # learns: vocabulary, weights, ... -> FitResult
    model.logits(corpus)                       # (n, n_classes) scores of tokenized titles
    model.save(directory)                      # its own files in a bundle directory
    Kind.load(directory, config, labels, device=...)

One capability is optional, outside the protocol, so that a new kind need not offer it:
``model.quantized(spec)``, a copy with its embedding tables in fewer bits (``titlecat
quantize``: the networks, and an ensemble of them; the TF-IDF baseline refuses with a reason).
``Classifier.quantize`` says so for a kind without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol, runtime_checkable

import numpy as np

from ..checkpoint import Checkpoints
from ..config import Config, TextConfig
from ..corpus import Corpus
from ..dataset import Rows
from ..tracking import NullLogger, RunLogger
from ..vocab import LabelEncoder


@dataclass
class FitResult:
    """What a fit reports: per-epoch metrics and the epoch validation chose."""

    history: list[dict] = field(default_factory=list)  # one dict of metrics per epoch
    best_epoch: int | None = 0  # the epoch whose weights were kept (None: a model without epochs of its own)
    best_val_balanced_accuracy: float = -1.0  # validation balanced accuracy of that epoch
    train_seconds: float = 0.0  # time spent learning (featurizing excluded)
    steps: int = 0  # optimizer steps
    prep_seconds: float = 0.0  # time spent preparing the rows for the model (vocabulary, encoding)
    val_scores: dict[str, Any] = field(default_factory=dict)  # the chosen epoch's validation scores, when known
    members: list[Any] = field(default_factory=list)  # an ensemble's members' facts (``classifier.MemberInfo``)
    # the epochs of training the kept weights had: fractional when validation chose them between
    # epoch ends (``train.eval_every_steps``); what a refit trains (None: ``best_epoch``)
    best_epochs: float | None = None


@dataclass
class FitRun:
    """Everything a fit is given besides its rows: where it logs, checkpoints and reports."""

    logger: RunLogger = field(default_factory=NullLogger)  # metrics and params (``titlecat.tracking``)
    checkpoints: Checkpoints | None = None  # where a long fit saves and resumes its state
    on_epoch: Callable[[int, dict], None] | None = None  # called after each epoch; may raise to stop (tune)
    epochs: float | None = None  # a refit: exactly this many epochs of the schedule (maybe fractional), no validation
    metric_prefix: str = ""  # prepended to every metric name (``refit_`` in a refit)
    # trains one of a composite model's sub-models through the recipe, as a nested run:
    # (config, name) -> trained ``Classifier``; the recipe gives it (an ensemble's members)
    train_member: Callable[[Config, str], Any] | None = None

    @property
    def is_refit(self) -> bool:
        return self.epochs is not None


@runtime_checkable
class Model(Protocol):
    """A kind of model, as the recipe, ``Classifier`` and the bundle use it."""

    bundle_format: ClassVar[str]  # the ``format`` its bundle's ``bundle.json`` names
    config: Config  # the whole config it was built from
    labels: LabelEncoder  # the categories it predicts (set by ``fit`` or ``load``)

    def __init__(self, config: Config, *, device: Any = None, **options: Any) -> None:
        """An untrained model; raises ``ConfigError`` for settings it cannot train with."""

    @property
    def text_config(self) -> TextConfig:
        """The text settings titles are tokenized with before ``logits``."""

    def fit(self, train: Rows, validation: Rows | None, run: FitRun) -> FitResult:
        """Learn from ``train`` (class indices under ``train.labels``); choose on ``validation``."""

    def logits(self, corpus: Corpus) -> np.ndarray:
        """(n, n_classes) float32 scores of tokenized titles: the one place that runs the model."""

    def num_parameters(self) -> int:
        ...

    def save(self, directory: Path) -> dict[str, Any]:
        """Write its own files into a bundle ``directory``; returns entries for ``bundle.json``."""

    @classmethod
    def load(cls, directory: Path, config: Config, labels: LabelEncoder | None, *, device: Any = None,
             **options: Any) -> "Model":
        """The model a bundle ``directory`` holds (``labels``: the bundle's ``labels.json``, if any)."""
