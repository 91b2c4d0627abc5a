"""Ensembles: several trained classifiers voting as one.

An ``Ensemble`` scores a title by the weighted mean of its members' log-probabilities (once
softmaxed, a normalised geometric mean of their probabilities).  Models that read a title
differently -- the MLP's bag of TF-IDF features, the CNN's windows of tokens, the GRU's and the
transformer's sequences -- make different mistakes, so the mean is right more often than any
one of them (README, "Ensemble": about a point of balanced accuracy over the best member).
Log-probabilities rather than probabilities: a member that is sure a category is wrong vetoes
it, and on validation the mean of log-probabilities was ahead in most member subsets.

``titlecat train --model ensemble`` (``configs/ensemble.yaml``) runs the recipe as for any model:
the ensemble's ``fit`` trains every member with its own config on the one validation split
the recipe carved -- each member a whole training of its own, an MLflow run nested under the
ensemble's -- and the recipe then scores the ensemble on that split and once on test.
``titlecat.Ensemble([clf, ...])`` combines models trained separately; ``save`` and
``titlecat.load`` keep it as one bundle (the members' bundles in ``members/``).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from pydantic import Field, model_validator

from .. import registry
from ..bundle import ENSEMBLE_FORMAT, ENSEMBLE_MEMBERS, BundleError, read_json
from ..classifier import Classifier, MemberInfo, load, quantized_model
from ..config import PACKAGE_CONFIGS, BaseModelConfig, Config, ConfigError, TextConfig
from ..corpus import Corpus
from ..dataset import Rows
from ..evaluate import scores
from ..quantize import QuantizeSpec
from ..tokenizer import tokenize_differences
from ..vocab import LabelEncoder
from .protocol import FitResult, FitRun


class EnsembleConfig(BaseModelConfig):
    """An ensemble's model section: which configs to train, and how much each one's vote weighs."""

    name: Literal["ensemble"] = "ensemble"
    unused_sections = ("text",)
    members: list[str] = Field(min_length=2)  # shipped model names (mlp, cnn, ...) or paths of YAML configs
    weights: list[float] | None = None  # weight of each member's log-probabilities; None = equal
    # each member config trained this many times, with train.seed, train.seed + 1, ...: a network's
    # scores move by a few tenths of a point from one seed to the next, and the mean of several
    # trainings is both better and steadier than any one (each copy votes with its member's weight)
    seeds: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> "EnsembleConfig":
        if "ensemble" in self.members:
            raise ValueError("members: an ensemble cannot be a member of an ensemble")
        if self.weights is not None:
            if len(self.weights) != len(self.members):
                raise ValueError(f"weights: {len(self.weights)} given for {len(self.members)} members")
            if min(self.weights) < 0 or sum(self.weights) <= 0:
                raise ValueError("weights: each must be >= 0, and at least one > 0")
        return self

    def expand(self) -> list[tuple[int, int]]:
        """``(member index, seed offset)`` of every network the ensemble trains, member by member:
        the order of the trained members and of the bundle's ``members/``."""
        return [(i, k) for i in range(len(self.members)) for k in range(self.seeds)]

    def member_weights(self) -> list[float] | None:
        """The weight of each trained network (``expand``'s order), or None for equal weights."""
        return None if self.weights is None else [self.weights[i] for i, _ in self.expand()]


# the training settings an ensemble passes on to its members (the CLI's --device sets one);
# every other text or train setting belongs in the member configs
FORWARDED = ("train.device", "train.precision", "train.num_threads")


