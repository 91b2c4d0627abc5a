"""titlecat: product-title categorisation for the MeLi Data Challenge 2019.

>>> import titlecat
>>> clf = titlecat.train("spanish.train.jsonl.gz", "spanish.test.jsonl.gz", model="mlp", output="runs/mlp")
>>> clf.predict("Zapatillas Nike Air Max 90 Talle 42", k=3)
>>> clf.info.test_balanced_accuracy
>>> clf = titlecat.load("runs/mlp")
"""

from . import models  # noqa: F401  (registers every kind of model)
from ._version import __version__
from .classifier import Classifier, RunInfo, load
from .config import Config, ConfigError
from .data import DataError
from .models.ensemble import Ensemble
from .recipe import train

__all__ = ["Classifier", "Config", "ConfigError", "DataError", "Ensemble", "RunInfo", "load", "train", "__version__"]
