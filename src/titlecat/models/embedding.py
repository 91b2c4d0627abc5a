"""Token vectors: the ``TokenEmbedder`` every network starts from.

A token's vector is the mean of its word vector and its character n-gram vectors (fastText
style), from embedding tables with sparse gradients; it also builds a title's TF-IDF bag
(``tfidf_bag``) and pools token vectors per title without a padded grid (``pool``).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..batching import Batch
from ..featurizer import Encoded, document_frequencies
from ..vocab import PAD
from .layers import bag_max


_INIT_TABLES = True
TABLES = ("words", "ngrams", "bigrams")  # a TokenEmbedder's embedding tables (the last two may be absent)


@contextmanager
def tables_loaded_later():
    """Build models whose embedding tables are left uninitialised, because a state dict is
    loaded into them next (``titlecat.load``): drawing the default MLP's 223M random values
    cost ~2 s of every ``titlecat predict``.  Everything else is initialised as usual."""
    global _INIT_TABLES
    _INIT_TABLES = False
    try:
        yield
    finally:
        _INIT_TABLES = True


def _table(rows: int, dim: int, **kwargs) -> nn.Embedding:
    """An embedding table with sparse gradients; left uninitialised inside ``tables_loaded_later``
    (nn.Embedding would draw N(0, 1) values, only to have them replaced)."""
    return nn.Embedding(rows, dim, sparse=True, _weight=None if _INIT_TABLES else torch.empty(rows, dim), **kwargs)


class TokenEmbedder(nn.Module):
    """Token vectors fastText-style: mean of the word vector and its n-gram vectors.

    Words outside the vocabulary (``<unk>``) still get a vector from their n-grams,
    which is what makes rare brands and model codes usable.  Output is the padded
    ``(B, T, D)`` grid with zeros on padding, and the ``(B, T)`` mask.
    """

    def __init__(self, n_words: int, n_buckets: int, dim: int, n_bigram_buckets: int = 0, init_std: float = 0.1):
        super().__init__()
        self.dim = dim
        # sparse gradients: a step updates only the rows its batch used (see train.make_optimizers)
        self.words = _table(n_words, dim, padding_idx=PAD)
        self.ngrams = _table(n_buckets, dim) if n_buckets > 0 else None
        # word bigrams ("air max", "talle 42"): a bag per title, used by models that want it
        self.bigrams = _table(n_bigram_buckets, dim) if n_bigram_buckets > 0 else None
        if not _INIT_TABLES:  # a bundle's weights are about to replace these (see tables_loaded_later)
            return
        # N(0, 0.1): a token averages ~18 vectors, so its vector starts at ~0.02 per
        # coordinate -- large enough that the first epoch already learns (fastText's
        # +-1/dim start wastes several epochs with Adam)
        nn.init.normal_(self.words.weight, std=init_std)
        for table in (self.ngrams, self.bigrams):
            if table is not None:
                nn.init.normal_(table.weight, std=init_std)
        with torch.no_grad():
            self.words.weight[PAD].zero_()

    def tables(self) -> dict[str, nn.Embedding]:
        """Its embedding tables by name (``words``, and ``ngrams`` and ``bigrams`` where it has them)."""
        return {name: t for name in TABLES if (t := getattr(self, name)) is not None}

    def row_scores(self) -> dict[str, torch.Tensor]:
        """(rows,) per table: what each row carries, which ``titlecat.quantize`` keeps the largest of.

        fastText's cutoff keeps the rows of largest norm.  In a TF-IDF bag a row's share of the
        training titles' vectors is its norm times its idf times the titles it is in: that
        product, with the document frequency read back from the idf (``df + 1`` is proportional
        to ``exp(-idf)``), and 0 for a feature no title uses (``fit_idf``'s ``min_df``).  Without
        idf, the norm.  (On validation, keeping half the useful rows of the default MLP: -0.0014
        balanced accuracy by this score, -0.0075 by the norm alone, -0.11 by norm x idf, which
        keeps the rarest features: docs/shipping.md.)
        """
        out = {}
        for name, table in self.tables().items():
            score = table.weight.detach().float().norm(dim=1)
            idf = getattr(self, f"idf_{name}", None)
            out[name] = score if idf is None else score * idf * torch.exp(-idf) * (idf > 0)
        return out

    def type_vectors(self, batch: Batch) -> torch.Tensor:
        """(U, D): the vector of each distinct token type of the batch."""
        vec = self.words(batch.type_words)  # (U, D), one row per distinct type of the batch
        if self.ngrams is not None and batch.ngram_rows.numel() > 0:
            vec = vec + self._ngram_sums(batch)
            vec = vec / (1 + batch.type_ngram_counts).unsqueeze(1).to(vec.dtype)
        return vec

    def _ngram_sums(self, batch: Batch, weights: torch.Tensor | None = None) -> torch.Tensor:
        """(U, D): per batch type, the sum of its n-gram vectors (times ``weights``, one per
        entry of ``batch.type_ngrams``, when given)."""
        if torch.is_grad_enabled():
            rows = self.ngrams(batch.ngram_rows)  # (R, D), each bucket once: the sparse gradient stays small
            return F.embedding_bag(batch.type_ngrams, rows, batch.type_ngram_offsets, mode="sum",
                                   per_sample_weights=weights)
        # no gradient: one fused gather-and-sum straight from the table
        return F.embedding_bag(batch.ngram_rows[batch.type_ngrams], self.ngrams.weight, batch.type_ngram_offsets,
                               mode="sum", per_sample_weights=weights)

    def use_idf(self) -> None:
        """Give the embedder inverse document frequencies (for ``tfidf_bag``): buffers, so they
        are saved and loaded with the weights; every feature weighs 1 until ``fit_idf``."""
        for name, table in (("words", self.words), ("ngrams", self.ngrams), ("bigrams", self.bigrams)):
            self.register_buffer(f"idf_{name}", torch.ones(0 if table is None else table.num_embeddings))

    def fit_idf(self, data: Encoded, min_df: int = 1) -> None:
        """scikit-learn's smooth idf, ``ln((1 + n) / (1 + df)) + 1``, per row of each table, from
        the titles of ``data``; a feature in fewer than ``min_df`` of them (a hash bucket no
        training title used, ``<unk>``) gets 0: like an unknown feature in TF-IDF, it adds nothing."""
        counts = document_frequencies(data, len(self.idf_words), len(self.idf_ngrams), len(self.idf_bigrams))
        for name, df in counts.items():
            df = torch.from_numpy(df.astype(np.float64))
            idf = torch.where(df >= min_df, torch.log((1.0 + len(data)) / (1.0 + df)) + 1.0, 0.0)
            getattr(self, f"idf_{name}").copy_(idf.to(torch.float32))

    def tfidf_bag(self, batch: Batch) -> torch.Tensor:
        """(B, D): each title's TF-IDF vector over its words, character n-grams and word
        bigrams, times the embedding tables -- a linear layer on the sparse TF-IDF vector.

        Weights are idf per occurrence (a feature that occurs twice counts twice), scaled so
        each title's weights have unit L2 norm.  Computed per batch type first (a word and
        its n-grams), then per title, so each table row is gathered once per batch.
        """
        w_idf = self.idf_words[batch.type_words]  # (U,)
        # A feature of idf 0 (in fewer than idf_min_df training titles) adds nothing and its
        # gradient is always 0, so Adam never moves its row: words of idf 0 are read as <pad>
        # (nn.Embedding leaves padding out of the sparse gradient) and bigrams of idf 0 are left
        # out of the bag: the step gathers, differentiates and updates fewer rows, and no number
        # changes.
        words = torch.where(w_idf > 0, batch.type_words, PAD)
        vec = self.words(words) * w_idf.unsqueeze(1)  # (U, D) idf-weighted sum per type
        sq = w_idf.square()  # (U,) sum of squared weights per type
        if self.ngrams is not None and batch.ngram_rows.numel() > 0:
            g_idf = self.idf_ngrams[batch.ngram_rows][batch.type_ngrams]  # (G,)
            vec = vec + self._ngram_sums(batch, g_idf)
            owner = torch.repeat_interleave(torch.arange(len(sq), device=sq.device), batch.type_ngram_counts)
            sq = sq.index_add(0, owner, g_idf.square())
        offsets = batch.lengths.cumsum(0) - batch.lengths  # (B,) start of each title's tokens
        out = F.embedding_bag(batch.token_types, vec, offsets, mode="sum")  # (B, D)
        norm2 = F.embedding_bag(batch.token_types, sq.unsqueeze(1), offsets, mode="sum").squeeze(1)  # (B,)
        if self.bigrams is not None and batch.bigrams.numel() > 0:
            bigrams, titles = batch.bigrams, batch.bigram_titles
            b_idf = self.idf_bigrams[bigrams]  # (M,)
            seen = b_idf > 0
            if not bool(seen.all()):
                bigrams, titles, b_idf = bigrams[seen], titles[seen], b_idf[seen]
            counts = torch.bincount(titles, minlength=batch.size)
            out = out + F.embedding_bag(bigrams, self.bigrams.weight, counts.cumsum(0) - counts, mode="sum",
                                        per_sample_weights=b_idf, sparse=True)
            norm2 = norm2.index_add(0, titles, b_idf.square())
        # a title none of whose features was seen in training stays the zero vector
        return out / norm2.clamp(min=1e-12).sqrt().unsqueeze(1)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.type_vectors(batch)[batch.token_types]  # (N, D)
        B, T = batch.size, batch.max_len
        grid = tokens.new_zeros(B * T, self.dim).index_copy(0, batch.positions, tokens)
        return grid.view(B, T, self.dim), batch.mask()

    def pool(self, batch: Batch, how: str) -> torch.Tensor:
        """(B, D), or (B, 2D) for "meanmax": token vectors pooled per title, without the padded grid.

        The same values as ``pool(*self(batch), how)``, but each title is a bag of its own
        tokens (``F.embedding_bag`` over the type vectors), so there is no padding to fill,
        mask or skip: for a bag model that was ~15% of a step.
        """
        vec = self.type_vectors(batch)
        offsets = batch.lengths.cumsum(0) - batch.lengths  # (B,) start of each title's tokens
        modes = {"mean": ("mean",), "max": ("max",), "sum": ("sum",), "meanmax": ("mean", "max")}[how]
        return torch.cat([bag_max(batch.token_types, vec, batch.lengths, offsets) if m == "max"
                          else F.embedding_bag(batch.token_types, vec, offsets, mode=m) for m in modes], dim=1)

    def bigram_mean(self, batch: Batch) -> torch.Tensor:
        """(B, D) mean of each title's bigram vectors (zeros for a title without bigrams)."""
        if self.bigrams is None or batch.bigrams.numel() == 0:
            return self.words.weight.new_zeros(batch.size, self.dim)
        # one fused gather-and-average per title; the gradient stays sparse (rows it used)
        return F.embedding_bag(batch.bigrams, self.bigrams.weight, batch.bigram_offsets, mode="mean", sparse=True)

