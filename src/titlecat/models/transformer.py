"""A small Transformer encoder trained from scratch, pooled by a CLS token or the mean.

Pre-norm layers (``norm_first``): they train stably without a long warm-up, which
matters for a model this small trained for a few epochs.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from ..batching import Batch
from ..config import ModelConfig
from .layers import masked_mean
from .network import TitleModel, register_network


class TransformerConfig(ModelConfig):
    name: Literal["transformer"] = "transformer"
    d_model: int = Field(0, ge=0, lt=8192)  # width of the encoder; 0 = embedding_dim (else a linear projection)
    num_layers: int = Field(2, ge=1, lt=25)  # encoder layers
    num_heads: int = Field(4, ge=1, lt=65)  # attention heads; must divide d_model
    ff_dim: int = Field(256, ge=1, lt=65536)  # hidden width of each layer's feed-forward block
    dropout: float = Field(0.1, ge=0.0, lt=1.0)  # on inputs, attention, feed-forward and the pooled vector
    positional: Literal["learned", "sinusoidal"] = "learned"  # how token order is encoded
    max_len: int = Field(64, ge=1, lt=4097)  # longest title in tokens (keep >= text.max_tokens)
    pooling: Literal["cls", "mean"] = "mean"  # a learned CLS token's output, or the mean over tokens

    @property
    def width(self) -> int:
        """The encoder width actually used (``d_model``, or ``embedding_dim`` when it is 0)."""
        return self.d_model or self.embedding_dim

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "TransformerConfig":
        if self.width % self.num_heads:
            source = "model.d_model" if self.d_model else "model.d_model=0, so model.embedding_dim"
            raise ValueError(f"num_heads ({self.num_heads}) must divide the encoder width {self.width} ({source}); "
                             "change model.num_heads or model.d_model")
        return self


def sinusoids(n: int, dim: int) -> torch.Tensor:
    """(n, dim) fixed sine/cosine position codes (Vaswani et al., 2017)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]  # (n, 1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))  # (ceil(dim/2),)
    table = torch.zeros(n, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table


@register_network(TransformerConfig)
class Transformer(TitleModel):

    def __init__(self, cfg: TransformerConfig, n_words: int, n_buckets: int, n_classes: int,
                 n_bigram_buckets: int = 0):
        super().__init__(cfg, n_words, n_buckets, n_classes, n_bigram_buckets)
        W = cfg.width
        self.proj = nn.Linear(cfg.embedding_dim, W) if W != cfg.embedding_dim else nn.Identity()
        # token vectors start tiny (~0.02 a coordinate, see TokenEmbedder) while position codes
        # are ~1: normalising the tokens first keeps position from drowning out the words
        self.input_norm = nn.LayerNorm(W)
        self.cls = nn.Parameter(torch.randn(1, 1, W) * 0.02) if cfg.pooling == "cls" else None
        n_pos = cfg.max_len + (1 if self.cls is not None else 0)  # the CLS token takes position 0
        if cfg.positional == "learned":
            self.positions = nn.Embedding(n_pos, W)  # N(0, 1): the scale of the normalised tokens
        else:
            # not persistent: recomputed from the config, so bundles do not store it
            self.register_buffer("position_table", sinusoids(n_pos, W), persistent=False)
        self.n_pos = n_pos
        self.input_dropout = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(W, cfg.num_heads, cfg.ff_dim, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        # enable_nested_tensor=False: nested tensors drop padding in eval only, so eval would
        # take a different numerical path than training (and than an unpadded title)
        self.encoder = nn.TransformerEncoder(layer, cfg.num_layers, norm=nn.LayerNorm(W), enable_nested_tensor=False)
        width = W + (cfg.embedding_dim if n_bigram_buckets else 0)
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(width, n_classes))

    def position_codes(self, n: int, device: torch.device) -> torch.Tensor:
        """(n, W) codes of positions 0 .. n-1."""
        if n > self.n_pos:
            raise ValueError(f"a title of {n - (self.n_pos - self.cfg.max_len)} tokens exceeds model.max_len="
                             f"{self.cfg.max_len}; raise model.max_len or lower text.max_tokens")
        if self.cfg.positional == "learned":
            return self.positions(torch.arange(n, device=device))
        return self.position_table[:n]

    def forward(self, batch: Batch) -> torch.Tensor:
        x, mask = self.embed(batch)  # (B, T, D), (B, T)
        h = self.proj(x)  # (B, T, W)
        if self.cls is not None:
            h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], dim=1)  # (B, 1 + T, W)
            mask = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)  # (B, 1 + T): CLS is always real
        h = self.input_norm(h) + self.position_codes(h.shape[1], h.device)  # (B, L, W)
        h = self.encoder(self.input_dropout(h), src_key_padding_mask=~mask)  # (B, L, W); True = ignore
        pooled = h[:, 0] if self.cls is not None else masked_mean(h, mask)  # (B, W)
        if self.embed.bigrams is not None:
            pooled = torch.cat([pooled, self.embed.bigram_mean(batch)], dim=1)  # + mean bigram vector
        return self.head(pooled)  # (B, n_classes)
