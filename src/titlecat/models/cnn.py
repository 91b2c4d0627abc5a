"""Convolutions over the token sequence with max-over-time pooling (Kim, 2014).

Each filter width looks at windows of that many consecutive tokens ("air max 90",
"talle 42"); max pooling keeps, per filter, its strongest window anywhere in the title.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from ..batching import Batch
from ..config import ModelConfig
from .layers import ACTIVATIONS, Dropout, masked_max, masked_mean
from .network import TitleModel, register_network


class CNNConfig(ModelConfig):
    name: Literal["cnn"] = "cnn"
    # tokens per window; one convolution per width
    filter_widths: list[Annotated[int, Field(ge=1, lt=17)]] = Field([1, 2, 3], min_length=1)
    # filters of each width (same length as filter_widths)
    filter_counts: list[Annotated[int, Field(ge=1, lt=4097)]] = Field([256, 256, 256], min_length=1)
    activation: Literal["relu", "gelu", "tanh", "silu"] = "relu"  # applied to every window before pooling
    pooling: Literal["max", "maxmean"] = "max"  # max over windows; maxmean also appends their mean
    dropout: float = Field(0.3, ge=0.0, lt=1.0)  # on the pooled vector and after the hidden layer
    hidden_size: int = Field(0, ge=0, lt=65536)  # width of a hidden layer before the output; 0 = none

    @model_validator(mode="after")
    def _one_count_per_width(self) -> "CNNConfig":
        if len(self.filter_widths) != len(self.filter_counts):
            raise ValueError(f"filter_widths ({self.filter_widths}) and filter_counts ({self.filter_counts}) "
                             "must have the same length: one filter count per width")
        return self


@register_network(CNNConfig)
class CNN(TitleModel):

    def __init__(self, cfg: CNNConfig, n_words: int, n_buckets: int, n_classes: int, n_bigram_buckets: int = 0):
        super().__init__(cfg, n_words, n_buckets, n_classes, n_bigram_buckets)
        D = cfg.embedding_dim
        # token vectors start tiny (a mean of ~18 small n-gram vectors); normalising them
        # lets the convolutions learn from the first steps (re-masked: padding stays zero)
        self.norm = nn.LayerNorm(D)
        # "wide" convolution: w-1 zero positions on both sides, so a one-token title still
        # fills every window width and the first/last tokens sit in as many windows as the others
        self.convs = nn.ModuleList(nn.Conv1d(D, c, w, padding=w - 1)
                                   for w, c in zip(cfg.filter_widths, cfg.filter_counts))
        self.act = ACTIVATIONS[cfg.activation]()
        width = sum(cfg.filter_counts) * (2 if cfg.pooling == "maxmean" else 1) + (D if n_bigram_buckets else 0)
        layers: list[nn.Module] = [Dropout(cfg.dropout)]
        if cfg.hidden_size:
            layers += [nn.Linear(width, cfg.hidden_size), ACTIVATIONS[cfg.activation](), Dropout(cfg.dropout)]
            width = cfg.hidden_size
        layers.append(nn.Linear(width, n_classes))
        self.head = nn.Sequential(*layers)

    def forward(self, batch: Batch) -> torch.Tensor:
        x, mask = self.embed(batch)  # (B, T, D), (B, T)
        x = self.norm(x) * mask.unsqueeze(-1)  # (B, T, D), zeros on padding
        lengths = mask.sum(1)  # (B,)
        xt = x.transpose(1, 2)  # (B, D, T): Conv1d wants channels first
        pooled = []
        for conv in self.convs:
            w = conv.kernel_size[0]
            h = self.act(conv(xt)).transpose(1, 2)  # (B, T + w - 1, C)
            # window j covers tokens j-w+1 .. j; it touches the title iff j < length + w - 1.
            # Windows past that see only zeros (padding rows of x are zero, like the conv's own
            # padding), so they are what a shorter batch would not have: masked out, which makes
            # a title's logits independent of the longest title in its batch.
            valid = torch.arange(h.shape[1], device=h.device)[None, :] < (lengths + w - 1)[:, None]  # (B, T + w - 1)
            pooled.append(masked_max(h, valid))  # (B, C)
            if self.cfg.pooling == "maxmean":
                pooled.append(masked_mean(h, valid))  # (B, C)
        if self.embed.bigrams is not None:
            pooled.append(self.embed.bigram_mean(batch))  # + mean bigram vector
        return self.head(torch.cat(pooled, dim=1))  # (B, n_classes)
