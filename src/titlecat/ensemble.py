"""Ensembles: several trained classifiers voting as one.

An ``Ensemble`` scores a title by the weighted mean of its members' log-probabilities (once
softmaxed, a normalised geometric mean of their probabilities).  Models that read a title
differently -- the MLP's bag of TF-IDF features, the CNN's windows of tokens, the GRU's and the
transformer's sequences -- make different mistakes, so the mean is right more often than any
one of them (README, "Ensemble": about a point of balanced accuracy over the best member).
Log-probabilities rather than probabilities: a member that is sure a category is wrong vetoes
it, and on validation the mean of log-probabilities was ahead in most member subsets.

``titlecat train --model ensemble`` (``configs/ensemble.yaml``) trains every member with its own
config on one validation split shared by all -- each member an MLflow run nested under the
ensemble's -- then scores the ensemble on that split and once on test.
``titlecat.Ensemble([clf, ...])`` combines models trained separately; ``save`` and
``titlecat.load`` keep it as one bundle (the members' bundles in ``members/``).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from pydantic import Field, model_validator

from .api import Classifier, load, score_test, split_description, train
from .evaluate import scores
from .bundle import BundleError, check_output_dir, read_ensemble_bundle, save_ensemble_bundle
from .config import (PACKAGE_CONFIGS, BaseModelConfig, Config, ConfigError, TextConfig, TrainConfig,
                     register_model_config)
from .features import Corpus, tokenisation_differences
from .tracking import make_logger, run_url_hint


@register_model_config
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
        the order of ``train_ensemble``'s members and of the bundle's ``members/``."""
        return [(i, k) for i in range(len(self.members)) for k in range(self.seeds)]

    def member_weights(self) -> list[float] | None:
        """The weight of each trained network (``expand``'s order), or None for equal weights."""
        return None if self.weights is None else [self.weights[i] for i, _ in self.expand()]


# the training settings an ensemble passes on to its members (the CLI's --device sets one);
# every other text or train setting belongs in the member configs
FORWARDED = ("train.device", "train.precision", "train.num_threads")


class Ensemble(Classifier):
    """Trained classifiers of the same categories, scoring as the weighted mean of their log-probabilities.

    ``predict``, ``predict_proba``, ``evaluate``, ``validate``, ``predict_file`` and ``save``
    work as for one model.  The members must tokenise titles alike (``text.fold_accents``,
    ``split_units``, ``max_tokens``, ``language_token``): each then encodes the same tokens with
    its own vocabulary and n-grams.
    """

    def __init__(self, members: Sequence[Classifier], weights: Sequence[float] | None = None,
                 config: Config | None = None):
        members = list(members)
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        first = members[0]
        for i, m in enumerate(members):
            if isinstance(m, Ensemble):
                raise ValueError(f"member {i} is itself an ensemble; pass its members instead")
            if list(m.labels.classes_) != list(first.labels.classes_):
                raise ValueError(f"member {i} ({m.config.model.name}) predicts other categories than member 0 "
                                 f"({first.config.model.name}): {len(m.labels)} vs {len(first.labels)}; members "
                                 "must be trained on the same categories")
            differ = tokenisation_differences(m.text_config, first.text_config)
            if differ:
                raise ValueError(f"member {i} ({m.config.model.name}) tokenises titles differently from member 0 "
                                 f"(text.{', text.'.join(differ)}); members must share these settings")
        weights = [1.0] * len(members) if weights is None else [float(w) for w in weights]
        if len(weights) != len(members) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"weights: one >= 0 per member ({len(members)}), not all 0; got {weights}")
        # Classifier.__init__ is not called: an ensemble has no featurizer or network of its own;
        # the methods that would use them (logits, text_config, save, num_parameters) are overridden
        self.members = members
        self.weights = weights
        if config is not None and isinstance(config.model, EnsembleConfig):
            n_config, seeds = len(config.model.members), config.model.seeds
            if n_config * seeds != len(members):
                raise ValueError(f"{len(members)} members for a config of {n_config * seeds} "
                                 f"({n_config} member configs x {seeds} seeds)")
        self.config = config or Config(model=EnsembleConfig(members=[m.config.model.name for m in members],
                                                            weights=weights), data=first.config.data)
        self.labels = first.labels
        self.device = first.device
        self.info: dict = {}

    @property
    def text_config(self) -> TextConfig:
        return self.members[0].text_config

    def logits(self, corpus: Corpus) -> np.ndarray:
        """(n, n_classes) weighted mean of the members' log-probabilities."""
        return self._combine({i: m.logits(corpus) for i, (m, w) in enumerate(zip(self.members, self.weights)) if w})

    def _combine(self, member_logits: dict[int, np.ndarray]) -> np.ndarray:
        """The weighted mean of the log-softmax of members' logits (member index -> logits)."""
        total = sum(self.weights)
        out = None
        for i, logits in member_logits.items():
            if self.weights[i] == 0:
                continue
            log_p = torch.log_softmax(torch.from_numpy(logits).float(), dim=1).mul_(self.weights[i] / total)
            out = log_p if out is None else out.add_(log_p)
        return out.numpy()

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
        out = scores(y, self._combine(dict(enumerate(per_member))))
        out["members"] = [scores(y, logits) for logits in per_member]
        return out

    def save(self, directory: str | Path) -> Path:
        extra = {k: self.info[k] for k in ("mlflow_run_id", "test_balanced_accuracy") if k in self.info}
        members = [(f"{i}-{m.config.model.name}", m.save) for i, m in enumerate(self.members)]
        return save_ensemble_bundle(directory, self.config, members, self.weights, len(self.labels), extra)

    def num_parameters(self) -> int:
        return sum(m.num_parameters() for m in self.members)


