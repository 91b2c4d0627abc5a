"""Neural models: the ``TitleModel`` networks, and ``NeuralModel``, which puts any of them
behind the model protocol.

Every network is a ``TitleModel``: built from ``(config, n_words, n_buckets, n_classes)``,
called as ``network(batch) -> (B, n_classes)`` logits.  ``NeuralModel`` owns the rest -- the
featurizer fitted on the training rows, the device, the training loop (``titlecat.loop``),
the bundle files -- so a network file holds its config and its ``forward``, and registers
itself with one decorator, ``@register_network(ItsConfig)``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import registry
from ..batching import Batch
from ..bundle import BundleError, listed_file, read_json, read_tensors, write_json, write_tensors
from ..config import Config, ModelConfig, TextConfig
from ..corpus import Corpus
from ..dataset import Rows
from ..evaluate import predict_logits
from ..featurizer import Encoded, Featurizer
from ..loop import fit, resolve_device
from ..quantize import QuantizedTables, QuantizeSpec, encode, rows_to_keep
from ..tracking import RunLogger
from ..vectors import coverage, load_word_vectors
from ..vocab import PAD, UNK, LabelEncoder
from .embedding import TokenEmbedder, tables_loaded_later
from .protocol import FitResult, FitRun

FORMAT = "titlecat-bundle"
TABLES_FILE = "tables.safetensors"  # a quantized model's embedding tables (``titlecat.quantize``)


class TitleModel(nn.Module):
    """Base class of the networks: owns the ``TokenEmbedder`` (``self.embed``); subclasses define ``forward``."""

    def __init__(self, cfg: ModelConfig, n_words: int, n_buckets: int, n_classes: int, n_bigram_buckets: int = 0):
        super().__init__()
        self.cfg = cfg
        self.n_classes = n_classes
        self.embed = TokenEmbedder(n_words, n_buckets, cfg.embedding_dim, n_bigram_buckets)

    def forward(self, batch: Batch) -> torch.Tensor:  # (B, n_classes)
        raise NotImplementedError

    def adapt(self, data: Encoded) -> None:
        """Set state that is computed from the training data, not learned (called once by
        ``NeuralModel.fit`` before the first epoch, never on validation or test data)."""

    def load_word_vectors(self, vectors: torch.Tensor, found: torch.Tensor, freeze: bool) -> None:
        """Copy pretrained rows (``found`` marks vocabulary words that had a vector)."""
        with torch.no_grad():
            self.embed.words.weight[found] = vectors[found].to(self.embed.words.weight.dtype)
        if freeze:
            self.embed.words.weight.requires_grad_(False)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def register_network(config_class: type[ModelConfig]):
    """Class decorator of a network file: ``model.name`` of ``config_class`` trains this network."""
    def decorate(network: type[TitleModel]) -> type[TitleModel]:
        name = config_class.model_fields["name"].default
        registry.add(registry.Kind(name, config_class, NeuralModel, {"network": network}))
        return network

    return decorate


def networks() -> dict[str, type[TitleModel]]:
    """Every registered network, by model name."""
    return {k.name: k.options["network"] for k in registry.kinds() if k.model_class is NeuralModel}


def build_network(cfg: ModelConfig, n_words: int, n_buckets: int, n_classes: int,
                  n_bigram_buckets: int = 0) -> TitleModel:
    """The network of ``cfg.name`` with embedding tables of the featurizer's sizes (``Featurizer.sizes()``)."""
    return networks()[cfg.name](cfg, n_words, n_buckets, n_classes, n_bigram_buckets)


