"""The one model registry: a model's name -> its config class and its implementation.

Each model file registers itself with one decorator (``registry.register`` on a class that
implements ``titlecat.models.protocol.Model``, or ``models.network.register_network`` on a
``TitleModel`` network).  The config reads the registry to parse ``model: {name: ...}``, the
recipe and ``titlecat.load`` read it to build or load a model: nothing else asks which kind of
model it has, so a new model is one file plus one YAML config.

This module imports nothing of titlecat's: every layer may read it.  It fills itself on first
use by importing the shipped model files (``titlecat.models.register_all``, by name, at run time), so ``import titlecat`` stays
cheap: ``titlecat --help`` answers without importing torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class Kind:
    """One registered model."""

    name: str  # the config's ``model.name``
    config_class: type  # its pydantic model section (a ``config.BaseModelConfig``)
    model_class: type  # implements ``models.protocol.Model``; built and loaded with ``options``
    options: Mapping[str, Any] = field(default_factory=dict)  # e.g. the network of a neural model
    classifier_class: type | None = None  # what ``titlecat.load`` returns for it (None: ``Classifier``)

    def new(self, config: Any, device: Any = None) -> Any:
        """An untrained model of ``config`` (the whole ``Config``); its settings are checked here."""
        return self.model_class(config, device=device, **self.options)

    def load(self, directory: Path, config: Any, labels: Any, device: Any = None) -> Any:
        """The trained model kept in a bundle ``directory`` (``labels``: its ``labels.json``, if any)."""
        return self.model_class.load(directory, config, labels, device=device, **self.options)


_KINDS: dict[str, Kind] = {}
_FILLED = False


def add(kind: Kind) -> None:
    if kind.name in _KINDS and _KINDS[kind.name] != kind:
        raise ValueError(f"model name {kind.name!r} is registered twice")
    _KINDS[kind.name] = kind


def register(config_class: type, *, classifier_class: type | None = None) -> Callable[[type], type]:
    """Class decorator for a class that implements the model protocol: ``@register(TfidfConfig)``."""
    def decorate(cls: type) -> type:
        add(Kind(config_class.model_fields["name"].default, config_class, cls, classifier_class=classifier_class))
        return cls

    return decorate


def _filled() -> dict[str, Kind]:
    """The registry, with every shipped model registered (their files register on import)."""
    global _FILLED
    if not _FILLED:
        _FILLED = True  # first: a model file that asks the registry while it is imported finds it filling
        importlib.import_module(f"{__package__}.models").register_all()
    return _KINDS


def kind(name: str) -> Kind:
    try:
        return _filled()[name]
    except KeyError:
        raise KeyError(f"unknown model name {name!r}; known: {', '.join(names())}") from None


def kinds() -> list[Kind]:
    return [_KINDS[n] for n in names()]


def names() -> list[str]:
    return sorted(_filled())


def config_class(name: str) -> type | None:
    """The config section of model ``name`` (None if no model of that name is registered)."""
    found = _filled().get(name)
    return None if found is None else found.config_class
