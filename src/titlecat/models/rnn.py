"""A recurrent encoder (LSTM or GRU) over the token sequence, pooled into one title vector.

Padding never enters the recurrence: sequences are packed with their true lengths,
so a title's states do not depend on the other titles of its batch.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..batching import Batch
from ..config import ModelConfig
from .layers import Dropout, masked_max, masked_mean, masked_softmax
from .network import TitleModel, register_network


class RNNConfig(ModelConfig):
    name: Literal["rnn"] = "rnn"
    cell: Literal["lstm", "gru"] = "gru"  # recurrent cell; a GRU has 3 gates to the LSTM's 4 (fewer weights, faster)
    hidden_size: int = Field(128, ge=1, lt=8192)  # state size per direction
    num_layers: int = Field(1, ge=1, lt=9)  # stacked recurrent layers
    bidirectional: bool = True  # also read the title right to left ("talle 42" after "zapatillas")
    pooling: Literal["last", "mean", "max", "attention"] = "max"  # how per-token states become one vector
    dropout: float = Field(0.3, ge=0.0, lt=1.0)  # between stacked layers and on the pooled vector


@register_network(RNNConfig)
class RNN(TitleModel):

    def __init__(self, cfg: RNNConfig, n_words: int, n_buckets: int, n_classes: int, n_bigram_buckets: int = 0):
        super().__init__(cfg, n_words, n_buckets, n_classes, n_bigram_buckets)
        # token vectors start tiny (a mean of ~18 small n-gram vectors); normalising them
        # lets the recurrent cell learn from the first steps
        self.norm = nn.LayerNorm(cfg.embedding_dim)
        cell = nn.LSTM if cfg.cell == "lstm" else nn.GRU
        # torch only applies inter-layer dropout (and warns when given it) with >= 2 layers
        self.rnn = cell(cfg.embedding_dim, cfg.hidden_size, num_layers=cfg.num_layers, batch_first=True,
                        bidirectional=cfg.bidirectional, dropout=cfg.dropout if cfg.num_layers > 1 else 0.0)
        self.n_dirs = 2 if cfg.bidirectional else 1
        out_dim = cfg.hidden_size * self.n_dirs
        if cfg.pooling == "attention":
            # zeros: attention starts as the mean over tokens and learns what to weigh up
            self.query = nn.Parameter(torch.zeros(out_dim))
        width = out_dim + (cfg.embedding_dim if n_bigram_buckets else 0)
        self.head = nn.Sequential(Dropout(cfg.dropout), nn.Linear(width, n_classes))

    def forward(self, batch: Batch) -> torch.Tensor:
        x, mask = self.embed(batch)  # (B, T, D), (B, T)
        x = self.norm(x) * mask.unsqueeze(-1)  # normalised token vectors (see __init__), zeros on padding
        B, T, _ = x.shape
        # pack_padded_sequence wants the lengths on the CPU; enforce_sorted=False sorts
        # internally and returns h_n in the batch's own order
        packed = pack_padded_sequence(x, batch.lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, h_n = self.rnn(packed)
        if self.cfg.pooling == "last":
            if isinstance(h_n, tuple):  # LSTM: (h_n, c_n)
                h_n = h_n[0]
            # h_n: (layers * dirs, B, H); the top layer's forward state is at the true last token
            # and its backward state at the first token -- never a padding position
            top = h_n.view(self.cfg.num_layers, self.n_dirs, B, self.cfg.hidden_size)[-1]  # (dirs, B, H)
            pooled = top.transpose(0, 1).reshape(B, -1)  # (B, dirs * H)
        else:
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, dirs * H), zeros on padding
            if self.cfg.pooling == "mean":
                pooled = masked_mean(out, mask)  # (B, dirs * H)
            elif self.cfg.pooling == "max":
                pooled = masked_max(out, mask)  # (B, dirs * H)
            else:
                scores = out @ self.query / math.sqrt(out.shape[-1])  # (B, T)
                weights = masked_softmax(scores, mask)  # (B, T)
                pooled = (weights.unsqueeze(-1) * out).sum(1)  # (B, dirs * H)
        if self.embed.bigrams is not None:
            pooled = torch.cat([pooled, self.embed.bigram_mean(batch)], dim=1)  # + mean bigram vector
        return self.head(pooled)  # (B, n_classes)
