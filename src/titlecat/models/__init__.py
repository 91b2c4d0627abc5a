"""Every kind of model, each registered by its own file (``titlecat.registry``).

``protocol`` is the interface they share; ``network`` puts any ``TitleModel`` network behind it.
The registry imports the files of ``SHIPPED`` the first time it is asked for a model
(``register_all``); this package imports nothing itself, so any module may import
``titlecat.models.protocol`` without importing every model (and, through them, itself back).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

SHIPPED = ("cnn", "ensemble", "mlp", "rnn", "tfidf", "transformer")  # one file each: a new model adds its name

_PUBLIC = {"NeuralModel": "network", "TitleModel": "network", "build_network": "network", "networks": "network",
           "FitResult": "protocol", "FitRun": "protocol", "Model": "protocol"}

__all__ = ["FitResult", "FitRun", "Model", "NeuralModel", "TitleModel", "build_network", "networks"]

if TYPE_CHECKING:
    from .network import NeuralModel, TitleModel, build_network, networks
    from .protocol import FitResult, FitRun, Model


def register_all() -> None:
    """Import every shipped model file: each registers itself on import."""
    for name in SHIPPED:
        importlib.import_module(f"{__name__}.{name}")


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
