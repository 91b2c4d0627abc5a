"""titlecat: product-title categorisation for the MeLi Data Challenge 2019.

>>> import titlecat
>>> clf = titlecat.train("spanish.train.jsonl.gz", "spanish.test.jsonl.gz", model="mlp", output="runs/mlp")
>>> clf.predict("Zapatillas Nike Air Max 90 Talle 42", k=3)
>>> clf.info.test_balanced_accuracy
>>> clf = titlecat.load("runs/mlp")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__

# The public names, imported on first use (PEP 562): ``import titlecat`` and ``titlecat --help``
# do not pay for torch, MLflow and numba until a command or a name needs them.
_PUBLIC = {"Classifier": "classifier", "RunInfo": "classifier", "load": "classifier", "Config": "config",
           "ConfigError": "config", "DataError": "data", "Ensemble": "models.ensemble", "train": "recipe"}

__all__ = ["Classifier", "Config", "ConfigError", "DataError", "Ensemble", "RunInfo", "load", "train", "__version__"]

if TYPE_CHECKING:  # what type checkers and editors see
    from .classifier import Classifier, RunInfo, load
    from .config import Config, ConfigError
    from .data import DataError
    from .models.ensemble import Ensemble
    from .recipe import train


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'titlecat' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