class EnsembleModel:
    """The model protocol for an ensemble: members' log-probabilities, weighted and averaged."""

    bundle_format = ENSEMBLE_FORMAT

    def __init__(self, config: Config, *, device: Any = None):
        # device: members are built on their own train.device (an ensemble forwards --device to them)
        if config.distill is not None:
            raise ConfigError("distill: an ensemble's members learn from labels; distill into one network "
                              "(--model mlp, cnn, rnn or transformer)")
        self.config = config
        # every member config read and checked now, before the first hour of training
        self.member_configs = member_configs(config)
        self.members: list[Classifier] = []
        self.weights: list[float] = []

    @classmethod
    def from_members(cls, members: Sequence[Classifier], weights: Sequence[float] | None = None,
                     config: Config | None = None) -> "EnsembleModel":
        """An ensemble of classifiers trained separately (``config``: the one that trained them, if any)."""
        members = list(members)
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        first = members[0]
        for i, m in enumerate(members):
            if isinstance(m.model, EnsembleModel):
                raise ValueError(f"member {i} is itself an ensemble; pass its members instead")
            if list(m.labels.classes_) != list(first.labels.classes_):
                raise ValueError(f"member {i} ({m.config.model.name}) predicts other categories than member 0 "
                                 f"({first.config.model.name}): {len(m.labels)} vs {len(first.labels)}; members "
                                 "must be trained on the same categories")
            differ = tokenize_differences(m.text_config, first.text_config)
            if differ:
                raise ValueError(f"member {i} ({m.config.model.name}) tokenizes titles differently from member 0 "
                                 f"(text.{', text.'.join(differ)}); members must share these settings")
        weights = [1.0] * len(members) if weights is None else [float(w) for w in weights]
        if len(weights) != len(members) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"weights: one >= 0 per member ({len(members)}), not all 0; got {weights}")
        if config is not None and isinstance(config.model, EnsembleConfig):
            n_config, seeds = len(config.model.members), config.model.seeds
            if n_config * seeds != len(members):
                raise ValueError(f"{len(members)} members for a config of {n_config * seeds} "
                                 f"({n_config} member configs x {seeds} seeds)")
        model = cls.__new__(cls)  # the members are trained: no member configs to read
        model.config = config or Config(model=EnsembleConfig(members=[m.config.model.name for m in members],
                                                             weights=weights), data=first.config.data)
        model.members, model.weights = members, weights
        model.member_configs = [m.config for m in members]
        return model

    @property
    def labels(self) -> LabelEncoder:
        return self.members[0].labels

    @property
    def text_config(self) -> TextConfig:
        """The members' tokenization (they share it; their vocabularies and n-grams are their own)."""
        return self.members[0].text_config if self.members else self.member_configs[0].text

    # ---- learning -----------------------------------------------------------------------

    def fit(self, train: Rows, validation: Rows | None, run: FitRun) -> FitResult:
        """Train each member through the recipe (``run.train_member``: a whole training of its own,
        nested under this run), then score the ensemble on the shared validation rows."""
        if run.train_member is None or validation is None:
            raise ValueError("an ensemble is trained by titlecat.train (its members need the recipe and a "
                             "validation split)")
        specs = [self.config.model.members[i] for i, _ in self.config.model.expand()]
        refits = [str(c.train.refit) for c in self.member_configs]  # the members' own (train settings are theirs)
        run.logger.log_params({"members.refit": refits[0] if len(set(refits)) == 1 else ",".join(refits)})
        members = []
        for i, member_cfg in enumerate(self.member_configs):
            print(f"titlecat: ensemble member {i + 1}/{len(self.member_configs)}: {member_cfg.model.name} "
                  f"({specs[i]}, seed {member_cfg.train.seed})", file=sys.stderr, flush=True)
            clf = run.train_member(member_cfg, f"{i}-{member_cfg.model.name}")
            members.append(clf)
            run.logger.log_metrics({f"member{i}_{member_cfg.model.name}_val_balanced_accuracy":
                                    clf.info.best_val_balanced_accuracy})
        # the same checks as for members trained separately (same categories, same tokenization)
        trained = EnsembleModel.from_members(members, self.config.model.member_weights(), self.config)
        self.members, self.weights = trained.members, trained.weights
        per_member = [m.validation_logits(validation.corpus, validation.y) for m in members]
        val = scores(validation.y, self.combine(per_member))
        infos = [MemberInfo(model=m.config.model.name, config=spec, seed=m.config.train.seed,
                            mlflow_run_id=m.info.mlflow_run_id, best_epoch=m.info.best_epoch,
                            refit_epochs=m.info.refit_epochs,
                            best_val_balanced_accuracy=m.info.best_val_balanced_accuracy,
                            train_seconds=m.info.train_seconds, test_balanced_accuracy=m.info.test_balanced_accuracy)
                 for m, spec in zip(members, specs)]
        # "best_" as a training's scores of its chosen epoch; the per-epoch names (val_loss, ...) would
        # draw a one-point loss curve
        run.logger.log_metrics({"best_val_accuracy": val["accuracy"], "best_val_loss": val["loss"]})
        _log_members_table(infos, run)
        return FitResult(best_epoch=None, best_val_balanced_accuracy=val["balanced_accuracy"],
                         train_seconds=sum(m.info.train_seconds or 0.0 for m in members), val_scores=val,
                         members=infos)

    # ---- use ----------------------------------------------------------------------------

    def logits(self, corpus: Corpus) -> np.ndarray:
        """(n, n_classes) weighted mean of the members' log-probabilities."""
        return self.combine({i: m.logits(corpus) for i, (m, w) in enumerate(zip(self.members, self.weights)) if w})

    def combine(self, member_logits: dict[int, np.ndarray] | list[np.ndarray]) -> np.ndarray:
        """The weighted mean of the log-softmax of members' logits (member index -> logits, or a list)."""
        if isinstance(member_logits, list):
            member_logits = dict(enumerate(member_logits))
        total = sum(self.weights)
        out = None
        for i, logits in member_logits.items():
            if self.weights[i] == 0:
                continue
            log_p = torch.log_softmax(torch.from_numpy(logits).float(), dim=1).mul_(self.weights[i] / total)
            out = log_p if out is None else out.add_(log_p)
        return out.numpy()

    def quantized(self, spec: QuantizeSpec) -> "EnsembleModel":
        """Every member quantized so (``keep`` rows each)."""
        return EnsembleModel.from_members([quantized_model(m, spec) for m in self.members], self.weights, self.config)

    def num_parameters(self) -> int:
        return sum(m.num_parameters() for m in self.members)

    # ---- bundle files -------------------------------------------------------------------

    def save(self, directory: Path) -> dict[str, Any]:
        names = [f"{ENSEMBLE_MEMBERS}/{i}-{m.config.model.name}" for i, m in enumerate(self.members)]
        for name, m in zip(names, self.members):
            m.save(directory / name)
        return {"members": names, "weights": self.weights}

    @classmethod
    def load(cls, directory: Path, config: Config, labels: LabelEncoder | None, *,
             device: Any = None) -> "EnsembleModel":
        meta_path = directory / "bundle.json"
        meta = read_json(meta_path)
        members, weights = meta.get("members"), meta.get("weights")
        if not (isinstance(members, list) and isinstance(weights, list) and 0 < len(members) == len(weights)):
            raise BundleError(f"{meta_path}: damaged (expected equally long 'members' and 'weights' lists)")
        dirs = [directory / m for m in members]
        outside = [str(m) for m, d in zip(members, dirs) if directory.resolve() not in d.resolve().parents]
        if outside:  # a bundle is self-contained: it never points elsewhere on the machine
            raise BundleError(f"{meta_path}: member {outside[0]!r} lies outside the bundle")
        missing = [str(d) for d in dirs if not d.is_dir()]
        if missing:
            raise BundleError(f"{missing[0]}: member bundle missing from the ensemble")
        loaded = [load(d, device or "cpu") for d in dirs]
        try:
            return cls.from_members(loaded, weights, config)
        except ValueError as e:
            raise BundleError(f"{directory}: its members do not form an ensemble ({e})") from None