def load_ensemble(directory: str | Path, device: str = "cpu") -> Ensemble:
    """An ensemble bundle written by ``Ensemble.save`` (each member checked as any bundle)."""
    meta, config, dirs = read_ensemble_bundle(directory)
    try:
        ens = Ensemble([load(d, device) for d in dirs], meta["weights"], config)
    except ValueError as e:
        if isinstance(e, BundleError):
            raise
        raise BundleError(f"{directory}: its members do not form an ensemble ({e})") from None
    ens.info = {k: v for k, v in meta.items() if k not in ("files",)}
    return ens


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
        differ = tokenisation_differences(m.text, first)
        if differ:
            raise ConfigError(f"model.members[{i}] ({cfg.model.members[i]}) tokenises titles differently from "
                              f"members[0] (text.{', text.'.join(differ)}); members must share these settings")
    return [out[i].model_copy(update={"train": out[i].train.model_copy(update={"seed": out[i].train.seed + k})})
            for i, k in cfg.model.expand()]


def train_ensemble(cfg: Config, train_file: str | Path, test: str | Path | None = None,
                   validation: str | Path | None = None, *, output: str | Path | None = None, tracking: bool = True,
                   experiment: str = "titlecat", run_name: str | None = None,
                   cache_dir: str | Path | None = None) -> Ensemble:
    """Train each member (``titlecat.train``, MLflow runs nested under the ensemble's), then score
    the ensemble on the shared validation split and once on ``test``; save it to ``output``."""
    configs = member_configs(cfg)  # every member config checked before the first hour of training
    if output is not None:
        check_output_dir(output)
    t_start = time.perf_counter()
    name = run_name or "ensemble"
    logger = make_logger(tracking, experiment, name)
    refits = [str(c.train.refit) for c in configs]  # the members' own (train settings are theirs)
    logger.log_params({**{k: v for k, v in cfg.flat().items() if k.startswith(("model.", "data."))},
                       "train.refit": refits[0] if len(set(refits)) == 1 else ",".join(refits),
                       "data.train_file": str(train_file), "data.test_file": str(test),
                       "data.validation": split_description(train_file, validation, cfg.data)})
    logger.set_tags({"model": "ensemble"})
    status = "FAILED"
    try:
        members = []
        specs = [cfg.model.members[i] for i, _ in cfg.model.expand()]
        for i, member_cfg in enumerate(configs):
            print(f"titlecat: ensemble member {i + 1}/{len(configs)}: {member_cfg.model.name} "
                  f"({specs[i]}, seed {member_cfg.train.seed})", file=sys.stderr, flush=True)
            clf = train(train_file, test, validation, config=member_cfg, tracking=tracking, experiment=experiment,
                        run_name=f"{name}/{i}-{member_cfg.model.name}", cache_dir=cache_dir,
                        parent_run_id=logger.run_id)
            members.append(clf)
            logger.log_metrics({f"member{i}_{member_cfg.model.name}_val_balanced_accuracy":
                                clf.info["best_val_balanced_accuracy"]})
        ens = Ensemble(members, cfg.model.member_weights(), cfg)
        val = ens.validate(train_file, validation, cache_dir)
        train_seconds = sum(m.info["train_seconds"] for m in members)
        ens.info = {"mlflow_run_id": logger.run_id, "best_epoch": None,
                    "best_val_balanced_accuracy": val["balanced_accuracy"], "val_accuracy": val["accuracy"],
                    "train_seconds": train_seconds, "n_train": members[0].info["n_train"],
                    "n_val": members[0].info["n_val"], "parameters": ens.num_parameters(),
                    "members": [{"model": m.config.model.name, "config": spec, "seed": m.config.train.seed,
                                 **{k: m.info.get(k) for k in ("mlflow_run_id", "best_epoch", "refit_epochs",
                                                               "best_val_balanced_accuracy", "train_seconds",
                                                               "test_balanced_accuracy")}}
                                for m, spec in zip(members, specs)]}
        # "best_" as a training's scores of its chosen epoch; the per-epoch names (val_loss, ...) would
        # draw a one-point loss curve
        logger.log_metrics({"best_val_balanced_accuracy": val["balanced_accuracy"],
                            "best_val_accuracy": val["accuracy"], "best_val_loss": val["loss"],
                            "train_seconds": train_seconds})
        logger.log_params({"model.parameters": ens.num_parameters()})
        with tempfile.TemporaryDirectory(prefix="titlecat-ensemble-") as tmp:
            art = Path(tmp)
            if test is not None:
                score_test(ens, test, cfg.data, logger, art)
            cfg.to_yaml(art / "config.yaml")
            logger.log_artifact(art / "config.yaml")
            # the members' bundles are their own runs' "model" artifacts; this run names them
            # rather than holding a second copy of every weight
            members_md = art / "members.md"
            members_md.write_text("\n".join(
                ["| member | config | seed | MLflow run | best epoch | val bal. acc. | test bal. acc. |",
                 "|---|---|---|---|---|---|---|"]
                + [f"| {i}-{m['model']} | {m['config']} | {m['seed']} | {m['mlflow_run_id']} | {m['best_epoch']} | "
                   f"{m['best_val_balanced_accuracy']:.4f} | "
                   + (f"{m['test_balanced_accuracy']:.4f} |" if m["test_balanced_accuracy"] is not None else "- |")
                   for i, m in enumerate(ens.info["members"])]) + "\n", encoding="utf-8")
            logger.log_artifact(members_md)
        if output is not None:
            ens.save(output)
        ens.info["total_seconds"] = time.perf_counter() - t_start
        ens.info["tracking"] = run_url_hint(logger)
        status = "FINISHED"
        return ens
    finally:
        logger.close(status)
