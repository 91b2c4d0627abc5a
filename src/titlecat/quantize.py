"""Embedding tables in fewer bits, and which of their rows to keep: the arithmetic of
``titlecat quantize`` (``Classifier.quantize``).

A network's size is its embedding tables: the default MLP's words, character n-grams and word
bigrams are 112 M float32 values (441 MB).  fastText answers size with ``quantize``: it drops
the rows that carry least (``-cutoff``: the words and n-grams of largest norm are kept) and
stores the rest by product quantization.  titlecat offers the same two steps:

* **pruning**: a row that no title can use (in a TF-IDF bag, a feature below ``idf_min_df``:
  its idf is 0) is dropped at no cost; ``keep`` then keeps only that many rows over all tables,
  those that carry most (``TokenEmbedder.row_scores``: the most used and largest, as fastText's
  cutoff keeps the rows of largest norm);
* **coding** each kept row (``METHODS``): ``int8`` or ``int4`` with a scale and an offset per
  row, or ``pq``: product quantization, each row cut into sub-vectors of ``dsub`` values, each
  replaced by the nearest of 256 centroids learned by k-means on its sub-space (one byte per
  sub-vector: fastText's ``.ftz``).

This module knows tables, not models: ``models.network`` applies it to a network's tables and
reads the codes back (``decode``) into ordinary float tables when a bundle is loaded, so a
quantized model predicts through the same code as any other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

METHODS = ("int8", "int4", "pq", "none")  # "none": pruning only, rows kept in float32
PQ_CENTROIDS = 256  # per sub-space: a code is one byte
PQ_TRAIN_ROWS = 256 * PQ_CENTROIDS  # k-means learns from at most this many rows (fastText's bound)
PQ_ITERATIONS = 25  # k-means iterations (fastText's)


@dataclass(frozen=True)
class QuantizeSpec:
    """How ``Classifier.quantize`` stores a network's embedding tables."""

    method: str = "int8"  # one of METHODS
    keep: int = 0  # rows kept over all tables, those that carry most (0: every row some title can use)
    dsub: int = 2  # pq: values per sub-vector (a byte per dsub values; fastText's -dsub)
    seed: int = 0  # pq: the k-means's random start

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"quantize method {self.method!r}: expected one of {', '.join(METHODS)}")
        if self.keep < 0:
            raise ValueError(f"keep must be >= 0 rows (0: every row some title can use), got {self.keep}")
        if self.dsub < 1:
            raise ValueError(f"dsub must be >= 1, got {self.dsub}")

    def check(self, dim: int) -> None:
        """Raise ``ValueError`` unless rows of ``dim`` values can be coded so."""
        if self.method == "pq" and dim % self.dsub:
            raise ValueError(f"pq: dsub {self.dsub} does not divide the embedding dimension {dim}")

    def to_dict(self) -> dict:
        return {"method": self.method, "keep": self.keep, **({"dsub": self.dsub} if self.method == "pq" else {})}


    @classmethod
    def from_dict(cls, d: dict) -> "QuantizeSpec":
        return cls(method=d["method"], keep=int(d.get("keep", 0)), dsub=int(d.get("dsub", 2)))


@dataclass
class QuantizedTables:
    """A network's embedding tables as a quantized bundle stores them (``tables.safetensors``):
    each table's codes, and for a hashed table (``ngrams``, ``bigrams``) the bucket of each row."""

    spec: QuantizeSpec
    codes: dict[str, dict[str, torch.Tensor]]  # table name -> ``encode``'s tensors
    buckets: dict[str, np.ndarray]  # hashed table name -> (rows,) int64 sorted hash bucket of each row

    def tensors(self) -> dict[str, torch.Tensor]:
        """Everything, as one flat dict of tensors: ``<table>.<name>`` and ``<table>.buckets``."""
        out = {f"{t}.{k}": v for t, codes in self.codes.items() for k, v in codes.items()}
        out.update({f"{t}.buckets": torch.from_numpy(np.asarray(b, dtype=np.int32)) for t, b in self.buckets.items()})
        return out

    @classmethod
    def from_tensors(cls, spec: QuantizeSpec, tensors: dict[str, torch.Tensor]) -> "QuantizedTables":
        codes: dict[str, dict[str, torch.Tensor]] = {}
        buckets: dict[str, np.ndarray] = {}
        for key, value in tensors.items():
            table, _, name = key.partition(".")
            if name == "buckets":
                buckets[table] = value.numpy().astype(np.int64)
            else:
                codes.setdefault(table, {})[name] = value
        return cls(spec, codes, buckets)

    def decoded(self, dim: int) -> dict[str, torch.Tensor]:
        """(rows, dim) float32 table of each name (``ValueError`` for codes that do not fit)."""
        return {t: decode(c, self.spec.method, dim) for t, c in self.codes.items()}

    def facts(self) -> dict:
        """What ``bundle.json`` says of it: the method, and rows and bytes per table."""
        rows = {t: int(c["codes" if "codes" in c else "weight"].shape[0]) for t, c in self.codes.items()}
        return {**self.spec.to_dict(), "rows": rows, "bytes": sum(nbytes(c) for c in self.codes.values())}


