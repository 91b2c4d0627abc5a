"""MLP over a title's features (the first practico's model, done right).

Two ways in: token vectors pooled per title (mean, max, sum or both, plus the mean
bigram vector), then hidden layers; or ``pooling: "tfidf"`` (the default config): the
title's sparse TF-IDF vector over words, character n-grams and word bigrams times the
embedding tables, which makes the tables the first hidden layer's weights -- the
representation of the TF-IDF + linear SVM baseline, with a learned non-linear layer on top.
On meli2019-es the second is the more accurate on validation (README, "Experiment report").
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn

from ..batching import Batch
from ..config import ModelConfig
from ..featurizer import Encoded
from .layers import ACTIVATIONS, Dropout
from .network import TitleModel, register_network


class MLPConfig(ModelConfig):
    name: Literal["mlp"] = "mlp"
    # width of each hidden layer (>= 1: a width of 0 trained a constant model); [] = linear on the
    # pooled vector (or on the "tfidf" layer)
    hidden_sizes: list[Annotated[int, Field(ge=1)]] = [512]
    activation: Literal["relu", "gelu", "tanh", "silu"] = "relu"  # hidden non-linearity
    # how token vectors become one title vector; "tfidf": one bag of every word, character
    # n-gram and word bigram of the title, TF-IDF weighted -- the first hidden layer (width
    # embedding_dim) is then a linear layer on the title's sparse TF-IDF vector
    pooling: Literal["mean", "max", "sum", "meanmax", "tfidf"] = "mean"
    idf_min_df: int = Field(1, ge=1)  # with "tfidf": features in fewer training titles are ignored
    dropout: float = Field(0.3, ge=0.0, lt=1.0)  # on the pooled vector and after each hidden layer
    norm: Literal["none", "batch", "layer"] = "none"  # normalisation after each hidden linear layer


@register_network(MLPConfig)
class MLP(TitleModel):

    def __init__(self, cfg: MLPConfig, n_words: int, n_buckets: int, n_classes: int, n_bigram_buckets: int = 0):
        super().__init__(cfg, n_words, n_buckets, n_classes, n_bigram_buckets)
        if cfg.pooling == "tfidf":
            # the bag is a hidden layer's linear part: normalisation, activation, dropout follow
            self.embed.use_idf()
            self.bias = nn.Parameter(torch.zeros(cfg.embedding_dim))
            width = cfg.embedding_dim
            layers: list[nn.Module] = self._activate(width)
        else:
            self.bias = None
            width = (cfg.embedding_dim * (2 if cfg.pooling == "meanmax" else 1)
                     + (cfg.embedding_dim if n_bigram_buckets else 0))
            layers = [Dropout(cfg.dropout)]
        for h in cfg.hidden_sizes:
            layers += [nn.Linear(width, h), *self._activate(h)]
            width = h
        layers.append(nn.Linear(width, n_classes))
        self.head = nn.Sequential(*layers)

    def _activate(self, width: int) -> list[nn.Module]:
        """Normalisation (if any), activation and dropout after a hidden layer of ``width``."""
        norm = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}.get(self.cfg.norm)
        return [*([norm(width)] if norm else []), ACTIVATIONS[self.cfg.activation](), Dropout(self.cfg.dropout)]

    def adapt(self, data: Encoded) -> None:
        if self.cfg.pooling == "tfidf":
            self.embed.fit_idf(data, self.cfg.idf_min_df)

    def forward(self, batch: Batch) -> torch.Tensor:
        if self.bias is not None:
            return self.head(self.embed.tfidf_bag(batch) + self.bias)  # (B, n_classes)
        pooled = self.embed.pool(batch, self.cfg.pooling)  # (B, D), or (B, 2D) for meanmax
        if self.embed.bigrams is not None:
            pooled = torch.cat([pooled, self.embed.bigram_mean(batch)], dim=1)  # + mean bigram vector
        return self.head(pooled)  # (B, n_classes)
