"""Typed configuration: one ``Config`` per run, made of four sections.

Every field has a default and a one-line comment.  A config round-trips to YAML
(``to_yaml`` / ``from_yaml``), takes ``key=value`` overrides (``with_overrides``),
and flattens to MLflow params (``flat``).  Unknown keys and bad values raise
``ConfigError`` naming the key, never a traceback from deep inside training.

Two optional top-level entries do not change training: ``search``, the hyperparameter
search space of ``titlecat tune`` (dotted setting -> ``SearchParam``), and ``tuned_from``,
which ``titlecat tune`` writes into the best trial's config (the study it came from).

Model sections are registered with their models (``titlecat.registry``), so a new model is
one file plus one YAML file; nothing here lists the models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator,
                      model_serializer, model_validator)

from . import registry

PACKAGE_CONFIGS = Path(__file__).parent / "configs"


class ConfigError(ValueError):
    """A configuration problem, with the file or key that causes it."""


class Section(BaseModel):
    # extra="forbid": a typo in a YAML key is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TextConfig(Section):
    """How titles become tokens and sub-word features (see ``titlecat.text``)."""

    fold_accents: bool = True  # "cámara" and "camara" are one word; sellers drop accents at random
    split_units: bool = True  # "110cc" -> "110" "cc", so the unit is learned apart from the number
    max_tokens: int = Field(48, ge=1)  # titles are cut to this many tokens (guards 10,000-char titles)
    min_count: int = Field(1, ge=1)  # a training word seen fewer times is <unk> (its n-grams remain)
    max_vocab: int = Field(200_000, ge=10)  # most frequent training words kept, others are <unk>
    ngram_min: int = Field(3, ge=1)  # shortest character n-gram of "<word>" (0 disables with ngram_max=0)
    ngram_max: int = Field(5, ge=0)  # longest character n-gram; 0 turns sub-word features off
    buckets: int = Field(200_000, ge=1)  # hash buckets for character n-grams (shared by all n)
    bigram_buckets: int = Field(0, ge=0)  # hash buckets for word bigrams ("air max"); 0 = no bigrams
    language_token: bool = False  # prepend "__lang_<language>__" to each title that has a language (joint models)

    @field_validator("ngram_max")
    @classmethod
    def _ngram_order(cls, v: int, info: Any) -> int:
        lo = info.data.get("ngram_min", 1)
        if v and v < lo:
            raise ValueError(f"ngram_max ({v}) must be 0 or >= ngram_min ({lo})")
        return v


class DataConfig(Section):
    """Which rows are read and how the validation split is carved."""

    val_fraction: float = Field(0.1, gt=0.0, lt=0.5)  # share of each category held out for validation
    split_seed: int = 13  # seed of the stratified validation split
    language: Literal["all", "spanish", "portuguese"] = "all"  # keep rows of this language only
    label_quality: Literal["all", "reliable", "unreliable"] = "all"  # keep rows of this quality only
    skip_bad_rows: bool = False  # skip (and count) malformed rows instead of stopping at the first
    unreliable_weight: float = Field(1.0, ge=0.0, le=1.0)  # loss weight of training rows labelled "unreliable"
    # categories equal but for case ("Celulares", "CELULARES") are separate classes, with a warning;
    # true merges each group into its most frequent spelling (in the validation file too)
    merge_label_variants: bool = False


class TrainConfig(Section):
    """The optimisation loop (see ``titlecat.loop``)."""

    epochs: int = Field(20, ge=1)  # upper bound; early stopping usually ends sooner
    batch_size: int = Field(256, ge=1)  # titles per step
    lr: float = Field(2e-3, gt=0.0)  # peak learning rate (after warm-up)
    weight_decay: float = Field(0.0, ge=0.0)  # AdamW decoupled weight decay on dense weights
    warmup_steps: int = Field(100, ge=0)  # linear warm-up from 0 to lr
    schedule: Literal["constant", "linear", "cosine"] = "linear"  # decay after warm-up, to 0 at the last epoch
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)  # cross-entropy label smoothing
    # token dropout: each training title's tokens are left out with this probability (drawn
    # anew at every step; a title never loses all of them); evaluation sees whole titles
    token_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    # logit-adjusted loss (Menon et al., 2021): the loss sees logits + tau * log(training prior),
    # so the raw logits learn p(y|x) / p(y)^tau; tau = 1 is the Bayes rule for balanced accuracy
    # (every category weighs the same, whatever its share of the training rows); 0 = plain loss
    logit_adjustment: float = Field(0.0, ge=0.0)
    patience: int = Field(4, ge=1)  # validations (epoch ends, eval_every_steps) without a better val balanced accuracy before stopping
    # also validate every this many optimizer steps (0 = at epoch ends only): the best weights are
    # kept and early stopping counts at that grain (for epochs of millions of titles)
    eval_every_steps: int = Field(0, ge=0)
    max_steps: int = Field(0, ge=0)  # stop after this many optimizer steps (0 = none); the schedule still spans `epochs`
    seed: int = 42  # seeds torch, numpy and batch shuffling
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = cuda when available
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto = bf16 autocast on CUDA; the CPU always uses fp32
    num_threads: int = Field(0, ge=0)  # torch intra-op threads on the CPU; 0 = torch's default
    bucket_by_length: bool = True  # group titles of similar length in a batch (less padding)
    eval_batch_size: int = Field(2048, ge=1)  # titles per step when evaluating/predicting
    checkpoint_minutes: float = Field(10.0, ge=0.0)  # save the training state this often, after a step or at an epoch end (0 = at every epoch end)
    # refit (as scikit-learn's search CV does): once the best epoch is chosen on validation, train the
    # same config again from its seed on every row -- training and validation -- for that many
    # epochs (same learning-rate schedule) and keep that model; its validation scores stay those of
    # the first training, whose logits on the validation rows the bundle keeps (the refitted model
    # has learned from those rows)
    refit: bool = False
    # ...but only when the refit's rows (training + validation) number at most this many: on
    # millions of titles the validation rows add little to what the model learns and a refit
    # doubles an hours-long run (measured: benchmarks/results/scale.md); 0 = no limit
    refit_max_rows: int = Field(1_000_000, ge=0)


class DistillConfig(Section):
    """Learning from a teacher (``titlecat distill``): knowledge distillation (Hinton et al., 2015).

    The student learns each training title from the teacher's probabilities softened by
    ``temperature`` (a KL divergence, times T^2 so its gradients keep their size) mixed with the
    true label's cross-entropy, and each title of the transfer set -- titles made from the
    training titles, which the teacher never learned -- from the teacher alone.
    """

    # (the defaults: those chosen on validation for the MLP, configs/mlp-distill.yaml)
    temperature: float = Field(2.0, gt=0.0)  # T: teacher and student logits divided by it before the softmax
    alpha: float = Field(0.8, ge=0.0, le=1.0)  # weight of the teacher on a training title; 1 - alpha: its label
    transfer: int = Field(4, ge=0)  # transfer-set titles made from each training title (0: none)
    # how a transfer title is made, one of these drawn for each: "dropout" (each token left out
    # with probability transfer_dropout), "crop" (a run of at least half its tokens), "mix"
    # (the start of the title, the end of another training title)
    transfer_ops: list[Literal["dropout", "crop", "mix"]] = Field(["dropout"], min_length=1)
    transfer_dropout: float = Field(0.3, gt=0.0, lt=1.0)  # "dropout": each token's chance to be left out


class BaseModelConfig(Section):
    """Base of every model section; ``name`` selects the model."""

    name: str

    # Config sections this model does not read, left out of its YAML and MLflow params (an
    # ensemble's members bring their own text settings)
    unused_sections: ClassVar[tuple[str, ...]] = ()


class ModelConfig(BaseModelConfig):
    """Base of the neural models' sections: they all start from token vectors."""

    embedding_dim: int = Field(128, ge=1)  # size of word and n-gram vectors
    pretrained_vectors: str | None = None  # word2vec/fastText text file (.txt/.gz/.bz2) to initialise words
    freeze_pretrained: bool = False  # keep the pretrained word vectors fixed (n-grams still learn)