# ---- which rows -----------------------------------------------------------------------------


def rows_to_keep(scores: dict[str, np.ndarray], keep: int, always: dict[str, np.ndarray] | None = None
                 ) -> dict[str, np.ndarray]:
    """Sorted row ids to keep of each table, from each row's ``scores`` (what it carries; 0: nothing).

    Rows of score 0 are dropped; with ``keep`` > 0, only the ``keep`` rows of highest score over
    all tables together (ties: the lower table order, then the lower row).  ``always`` names rows
    kept whatever their score (a vocabulary's ``<pad>`` and ``<unk>``); they count towards ``keep``.
    """
    always = always or {}
    names = list(scores)
    kept_always = {n: np.unique(np.asarray(always.get(n, []), dtype=np.int64)) for n in names}
    candidates = []  # (score, table, row) of every other row that carries something
    for t, n in enumerate(names):
        s = np.asarray(scores[n], dtype=np.float64)
        rows = np.flatnonzero(s > 0)
        rows = rows[~np.isin(rows, kept_always[n])]
        candidates.append((s[rows], np.full(len(rows), t), rows))
    score = np.concatenate([c[0] for c in candidates])
    table = np.concatenate([c[1] for c in candidates])
    row = np.concatenate([c[2] for c in candidates])
    if keep:
        budget = max(0, keep - sum(len(a) for a in kept_always.values()))
        order = np.lexsort((row, table, -score))[:budget]  # highest score first
        table, row = table[order], row[order]
    return {n: np.union1d(kept_always[n], row[table == t]).astype(np.int64) for t, n in enumerate(names)}


# ---- codes ----------------------------------------------------------------------------------


def encode(weight: torch.Tensor, spec: QuantizeSpec) -> dict[str, torch.Tensor]:
    """The codes of a (rows, dim) float table: the tensors ``decode`` rebuilds it from."""
    w = weight.detach().float().cpu()
    spec.check(w.shape[1])
    if spec.method == "none":
        return {"weight": w.clone()}
    if spec.method in ("int8", "int4"):
        return _encode_rowwise(w, 8 if spec.method == "int8" else 4)
    return _encode_pq(w, spec.dsub, spec.seed)


def decode(codes: dict[str, torch.Tensor], method: str, dim: int) -> torch.Tensor:
    """(rows, dim) float32 table of ``encode``'s ``codes``; ``ValueError`` if they do not fit."""
    try:
        if method == "none":
            out = codes["weight"].float()
        elif method in ("int8", "int4"):
            out = _decode_rowwise(codes, 8 if method == "int8" else 4, dim)
        elif method == "pq":
            out = _decode_pq(codes)
        else:
            raise ValueError(f"unknown quantize method {method!r}")
    except KeyError as e:
        raise ValueError(f"{method} codes without {e}") from None
    if out.dim() != 2 or out.shape[1] != dim:
        raise ValueError(f"{method} codes decode to {tuple(out.shape)}, not rows of {dim} values")
    return out


def nbytes(codes: dict[str, torch.Tensor]) -> int:
    """Bytes of ``codes`` as stored."""
    return sum(t.numel() * t.element_size() for t in codes.values())


