"""titlecat: product-title categorisation for the MeLi Data Challenge 2019.

>>> import titlecat
>>> clf = titlecat.train("spanish.train.jsonl.gz", "spanish.test.jsonl.gz", model="mlp", output="runs/mlp")
>>> clf.predict("Zapatillas Nike Air Max 90 Talle 42", k=3)
>>> clf = titlecat.load("runs/mlp")
"""

__version__ = "0.1.0"

from .api import Classifier, load, train  # noqa: E402
from .ensemble import Ensemble  # noqa: E402
from .config import Config, ConfigError  # noqa: E402
from .data import DataError  # noqa: E402

__all__ = ["Classifier", "Config", "Ensemble", "ConfigError", "DataError", "load", "train", "__version__"]