class SearchParam(Section):
    """The range ``titlecat tune`` searches for one setting (Optuna's ``suggest_float/int/categorical``)."""

    type: Literal["float", "int", "categorical"]  # how values are drawn
    low: int | float | None = None  # smallest value (float and int)
    high: int | float | None = None  # largest value, included (float and int)
    log: bool = False  # draw on a log scale (e.g. learning rates); needs low > 0
    step: int | float | None = None  # grid step between low and high (not with log)
    choices: list[Any] | None = None  # the values to choose from (categorical)

    @model_validator(mode="after")
    def _consistent(self) -> "SearchParam":
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs a non-empty 'choices' list")
            if self.low is not None or self.high is not None or self.log or self.step is not None:
                raise ValueError("categorical takes 'choices' only (no low/high/log/step)")
            return self
        if self.choices is not None:
            raise ValueError(f"{self.type} takes low/high, not 'choices' (use type: categorical)")
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs 'low' and 'high'")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.step is not None:
            raise ValueError("'log' and 'step' do not go together")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got {self.low}")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step must be > 0, got {self.step}")
        if self.type == "int" and any(v is not None and float(v) != int(v) for v in (self.low, self.high, self.step)):
            raise ValueError("int needs whole low, high and step")
        return self

    def values(self) -> list[Any]:
        """Values that must all be valid for the setting: both bounds, or every choice."""
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]

    @model_serializer(mode="wrap")
    def _compact(self, handler):
        """Only what was set: ``{type: float, low: 0.1, high: 0.6}``, not a row of nulls."""
        return {k: v for k, v in handler(self).items() if v is not None and not (k == "log" and v is False)}