class NeuralModel:
    """A ``TitleModel`` network with its featurizer, trained by the one training loop."""

    bundle_format = FORMAT

    def __init__(self, config: Config, *, device: Any = None, network: type[TitleModel]):
        self.config = config
        self.network_class = network
        # resolved now: train.device=cuda without a GPU is an error before any data is read
        self.device = resolve_device(config.train.device) if device is None else torch.device(device)
        self.featurizer: Featurizer | None = None  # fitted on the training rows by fit()
        self.network: TitleModel | None = None
        self.labels: LabelEncoder | None = None
        # a quantized model's tables as its bundle stores them (the network holds them decoded)
        self.tables: QuantizedTables | None = None

    @property
    def text_config(self) -> TextConfig:
        return self.config.text

    # ---- learning -----------------------------------------------------------------------

    def fit(self, train: Rows, validation: Rows | None, run: FitRun) -> FitResult:
        # -- features: vocabulary (and idf) from the training rows only --
        t0 = time.perf_counter()
        self.labels = train.labels
        self.featurizer = Featurizer(self.config.text).fit(train.corpus)
        train_data = self.featurizer.encode(train.corpus, train.y)
        train_data.weights = train.weights
        val_data = None if validation is None else self.featurizer.encode(validation.corpus, validation.y)
        self.network = self._new_network(train_data, None if run.is_refit else run.logger)
        if train.teacher is not None:  # distillation: the teacher's logits, and the transfer set's rows after
            rows = train.with_transfer()
            train_data = self.featurizer.encode(rows.corpus, rows.y)  # (the idf above: the training rows' only)
            train_data.weights, train_data.teacher = rows.weights, rows.teacher
        prep_seconds = time.perf_counter() - t0
        # -- the loop --
        result = fit(self.network, train_data, val_data, self.config.train, run.logger, self.device,
                     run.checkpoints, run.on_epoch, stop_after=run.epochs, metric_prefix=run.metric_prefix,
                     distill=self.config.distill)
        self.network.eval()
        result.prep_seconds = prep_seconds
        return result

    def _new_network(self, train_data: Encoded, logger: RunLogger | None) -> TitleModel:
        """The untrained network, adapted to the training rows (e.g. the MLP's idf), with
        pretrained word vectors loaded if the config names them; their facts go to ``logger``."""
        cfg = self.config.model
        net = build_network(cfg, n_classes=len(self.labels), **self.featurizer.sizes())
        net.adapt(train_data)  # from training rows only
        params: dict[str, object] = {"data.vocab_size": len(self.featurizer.vocab_)}
        if cfg.pretrained_vectors:
            vecs, found = load_word_vectors(cfg.pretrained_vectors, self.featurizer.vocab_, cfg.embedding_dim,
                                            self.config.text.fold_accents)
            net.load_word_vectors(vecs, found, cfg.freeze_pretrained)
            params["pretrained_coverage"] = round(coverage(found), 4)
        if logger is not None:  # once per run: a refit's larger vocabulary is not logged over it
            logger.log_params(params)
        return net.to(self.device)

    # ---- use ----------------------------------------------------------------------------

    def logits(self, corpus: Corpus) -> np.ndarray:
        return predict_logits(self.network, self.featurizer.encode(corpus), self.config.train.eval_batch_size,
                              self.device)

    def num_parameters(self) -> int:
        return self.network.num_parameters()

    # ---- quantization -----------------------------------------------------------------------

    def quantized(self, spec: QuantizeSpec) -> "NeuralModel":
        """This model with its embedding tables pruned to the rows that carry most and coded in
        fewer bits (``titlecat.quantize``); its network holds the decoded tables, so it predicts
        exactly as its bundle will after ``titlecat.load``."""
        embed = self.network.embed
        spec.check(embed.dim)
        tables = embed.tables()
        scores = {name: s.cpu().numpy() for name, s in embed.row_scores().items()}
        # <pad> and <unk> are the vocabulary's own; a hashed table keeps at least its best row (a
        # network built without one would have another shape)
        always = {name: [int(np.argmax(s))] for name, s in scores.items() if name != "words"}
        keep = rows_to_keep(scores, spec.keep, {**always, "words": [PAD, UNK]})
        featurizer = self.featurizer.with_rows(keep["words"], keep.get("ngrams"), keep.get("bigrams"))
        codes = {name: encode(tables[name].weight.detach()[torch.from_numpy(rows)], spec) for name, rows in keep.items()}
        q = QuantizedTables(spec, codes, {name: featurizer.ngram_rows_ if name == "ngrams" else featurizer.bigram_rows_
                                          for name in keep if name != "words"})
        state = {k: v for k, v in self.network.state_dict().items()}
        for name, rows in keep.items():  # a row's idf goes with it
            if f"embed.idf_{name}" in state:
                state[f"embed.idf_{name}"] = state[f"embed.idf_{name}"][torch.from_numpy(rows)]
        return self._with_tables(featurizer, q, state)

    def _with_tables(self, featurizer: Featurizer, q: QuantizedTables, state: dict[str, torch.Tensor]) -> "NeuralModel":
        """A model of this one's config and labels with ``featurizer``, the tables of ``q``
        (decoded) and the rest of its weights from ``state``."""
        model = NeuralModel(self.config, device=self.device, network=self.network_class)
        model.labels, model.featurizer, model.tables = self.labels, featurizer, q
        state = {**state, **{f"embed.{name}.weight": w for name, w in q.decoded(self.config.model.embedding_dim).items()}}
        with tables_loaded_later():  # strict loading below overwrites every table
            net = build_network(self.config.model, n_classes=len(self.labels), **featurizer.sizes())
        net.load_state_dict(state)
        model.network = net.to(self.device).eval()
        return model

    # ---- bundle files ---------------------------------------------------------------------

    def save(self, directory: Path) -> dict[str, Any]:
        write_json(directory / "featurizer.json", self.featurizer.to_dict())
        state = self.network.state_dict()
        if self.tables is None:
            write_tensors(directory / "model.safetensors", state)
            return {}
        tables = {f"embed.{name}.weight" for name in self.tables.codes}
        write_tensors(directory / "model.safetensors", {k: v for k, v in state.items() if k not in tables})
        write_tensors(directory / TABLES_FILE, self.tables.tensors())
        return {"quantization": self.tables.facts()}

    @classmethod
    def load(cls, directory: Path, config: Config, labels: LabelEncoder | None, *, device: Any = None,
             network: type[TitleModel]) -> "NeuralModel":
        model = cls(config, device=device or "cpu", network=network)
        model.labels = labels
        path = listed_file(directory, "featurizer.json")
        try:
            model.featurizer = Featurizer.from_dict(read_json(path))
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{path}: damaged ({type(e).__name__}: {e})") from None
        state = read_tensors(listed_file(directory, "model.safetensors"))
        facts = read_json(directory / "bundle.json").get("quantization")
        if facts is not None:  # a quantized model: its tables are decoded into an ordinary network
            q = QuantizedTables.from_tensors(QuantizeSpec.from_dict(facts), read_tensors(listed_file(directory, TABLES_FILE)))
            words = np.arange(len(model.featurizer.vocab_))  # (its vocabulary is the pruned one)
            featurizer = model.featurizer.with_rows(words, q.buckets.get("ngrams"), q.buckets.get("bigrams"))
            return model._with_tables(featurizer, q, state)
        with tables_loaded_later():  # strict loading below overwrites every table
            net = build_network(config.model, n_classes=len(labels), **model.featurizer.sizes())
        net.load_state_dict(state)
        model.network = net.to(model.device).eval()
        return model