def _encode_rowwise(w: torch.Tensor, bits: int) -> dict[str, torch.Tensor]:
    """Per row, ``w ~ offset + scale * code`` with codes ``0 .. 2**bits - 1`` (the row's minimum
    and maximum are exact); 4-bit codes are packed two to a byte."""
    levels = (1 << bits) - 1
    lo, hi = w.min(dim=1).values, w.max(dim=1).values
    scale = (hi - lo) / levels
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # a constant row: every code 0
    q = torch.round((w - lo[:, None]) / scale[:, None]).clamp_(0, levels).to(torch.uint8)
    if bits == 4:
        if q.shape[1] % 2:
            q = torch.cat([q, q.new_zeros(q.shape[0], 1)], dim=1)
        q = q[:, 0::2] | (q[:, 1::2] << 4)
    return {"codes": q.contiguous(), "scale": scale, "offset": lo}


def _decode_rowwise(codes: dict[str, torch.Tensor], bits: int, dim: int) -> torch.Tensor:
    q = codes["codes"]
    if bits == 4:
        q = torch.stack([q & 0x0F, q >> 4], dim=2).reshape(q.shape[0], -1)[:, :dim]
    return q.float() * codes["scale"].float()[:, None] + codes["offset"].float()[:, None]


def _encode_pq(w: torch.Tensor, dsub: int, seed: int) -> dict[str, torch.Tensor]:
    """Product quantization: per sub-space (``dsub`` consecutive values of every row), 256
    centroids by k-means on at most ``PQ_TRAIN_ROWS`` rows, then each row's nearest ones."""
    n, dim = w.shape
    nsub = dim // dsub
    sub = w.reshape(n, nsub, dsub).transpose(0, 1).contiguous()  # (nsub, n, dsub)
    gen = torch.Generator().manual_seed(seed)
    train = sub[:, torch.randperm(n, generator=gen)[:PQ_TRAIN_ROWS]] if n > PQ_TRAIN_ROWS else sub
    k = min(PQ_CENTROIDS, train.shape[1])
    centroids = _kmeans(train, k, gen)  # (nsub, k, dsub)
    codes = torch.empty(n, nsub, dtype=torch.uint8)
    for a in range(0, n, 1 << 15):
        codes[a : a + (1 << 15)] = _nearest(sub[:, a : a + (1 << 15)], centroids).T.to(torch.uint8)
    return {"codes": codes, "centroids": centroids}


def _decode_pq(codes: dict[str, torch.Tensor]) -> torch.Tensor:
    c, centroids = codes["codes"].long(), codes["centroids"].float()  # (n, nsub), (nsub, k, dsub)
    nsub = centroids.shape[0]
    if c.dim() != 2 or c.shape[1] != nsub or (c.numel() and int(c.max()) >= centroids.shape[1]):
        raise ValueError(f"pq codes {tuple(c.shape)} do not fit centroids {tuple(centroids.shape)}")
    picked = centroids[torch.arange(nsub)[None, :], c]  # (n, nsub, dsub)
    return picked.reshape(c.shape[0], -1)


def _nearest(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(nsub, n) index of the nearest centroid of each sub-vector of ``x`` (nsub, n, dsub)."""
    out = torch.empty(x.shape[0], x.shape[1], dtype=torch.long)
    c2 = centroids.square().sum(-1)  # (nsub, k)
    for s in range(0, x.shape[0], 4):  # 4 sub-spaces at a time: (4, n, k) distances, ||x||^2 left out
        d = torch.baddbmm(c2[s : s + 4, None, :], x[s : s + 4], centroids[s : s + 4].transpose(1, 2), alpha=-2.0)
        out[s : s + 4] = d.argmin(-1)
    return out


def _kmeans(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """(nsub, k, dsub) centroids of each sub-space of ``x`` (nsub, n, dsub) by Lloyd's k-means,
    started from ``k`` distinct rows; an emptied centroid restarts at a random row."""
    nsub, n, dsub = x.shape
    centroids = x[:, torch.randperm(n, generator=gen)[:k]].clone()
    for _ in range(PQ_ITERATIONS):
        assign = _nearest(x, centroids)  # (nsub, n)
        sums = torch.zeros(nsub, k, dsub).scatter_add_(1, assign[:, :, None].expand(-1, -1, dsub), x)
        counts = torch.zeros(nsub, k).scatter_add_(1, assign, torch.ones(nsub, n))
        empty = counts == 0
        centroids = torch.where(empty[:, :, None], centroids, sums / counts.clamp(min=1)[:, :, None])
        if bool(empty.any()):
            s, j = torch.nonzero(empty, as_tuple=True)
            centroids[s, j] = x[s, torch.randint(n, (len(s),), generator=gen)]
    return centroids
