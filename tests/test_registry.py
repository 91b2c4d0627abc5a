"""The registry and the model protocol: a new model is one file plus one config, and nothing else
changes -- trained by the recipe, tracked, saved, loaded and used from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import titlecat
from titlecat import registry
from titlecat.bundle import FORMAT, listed_file, read_json, write_json
from titlecat.cli import main
from titlecat.config import BaseModelConfig, Config, ConfigError, ModelConfig, model_names
from titlecat.models import FitResult, FitRun, Model
from titlecat.models.network import TitleModel, register_network


@pytest.fixture
def scratch_registry(monkeypatch):
    """Models registered by a test are gone after it (other tests list every registered model)."""
    monkeypatch.setattr(registry, "_KINDS", dict(registry._KINDS))


def write_config(path: Path, model: dict, **sections: dict) -> Path:
    path.write_text(yaml.safe_dump({"model": model, "train": {"epochs": 2, "batch_size": 8, "refit": False},
                                    **sections}))
    return path


def test_every_shipped_model_is_registered_once_with_its_config_class():
    assert model_names() == registry.names() == ["cnn", "ensemble", "mlp", "rnn", "tfidf", "transformer"]
    for kind in registry.kinds():
        assert kind.config_class.model_fields["name"].default == kind.name
        assert isinstance(Config.default(kind.name).model, kind.config_class)
    with pytest.raises(KeyError, match="unknown model name 'nosuch'; known: cnn, ensemble"):
        registry.kind("nosuch")


def test_a_new_network_is_one_class_and_one_config(scratch_registry, tmp_path, tiny_train_file, tiny_test_file,
                                                   capsys):
    class SumConfig(ModelConfig):
        name: Literal["sumbag"] = "sumbag"
        embedding_dim: int = 8

    @register_network(SumConfig)
    class SumBag(TitleModel):
        """Summed token vectors, then a linear layer."""

        def __init__(self, cfg, n_words, n_buckets, n_classes, n_bigram_buckets=0):
            super().__init__(cfg, n_words, n_buckets, n_classes, n_bigram_buckets)
            self.out = nn.Linear(cfg.embedding_dim, n_classes)

        def forward(self, batch):
            return self.out(self.embed.pool(batch, "sum"))  # (B, n_classes)

    cfg = write_config(tmp_path / "sumbag.yaml", {"name": "sumbag"}, text={"buckets": 64, "bigram_buckets": 0})
    clf = titlecat.train(tiny_train_file, tiny_test_file, config=cfg, output=tmp_path / "out", tracking=False)
    assert clf.info.test_balanced_accuracy is not None and len(clf.info.history) == 2
    loaded = titlecat.load(tmp_path / "out")
    assert isinstance(loaded.model.network, SumBag)
    np.testing.assert_allclose(loaded.predict_proba(["Casco moto LS2"]), clf.predict_proba(["Casco moto LS2"]),
                               rtol=1e-6)
    assert main(["predict", "--model", str(tmp_path / "out"), "Zapatillas Nike"]) == 0
    assert capsys.readouterr().out.strip()


def test_a_new_kind_of_model_implements_the_protocol_and_registers_itself(scratch_registry, tmp_path,
                                                                          tiny_train_file, tiny_test_file):
    """A model that is no network at all: each category's share of the training rows, whatever
    the title (what a model must beat).  The recipe trains it, tracks it, tests and saves it."""

    class PriorConfig(BaseModelConfig):
        name: Literal["prior"] = "prior"
        smoothing: float = 1.0  # added to every category's count

    @registry.register(PriorConfig)
    class PriorModel:
        bundle_format = FORMAT

        def __init__(self, config: Config, *, device: Any = None):
            self.config, self.labels, self.log_prior = config, None, None

        @property
        def text_config(self):
            return self.config.text

        def fit(self, train, validation, run: FitRun) -> FitResult:
            self.labels = train.labels
            counts = np.bincount(train.y, minlength=len(train.labels)) + self.config.model.smoothing
            self.log_prior = np.log(counts / counts.sum()).astype(np.float32)
            run.logger.log_metrics({"train_rows": len(train)}, step=1)
            return FitResult(history=[], best_epoch=1, best_val_balanced_accuracy=1 / len(self.labels))

        def logits(self, corpus):
            return np.tile(self.log_prior, (len(corpus), 1))

        def num_parameters(self) -> int:
            return len(self.log_prior)

        def save(self, directory: Path) -> dict:
            write_json(directory / "prior.json", self.log_prior.tolist())
            return {}

        @classmethod
        def load(cls, directory, config, labels, *, device=None):
            model = cls(config)
            model.labels, model.log_prior = labels, np.array(read_json(listed_file(directory, "prior.json")),
                                                             dtype=np.float32)
            return model

    assert isinstance(PriorModel(Config.from_dict({"model": {"name": "prior"}})), Model)  # the protocol, checked
    cfg = write_config(tmp_path / "prior.yaml", {"name": "prior", "smoothing": 0.5})
    clf = titlecat.train(tiny_train_file, tiny_test_file, config=cfg, output=tmp_path / "out", tracking=False)
    assert clf.info.test_balanced_accuracy == pytest.approx(0.25)  # four balanced categories, one answer
    loaded = titlecat.load(tmp_path / "out")
    assert loaded.config.model.smoothing == 0.5 and loaded.num_parameters() == 4
    np.testing.assert_array_equal(loaded.predict_proba(["anything"]), clf.predict_proba(["anything"]))
    with pytest.raises(ValueError, match="a prior model cannot be quantized"):  # an optional capability it lacks
        loaded.quantize()
    with pytest.raises(ConfigError, match="smoothing"):
        Config.from_dict({"model": {"name": "prior", "smoothing": "much"}})


def test_a_bundle_of_a_model_this_titlecat_does_not_know_is_a_clear_error(scratch_registry, tmp_path,
                                                                          tiny_train_file):
    class OnceConfig(ModelConfig):
        name: Literal["once"] = "once"
        embedding_dim: int = 4

    @register_network(OnceConfig)
    class Once(TitleModel):
        def forward(self, batch):
            return torch.zeros(batch.size, self.n_classes, requires_grad=True)

    cfg = write_config(tmp_path / "once.yaml", {"name": "once"}, text={"buckets": 16, "bigram_buckets": 0})
    titlecat.train(tiny_train_file, config=cfg, output=tmp_path / "out", tracking=False)
    registry._KINDS.pop("once")  # as in a titlecat without that model
    with pytest.raises(titlecat.bundle.BundleError, match="unknown model name 'once'"):
        titlecat.load(tmp_path / "out")
