"""Where a training step's time goes, and what the fused sparse Adam update buys.

    python benchmarks/profile_step.py                                  # the default MLP
    python benchmarks/profile_step.py --set model.hidden_sizes=[512] --set train.batch_size=2048

1. The sparse Adam update of one 200k x 128 table for 25,000 touched rows, as indexed
   torch operations (the CUDA path, the baseline) and as the numba loop the CPU uses,
   measured in the same run: milliseconds per step and the ratio.
2. Max pooling of token vectors per title for 9,480 titles of 3-17 tokens in batches of
   2,048 (vectors of 256), forward alone (prediction) and forward + backward (training), as ``F.embedding_bag(mode="max")`` (the baseline) and as the
   compiled loop the CPU uses (``models.layers.bag_max``), in the same run.
3. Two epochs of training steps on ../shared/data/meli2019-es (after one warm-up epoch),
   timed by part -- collate, forward, backward, dense optimizer, sparse optimizer -- and
   the training titles/s they add up to (no validation, no tracking).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def adam_update_ms(repeats: int = 20) -> dict:
    from titlecat.optim import LazyAdam, _adam_rows_torch

    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(200_000, 128))
    rows = torch.randperm(200_000)[:25_000].sort().values
    grad = torch.randn(25_000, 128)
    opt = LazyAdam([param], lr=0.01)

    def fused():
        param.grad = torch.sparse_coo_tensor(rows[None], grad, param.shape, check_invariants=False)
        opt.step()

    mv = torch.zeros(200_000, 2, 128)

    def indexed():
        with torch.no_grad():
            _adam_rows_torch(param, mv, rows, grad, 0.9, 0.999, 1e-8, 0.01)

    out = {}
    for name, fn in (("indexed_torch_ms", indexed), ("fused_numba_ms", fused)):
        fn()  # warm-up (and numba's compilation or cache load)
        t = time.perf_counter()
        for _ in range(repeats):
            fn()
        out[name] = (time.perf_counter() - t) / repeats * 1000
    out["speedup"] = out["indexed_torch_ms"] / out["fused_numba_ms"]
    return out


def bag_max_ms(repeats: int = 5) -> dict:
    import torch.nn.functional as F

    from titlecat.models.layers import _BagMax

    # shaped like predicting the 9,480 test titles: batches of 2,048 titles of 3-17 tokens,
    # each batch with its own ~6,000 distinct token vectors of 256
    torch.manual_seed(0)
    batches = []
    for size in (2048, 2048, 2048, 2048, 1288):
        lengths = torch.randint(3, 18, (size,))
        batches.append((torch.randint(0, 6_000, (int(lengths.sum()),)), lengths, lengths.cumsum(0) - lengths,
                        torch.randn(6_000, 256, requires_grad=True), torch.randn(size, 256)))

    def each(pool):
        return lambda: [pool(types, vec, lengths, offsets) * w for types, lengths, offsets, vec, w in batches]

    runs = {"embedding_bag_ms": each(lambda t, v, n, o: F.embedding_bag(t, v, o, mode="max")),
            "compiled_ms": each(lambda t, v, n, o: _BagMax.apply(v, t, n))}
    out = {}
    for name, fn in runs.items():
        sum(x.sum() for x in fn()).backward()  # warm-up (and numba's compilation or cache load)
        t = time.perf_counter()
        with torch.no_grad():  # prediction: forward only
            for _ in range(repeats):
                fn()
        out[f"forward_{name}"] = (time.perf_counter() - t) / repeats * 1000
        t = time.perf_counter()
        for _ in range(repeats):
            sum(x.sum() for x in fn()).backward()
        out[f"forward_backward_{name}"] = (time.perf_counter() - t) / repeats * 1000
    for part in ("forward", "forward_backward"):
        out[f"{part}_speedup"] = out[f"{part}_embedding_bag_ms"] / out[f"{part}_compiled_ms"]
    return out


def step_profile(data: Path, overrides: list[str]) -> dict:
    from titlecat.batching import BatchLoader, collate
    from titlecat.cache import tokenize_file
    from titlecat.dataset import encode_labels
    from titlecat.featurizer import Featurizer
    from titlecat.models import build_network
    from titlecat.optim import make_optimizers
    from titlecat.recipe import resolve_config
    from titlecat.vocab import LabelEncoder

    cfg = resolve_config("mlp", overrides=overrides)
    corpus = tokenize_file(data / "spanish.train.jsonl.gz", cfg.text, cfg.data)
    featurizer = Featurizer(cfg.text).fit(corpus)
    labels = LabelEncoder().fit(corpus.categories)
    y, _ = encode_labels(corpus, labels)
    encoded = featurizer.encode(corpus, y)
    torch.manual_seed(0)
    model = build_network(cfg.model, n_classes=len(labels), **featurizer.sizes())
    model.adapt(encoded)
    dense, *sparse = make_optimizers(model, cfg.train)
    loader = BatchLoader(encoded, cfg.train.batch_size, shuffle=True, seed=0)
    parts = dict.fromkeys(("collate", "forward", "backward", "dense_step", "sparse_step"), 0.0)
    titles = 0
    for epoch in range(3):  # epoch 0 warms up (allocations, numba), epochs 1-2 are timed
        for idx in loader.batch_indices(epoch):
            t0 = time.perf_counter()
            batch = collate(encoded, idx)
            t1 = time.perf_counter()
            loss = F.cross_entropy(model(batch), batch.labels)
            t2 = time.perf_counter()
            for opt in (dense, *sparse):
                opt.zero_grad(set_to_none=True)
            loss.backward()
            t3 = time.perf_counter()
            dense.step()
            t4 = time.perf_counter()
            for opt in sparse:
                opt.step()
            t5 = time.perf_counter()
            if epoch:
                for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                    parts[key] += dt
                titles += batch.size
    total = sum(parts.values())
    return {"config": overrides, "torch_threads": torch.get_num_threads(),
            "share": {k: round(v / total, 3) for k, v in parts.items()},
            "ms_per_batch": round(total / math.ceil(titles / cfg.train.batch_size) * 1000, 1),
            "train_titles_per_s": round(titles / total)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "meli2019-es")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    args = ap.parse_args()
    print(json.dumps({"adam_update": adam_update_ms(), "max_pooling": bag_max_ms(),
                      "training_step": step_profile(args.data, args.set)}, indent=2))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