def _log_members_table(infos: list[MemberInfo], run: FitRun) -> None:
    """``members.md``: each member's run and scores (the members' bundles are their own runs'
    "model" artifacts; the ensemble's run names them rather than holding a second copy)."""
    with tempfile.TemporaryDirectory(prefix="titlecat-ensemble-") as tmp:
        path = Path(tmp) / "members.md"
        path.write_text("\n".join(
            ["| member | config | seed | MLflow run | best epoch | val bal. acc. | test bal. acc. |",
             "|---|---|---|---|---|---|---|"]
            + [f"| {i}-{m.model} | {m.config} | {m.seed} | {m.mlflow_run_id} | {m.best_epoch} | "
               f"{m.best_val_balanced_accuracy:.4f} | "
               + (f"{m.test_balanced_accuracy:.4f} |" if m.test_balanced_accuracy is not None else "- |")
               for i, m in enumerate(infos)]) + "\n", encoding="utf-8")
        run.logger.log_artifact(path)


class Ensemble(Classifier):
    """Trained classifiers of the same categories, scoring as the weighted mean of their log-probabilities.

    ``predict``, ``predict_proba``, ``evaluate``, ``validate``, ``predict_file`` and ``save``
    work as for one model.  The members must tokenize titles alike (``text.fold_accents``,
    ``split_units``, ``max_tokens``, ``language_token``): each then encodes the same tokens with
    its own vocabulary and n-grams.
    """

    model: EnsembleModel

    def __init__(self, members: Sequence[Classifier], weights: Sequence[float] | None = None,
                 config: Config | None = None):
        super().__init__(EnsembleModel.from_members(members, weights, config))

    @property
    def members(self) -> list[Classifier]:
        return self.model.members

    @property
    def weights(self) -> list[float]:
        return self.model.weights

    def validation_logits(self, corpus: Corpus, y: np.ndarray) -> np.ndarray:
        """The members' validation logits (a refitted member's: those it kept), combined."""
        return self.model.combine([m.validation_logits(corpus, y) for m in self.members])

    def validate(self, train: str | Path, validation: str | Path | None = None,
                 cache_dir: str | Path | None = None) -> dict:
        """As ``Classifier.validate``, plus ``members``: each member's scores on the same rows (every
        member runs once).  The members must have been validated alike (or pass ``validation``)."""
        if validation is None:
            split = {(m.config.data.val_fraction, m.config.data.split_seed) for m in self.members}
            if len(split) > 1:
                raise ValueError(f"the members carved different validation splits (val_fraction, split_seed) "
                                 f"{sorted(split)}: rows one member validated on, another trained on; pass a "
                                 "validation file")
        corpus, y = self._validation_rows(train, validation, cache_dir)
        per_member = [m.validation_logits(corpus, y) for m in self.members]  # a refitted member's: kept ones
        out = scores(y, self.model.combine(per_member))
        out["members"] = [scores(y, logits) for logits in per_member]
        return out


