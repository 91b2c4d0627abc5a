"""The linear baseline: TF-IDF on word and character n-grams + a linear SVM (scikit-learn).

It implements the same model protocol as the neural models (``--model tfidf``: same
data, split, MLflow logging, bundle, ``evaluate`` and ``predict``), so users see what
deep learning buys on their data.  It reads titles after titlecat's own
normalisation and tokenization (tokens joined by spaces), so the comparison is of
models, not of preprocessing.

Saved without pickle: the vectorizers' vocabularies and idf go to JSON, the weights
to safetensors as a CSR matrix, with weights smaller than ``prune_below`` dropped
(a dense 632 x 170k matrix is ~430 MB; pruning keeps the predictions, see tests).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field

from .. import registry
from ..bundle import FORMAT, listed_file, read_json, read_tensors, write_json, write_tensors
from ..config import BaseModelConfig, Config, ConfigError, TextConfig
from ..corpus import Corpus
from ..dataset import Rows
from ..evaluate import scores
from ..vocab import LabelEncoder
from .protocol import FitResult, FitRun


class TfidfConfig(BaseModelConfig):
    name: Literal["tfidf"] = "tfidf"
    word_ngram_max: int = Field(2, ge=1, le=3)  # word n-grams 1..this
    char_ngram_min: int = Field(2, ge=1)  # character n-grams (inside word boundaries, "char_wb")
    char_ngram_max: int = Field(5, ge=0)  # 0 = no character n-grams
    min_df: int = Field(2, ge=1)  # a feature must occur in this many training titles
    sublinear_tf: bool = True  # 1 + log(tf)
    C: float = Field(0.5, gt=0.0)  # inverse regularisation of the linear SVM
    prune_below: float = Field(1e-3, ge=0.0)  # saved weights with smaller magnitude are dropped


def corpus_texts(corpus: Corpus) -> list[str]:
    """Each title as its normalised tokens joined by spaces."""
    types = np.array(corpus.types + [""], dtype=object)
    toks = types[corpus.token_types] if len(corpus.token_types) else np.empty(0, dtype=object)
    return [" ".join(toks[a:b]) for a, b in zip(corpus.offsets[:-1].tolist(), corpus.offsets[1:].tolist())]


@registry.register(TfidfConfig)
class TfidfModel:
    """TF-IDF features -> linear scores, one per class (``logits`` in the neural models' sense)."""

    bundle_format = FORMAT

    def __init__(self, config: Config, *, device: Any = None):
        if config.data.unreliable_weight != 1.0:
            raise ConfigError("data.unreliable_weight: not supported by the tfidf model (its SVM takes no row "
                              "weights here); use 1.0, or --label-quality reliable")
        if config.distill is not None:
            raise ConfigError("distill: the tfidf model's SVM learns from labels only; distill into a network "
                              "(--model mlp, cnn, rnn or transformer)")
        self.config = config
        self.cfg: TfidfConfig = config.model
        self.labels: LabelEncoder | None = None

    @property
    def text_config(self) -> TextConfig:
        return self.config.text

    def _vectorizers(self) -> list:
        # imported here: scikit-learn costs ~1.5 s to import, which `titlecat predict` with a
        # neural bundle should not pay
        from sklearn.feature_extraction.text import TfidfVectorizer

        c = self.cfg
        vecs = [TfidfVectorizer(ngram_range=(1, c.word_ngram_max), min_df=c.min_df, sublinear_tf=c.sublinear_tf,
                                token_pattern=r"\S+", lowercase=False, dtype=np.float32)]
        if c.char_ngram_max > 0:
            vecs.append(TfidfVectorizer(analyzer="char_wb", ngram_range=(c.char_ngram_min, c.char_ngram_max),
                                        min_df=c.min_df, sublinear_tf=c.sublinear_tf, lowercase=False,
                                        dtype=np.float32))
        return vecs

    def fit(self, train: Rows, validation: Rows | None, run: FitRun) -> FitResult:
        """Fit once and score it like one epoch of a neural model (same metric names); a refit fits
        the same way (it has no epochs to count)."""
        t0 = time.perf_counter()
        self._fit_svm(train.corpus, train.y, len(train.labels))
        self.labels = train.labels
        train_secs = time.perf_counter() - t0
        tr = scores(train.y, self.logits(train.corpus))
        metrics = {"train_loss": tr["loss"], "train_accuracy": tr["accuracy"]}
        va = None
        if validation is not None:
            va = scores(validation.y, self.logits(validation.corpus))
            metrics.update({"val_loss": va["loss"], "val_accuracy": va["accuracy"],
                            "val_balanced_accuracy": va["balanced_accuracy"]})
        metrics.update({"epoch_seconds": time.perf_counter() - t0, "elapsed_seconds": time.perf_counter() - t0,
                        "iterations_per_second": 1.0 / train_secs, "samples_per_second": len(train) / train_secs})
        run.logger.log_metrics({run.metric_prefix + k: v for k, v in metrics.items()}, step=1)
        return FitResult(history=[{"epoch": 1, **metrics}], best_epoch=1,
                         best_val_balanced_accuracy=va["balanced_accuracy"] if va else -1.0,
                         train_seconds=train_secs, steps=1)

    def _fit_svm(self, corpus: Corpus, y: np.ndarray, n_classes: int) -> None:
        from sklearn.svm import LinearSVC

        texts = corpus_texts(corpus)
        self.vectorizers_ = self._vectorizers()
        X = sp.hstack([v.fit_transform(texts) for v in self.vectorizers_]).tocsr()
        svm = LinearSVC(C=self.cfg.C).fit(X, y)
        # classes_ may miss a class with no training row; scatter into all n_classes rows
        W = np.zeros((n_classes, X.shape[1]), dtype=np.float32)
        b = np.full(n_classes, -1e4, dtype=np.float32)
        W[svm.classes_] = svm.coef_ if len(svm.classes_) > 2 else np.vstack([-svm.coef_, svm.coef_])
        b[svm.classes_] = svm.intercept_ if len(svm.classes_) > 2 else np.r_[-svm.intercept_, svm.intercept_]
        W[np.abs(W) < self.cfg.prune_below] = 0.0
        self.weights_ = sp.csr_matrix(W)
        self.bias_ = b

    def features(self, corpus: Corpus) -> sp.csr_matrix:
        texts = corpus_texts(corpus)
        return sp.hstack([v.transform(texts) for v in self.vectorizers_]).tocsr()

    def logits(self, corpus: Corpus) -> np.ndarray:
        """(n, n_classes) float32 decision values."""
        if len(corpus) == 0:
            return np.empty((0, len(self.bias_)), dtype=np.float32)
        scores = (self.features(corpus) @ self.weights_.T).toarray()
        return (scores + self.bias_).astype(np.float32)

    def quantized(self, spec: Any) -> "TfidfModel":
        raise ValueError("the TF-IDF baseline has no embedding tables to quantize (its bundle keeps only the SVM "
                         f"weights above model.prune_below={self.config.model.prune_below:g}); quantize a network")

    def num_parameters(self) -> int:
        return int(self.weights_.nnz + len(self.bias_))

    # ---- bundle files, without pickle ----------------------------------------------------

    def save(self, directory: Path) -> dict[str, Any]:
        W = self.weights_
        tensors = {
            "weights.data": torch.from_numpy(W.data.astype(np.float32)),
            "weights.indices": torch.from_numpy(W.indices.astype(np.int64)),
            "weights.indptr": torch.from_numpy(W.indptr.astype(np.int64)),
            "bias": torch.from_numpy(self.bias_),
        }
        for i, v in enumerate(self.vectorizers_):
            tensors[f"idf.{i}"] = torch.from_numpy(v.idf_.astype(np.float32))
        write_tensors(directory / "model.safetensors", tensors)
        write_json(directory / "linear.json", {
            "shape": list(W.shape),
            "vectorizers": [{"vocabulary": {k: int(i) for k, i in v.vocabulary_.items()}} for v in self.vectorizers_],
        })
        return {}

    @classmethod
    def load(cls, directory: Path, config: Config, labels: LabelEncoder | None, *,
             device: Any = None) -> "TfidfModel":
        m = cls(config)
        m.labels = labels
        meta = read_json(listed_file(directory, "linear.json"))
        tensors = read_tensors(listed_file(directory, "model.safetensors"))
        m.vectorizers_ = m._vectorizers()
        if len(m.vectorizers_) != len(meta["vectorizers"]):
            raise ValueError("linear model: vectorizer count does not match the config")
        for i, (v, saved) in enumerate(zip(m.vectorizers_, meta["vectorizers"])):
            v.vocabulary = saved["vocabulary"]
            v.fit(["x"])  # validates the fixed vocabulary; idf is replaced just below
            v.idf_ = tensors[f"idf.{i}"].numpy().astype(np.float64)
        m.weights_ = sp.csr_matrix(
            (tensors["weights.data"].numpy(), tensors["weights.indices"].numpy(), tensors["weights.indptr"].numpy()),
            shape=tuple(meta["shape"]),
        )
        m.bias_ = tensors["bias"].numpy()
        return m