class TunedFrom(Section):
    """Where a tuned config came from (written by ``titlecat tune``; training ignores it, MLflow tags show it)."""

    study: str  # Optuna study name
    storage: str  # Optuna storage URL (password hidden)
    trial: int  # number of the study's best trial, whose values this config holds
    val_balanced_accuracy: float  # that trial's validation balanced accuracy (the mean of its repeats)
    repeat_val_balanced_accuracy: list[float] | None = None  # each repeat's, with titlecat tune --repeats
    trials: int  # trials finished (complete or pruned) in the study when the file was written
    mlflow_parent_run_id: str | None = None  # the study's MLflow run (its trials are nested under it)
    # settings ("section.key") changed by hand after the study, each chosen on validation too (the
    # file's comments say how); every other setting is the trial's
    changed_after: list[str] = []


SETTINGS = ("model", "text", "data", "train")  # the sections that define a training



class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load``, except that a key given twice in one mapping is an error: YAML says
    keys are unique, and PyYAML would silently keep the last (``epochs: 1`` then ``epochs: 2``)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool, type(None))):
                continue  # an unhashable key: SafeLoader's own error says so
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (first on line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


class Config(Section):
    """A whole run: model, text processing, data and training settings."""

    model: SerializeAsAny[BaseModelConfig]
    text: TextConfig = TextConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    distill: DistillConfig | None = None  # learning from a teacher (titlecat distill); None: from the labels alone
    search: dict[str, SearchParam] = {}  # titlecat tune's search space, "section.key" -> range; training ignores it
    tuned_from: TunedFrom | None = None  # set by titlecat tune in the best trial's config; training ignores it

    @field_validator("model", mode="before")
    @classmethod
    def _resolve_model(cls, v: Any) -> Any:
        if isinstance(v, BaseModelConfig):
            return v
        if not isinstance(v, dict) or "name" not in v:
            raise ValueError("model: needs a mapping with a 'name' (one of " + ", ".join(model_names()) + ")")
        model_cls = registry.config_class(v["name"])
        if model_cls is None:
            raise ValueError(f"unknown model name {v['name']!r}; known: {', '.join(model_names())}")
        return model_cls.model_validate(v)

    @field_validator("search")
    @classmethod
    def _search_keys(cls, search: dict[str, SearchParam], info: Any) -> dict[str, SearchParam]:
        """Each key is an existing setting, and each bound or choice is a valid value of it."""
        base = _settings_so_far(info)
        if base is None:
            return search
        known = _flatten(base)
        for key, param in search.items():
            if key not in known or key == "model.name":
                raise ValueError(f"{key!r} is not a setting that can be searched; keys are section.key "
                                 "names of this config, such as model.dropout or train.lr")
            if param.type == "float" and isinstance(known[key], int) and not isinstance(known[key], bool):
                raise ValueError(f"{key}: a whole-number setting; use type: int (or categorical)")
            section, name = key.split(".", 1)
            for value in param.values():
                data = {**base, section: {**base[section], name: value}}
                try:
                    cls.model_validate(data)
                except ValidationError as e:
                    err = e.errors()[0]
                    raise ValueError(f"{key}: {value!r} is not a valid value ({err['msg']})") from None
        return search

    @field_validator("tuned_from")
    @classmethod
    def _changed_after_keys(cls, tuned_from: TunedFrom | None, info: Any) -> TunedFrom | None:
        """``tuned_from.changed_after`` names existing settings (a typo would hide a hand change)."""
        if tuned_from is None or not tuned_from.changed_after or (base := _settings_so_far(info)) is None:
            return tuned_from
        known = _flatten(base)
        for key in tuned_from.changed_after:
            if key not in known:
                raise ValueError(f"changed_after: {key!r} is not a setting; keys are section.key names of this "
                                 "config, such as train.token_dropout")
        return tuned_from

    # ---- construction -------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "Config":
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise ConfigError(_explain(e, source)) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Config":
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"{path}: is a directory, expected a YAML config file")
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw.count(b"\n", 0, e.start) + 1
            raise ConfigError(f"{path}:{line}: bytes that are not UTF-8 (0x{raw[e.start]:02x}); save the config as "
                              "UTF-8 text") from None
        try:
            data = yaml.load(text, Loader=_UniqueKeyLoader)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise ConfigError(f"{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def default(cls, model: str) -> "Config":
        """The shipped default config of a model (``configs/<model>.yaml``)."""
        path = PACKAGE_CONFIGS / f"{model}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown model {model!r}; known: {', '.join(model_names())}")
        return cls.from_yaml(path)

    def with_overrides(self, overrides: list[str] | dict[str, Any]) -> "Config":
        """Apply ``section.key=value`` overrides (values parsed as YAML scalars/lists)."""
        data = self.to_dict()
        items = overrides.items() if isinstance(overrides, dict) else [parse_override(o) for o in overrides]
        for key, value in items:
            parts = key.split(".")
            if parts[0] == "distill" and "distill" not in data:  # a distill setting starts from the defaults
                data["distill"] = DistillConfig().model_dump(mode="json")
            node = data
            for p in parts[:-1]:
                if not isinstance(node.get(p), dict):
                    raise ConfigError(f"--set {key}: unknown section {p!r}")
                node = node[p]
            if parts[-1] not in node and not (len(parts) == 2 and parts[0] == "model"):
                raise ConfigError(f"--set {key}: unknown key {parts[-1]!r} in section {'.'.join(parts[:-1]) or 'top'}")
            node[parts[-1]] = value
        return Config.from_dict(data, source="--set")

    # ---- export -------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Plain data for YAML and JSON; ``search`` and ``tuned_from`` only when set."""
        empty = {k for k in ("distill", "search", "tuned_from") if not getattr(self, k)} | set(self.model.unused_sections)
        return self.model_dump(mode="json", exclude=empty or None)

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def flat(self) -> dict[str, str]:
        """``{"model.dropout": "0.3", ...}`` for MLflow params (values within its 6000-char limit).

        The training settings only: ``search`` and ``tuned_from`` do not change a training.
        """
        data = self.to_dict()
        return {k: str(v)[:6000] for k, v in _flatten({s: data[s] for s in (*SETTINGS, "distill") if s in data}).items()}


def _settings_so_far(info: Any) -> dict[str, dict] | None:
    """In a ``Config`` field validator: the settings sections as plain data, or None when one of
    them failed validation (its own error says why)."""
    if not all(s in info.data for s in SETTINGS):
        return None
    return {s: info.data[s].model_dump(mode="json") for s in SETTINGS}


def _flatten(node: dict, prefix: str = "") -> dict[str, Any]:
    """``{"model": {"dropout": 0.3}}`` -> ``{"model.dropout": 0.3}`` (lists are leaves)."""
    out: dict[str, Any] = {}
    for k, v in node.items():
        key = f"{prefix}.{k}" if prefix else k
        out.update(_flatten(v, key) if isinstance(v, dict) else {key: v})
    return out


def model_names() -> list[str]:
    """The registered models' names (``import titlecat`` registers them)."""
    return registry.names()


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.lr=0.001")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _explain(e: ValidationError, source: str) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{loc}: {msg}")
    return f"{source}: " + "; ".join(lines)  # one line, every problem: an error is one line on the command line
