"""Every kind of model, each registered by its own file (``titlecat.registry``).

``protocol`` is the interface they share; ``network`` puts any ``TitleModel`` network behind it.
Importing this package registers them all: ``import titlecat`` does.
"""

from . import cnn, ensemble, mlp, rnn, tfidf, transformer  # noqa: F401  (registration side effect)
from .network import NeuralModel, TitleModel, build_network, networks
from .protocol import FitResult, FitRun, Model

__all__ = ["FitResult", "FitRun", "Model", "NeuralModel", "TitleModel", "build_network", "networks"]
