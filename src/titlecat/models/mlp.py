"""MLP over pooled token vectors (the first practico's model, done right)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..batching import Batch
from ..config import ModelConfig, register_model_config
from .base import ACTIVATIONS, Dropout, TitleModel, register_model


@register_model_config
class MLPConfig(ModelConfig):
    name: Literal["mlp"] = "mlp"
    hidden_sizes: list[int] = [512]  # width of each hidden layer; [] = linear on the pooled vector
    activation: Literal["relu", "gelu", "tanh", "silu"] = "relu"  # hidden non-linearity
    pooling: Literal["mean", "max", "sum", "meanmax"] = "mean"  # how token vectors become one title vector
    dropout: float = Field(0.3, ge=0.0, lt=1.0)  # on the pooled vector and after each hidden layer
    norm: Literal["none", "batch", "layer"] = "none"  # normalisation after each hidden linear layer


@register_model
class MLP(TitleModel):
    config_class = MLPConfig

    def __init__(self, cfg: MLPConfig, n_words: int, n_buckets: int, n_classes: int, n_bigram_buckets: int = 0):
        super().__init__(cfg, n_words, n_buckets, n_classes, n_bigram_buckets)
        width = cfg.embedding_dim * (2 if cfg.pooling == "meanmax" else 1) + (cfg.embedding_dim if n_bigram_buckets else 0)
        layers: list[nn.Module] = [Dropout(cfg.dropout)]
        for h in cfg.hidden_sizes:
            layers.append(nn.Linear(width, h))
            if cfg.norm == "batch":
                layers.append(nn.BatchNorm1d(h))
            elif cfg.norm == "layer":
                layers.append(nn.LayerNorm(h))
            layers += [ACTIVATIONS[cfg.activation](), Dropout(cfg.dropout)]
            width = h
        layers.append(nn.Linear(width, n_classes))
        self.head = nn.Sequential(*layers)

    def forward(self, batch: Batch) -> torch.Tensor:
        pooled = self.embed.pool(batch, self.cfg.pooling)  # (B, D), or (B, 2D) for meanmax
        if self.embed.bigrams is not None:
            pooled = torch.cat([pooled, self.embed.bigram_mean(batch)], dim=1)  # + mean bigram vector
        return self.head(pooled)  # (B, n_classes)
