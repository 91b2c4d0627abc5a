"""Model registry: importing this package registers every model and its config."""

from . import cnn, mlp, rnn, transformer  # noqa: F401  (registration side effect)
from .base import MODELS, TitleModel, TokenEmbedder, build_model

__all__ = ["MODELS", "TitleModel", "TokenEmbedder", "build_model"]