registry.add(registry.Kind("ensemble", EnsembleConfig, EnsembleModel, classifier_class=Ensemble))


def member_configs(cfg: Config) -> list[Config]:
    """Each trained network's whole config (``EnsembleConfig.expand``'s order: ``model.seeds`` per
    member, ``train.seed`` counting up from the member's own), with the ensemble's data section (one
    validation split for all, so the ensemble is scored on rows none of its members learned from)
    and forwarded settings."""
    defaults = Config(model=cfg.model).flat()
    flat = cfg.flat()
    own = [k for k, v in flat.items() if k.startswith("train.") and k not in FORWARDED and v != defaults[k]]
    if cfg.text != TextConfig():
        own += [f"text.{k}" for k, v in cfg.text.model_dump().items() if v != getattr(TextConfig(), k)]
    if own:
        raise ConfigError(f"{', '.join(own)}: an ensemble's members bring their own text and train settings; "
                          "set them in the member configs (an ensemble takes model.members, model.weights, "
                          f"model.seeds, data.* and {', '.join(FORWARDED)})")
    forwarded = {k.split(".", 1)[1]: getattr(cfg.train, k.split(".", 1)[1]) for k in FORWARDED
                 if flat[k] != defaults[k]}
    out = []
    for i, spec in enumerate(cfg.model.members):
        if (PACKAGE_CONFIGS / f"{spec}.yaml").is_file():
            member = Config.default(spec)
        elif spec.endswith((".yaml", ".yml")) or "/" in spec:
            try:
                member = Config.from_yaml(spec)
            except ConfigError as e:
                raise ConfigError(f"model.members[{i}]: {e}") from None
        else:
            raise ConfigError(f"model.members[{i}]: {spec!r} is neither a shipped model config "
                              f"({', '.join(sorted(p.stem for p in PACKAGE_CONFIGS.glob('*.yaml') if p.stem != 'ensemble'))}) "
                              "nor a YAML file")
        if isinstance(member.model, EnsembleConfig):
            raise ConfigError(f"model.members[{i}]: {spec} is itself an ensemble")
        out.append(member.model_copy(update={"data": cfg.data, "train": member.train.model_copy(update=forwarded)}))
    first = out[0].text
    for i, m in enumerate(out[1:], 1):
        differ = tokenize_differences(m.text, first)
        if differ:
            raise ConfigError(f"model.members[{i}] ({cfg.model.members[i]}) tokenizes titles differently from "
                              f"members[0] (text.{', text.'.join(differ)}); members must share these settings")
    return [out[i].model_copy(update={"train": out[i].train.model_copy(update={"seed": out[i].train.seed + k})})
            for i, k in cfg.model.expand()]
