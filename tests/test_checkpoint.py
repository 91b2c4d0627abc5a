"""Training checkpoints in-process: an interrupted ``fit`` resumed from its checkpoint ends
exactly where an uninterrupted one does; optimizer and random states round-trip; the files
are safetensors and JSON only, written atomically; damage and mismatches are clear errors.
(The SIGKILL test through the command line is in ``test_resume.py``.)
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

import titlecat.checkpoint as ckpt
from titlecat.checkpoint import CheckpointError, Checkpoints, check_resumable
from titlecat.config import Config
from titlecat.featurizer import Featurizer
from titlecat.tokenizer import tokenize_titles
from titlecat.models import build_network
from titlecat.optim import LazyAdam
from titlecat.loop import fit, seed_everything

TITLES = ["zapatillas nike air max", "zapatillas adidas running", "casco moto integral", "casco moto rebatible",
          "celular samsung galaxy", "celular motorola moto g"] * 4
LABELS = np.repeat([[0, 0, 1, 1, 2, 2]], 4, axis=0).ravel()
BATCHES_PER_EPOCH = 3  # 24 titles, batches of 8


class Interrupted(Exception):
    pass


def _fit(directory=None, stop_after_saves: int | None = None, minutes: float = 1e-9, epochs: int = 4, logger=None,
         token_dropout: float = 0.0):
    """A tiny MLP (with sparse n-gram and bigram tables: LazyAdam and AdamW) fitted with checkpoints in
    ``directory``; ``stop_after_saves`` raises after that many checkpoints, as a crash would."""
    text = Config.default("mlp").text.model_copy(update={"buckets": 500, "bigram_buckets": 200})
    corpus = tokenize_titles(TITLES, text)
    feat = Featurizer(text).fit(corpus)
    data = feat.encode(corpus, LABELS)
    cfg = Config.default("mlp").with_overrides({
        "model.embedding_dim": 8, "model.hidden_sizes": [16], "train.epochs": epochs, "train.batch_size": 8,
        "train.patience": 10, "train.seed": 5, "train.warmup_steps": 2, "train.checkpoint_minutes": minutes,
        "train.token_dropout": token_dropout})
    seed_everything(5)
    model = build_network(cfg.model, n_classes=3, **feat.sizes())
    model.adapt(data)
    checkpoints = None
    if directory is not None:
        checkpoints = Checkpoints(directory, cfg.train.checkpoint_minutes, meta={"run_id": "r1"})
        if stop_after_saves is not None:
            save, saves = checkpoints.save, []

            def crashing_save(*args, **kwargs):
                save(*args, **kwargs)
                saves.append(1)
                if len(saves) == stop_after_saves:
                    raise Interrupted

            checkpoints.save = crashing_save
    return fit(model, data, data, cfg.train, logger=logger, checkpoints=checkpoints), model


@pytest.fixture(scope="module")
def reference():
    return _fit()


def _assert_same(a, b):
    (ra, ma), (rb, mb) = a, b
    assert [h["train_loss"] for h in ra.history] == [h["train_loss"] for h in rb.history]
    assert [h["val_loss"] for h in ra.history] == [h["val_loss"] for h in rb.history]
    assert (ra.best_epoch, ra.best_val_balanced_accuracy, ra.steps) == (rb.best_epoch, rb.best_val_balanced_accuracy,
                                                                        rb.steps)
    for (k, va), vb in zip(ma.state_dict().items(), mb.state_dict().values()):
        assert torch.equal(va, vb), k


@pytest.mark.parametrize("saves", [1, 2, 4, 8, 13], ids=lambda n: f"after-{n}-saves")
def test_interrupted_fit_resumes_exactly(reference, tmp_path, saves):
    # with a checkpoint after every step, save n is mid-epoch unless it follows an epoch's last batch
    with pytest.raises(Interrupted):
        _fit(tmp_path, stop_after_saves=saves)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["progress"]["step"] == saves - state["progress"]["epoch"]  # one extra save per epoch end

    _assert_same(_fit(tmp_path), reference)


def test_an_interrupted_fit_with_token_dropout_resumes_exactly(reference, tmp_path):
    """The dropped tokens are drawn from (seed, step): a resumed training drops the same ones."""
    with_dropout = _fit(token_dropout=0.3)
    assert [h["train_loss"] for h in with_dropout[0].history] != [h["train_loss"] for h in reference[0].history]
    with pytest.raises(Interrupted):
        _fit(tmp_path, stop_after_saves=6, token_dropout=0.3)
    _assert_same(_fit(tmp_path, token_dropout=0.3), with_dropout)


def test_a_checkpoint_after_the_last_epoch_resumes_to_the_end(reference, tmp_path):
    _fit(tmp_path, minutes=0)  # completes; its last checkpoint says training is over
    result, model = _fit(tmp_path, minutes=0)
    _assert_same((result, model), reference)


def test_checkpoint_minutes_zero_saves_at_epoch_ends_only(tmp_path, monkeypatch):
    progress = []
    save = Checkpoints.save
    monkeypatch.setattr(Checkpoints, "save", lambda self, m, o, p, b, **kw: (progress.append(dict(p)), save(self, m, o, p, b, **kw)))
    _fit(tmp_path, minutes=0, epochs=3)
    assert [(p["epoch"], p["batch"]) for p in progress] == [(1, 0), (2, 0), (3, 0)]


def test_checkpoint_holds_only_json_and_safetensors(tmp_path):
    with pytest.raises(Interrupted):
        _fit(tmp_path, stop_after_saves=5)
    names = sorted(p.name for p in tmp_path.iterdir())  # one tensor file: older ones are deleted
    assert len(names) == 3 and names[:2] == ["logged.json", "state.json"] and names[2].endswith(".safetensors")
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["run_id"] == "r1" and state["has_best"]
    assert set(state["progress"]) >= {"epoch", "batch", "step", "bad_epochs", "best_score", "history"}


def test_optimizer_and_random_states_round_trip(tmp_path):
    torch.manual_seed(0)
    emb, lin = torch.nn.Embedding(20, 4, sparse=True), torch.nn.Linear(4, 3)
    opts = [torch.optim.AdamW(lin.parameters(), lr=0.01), LazyAdam(emb.parameters(), lr=0.01)]

    def step(model, opts, idx):
        for o in opts:
            o.zero_grad()
        model["lin"](model["emb"](torch.tensor(idx))).pow(2).sum().backward()
        for o in opts:
            o.step()

    model = torch.nn.ModuleDict({"emb": emb, "lin": lin})
    step(model, opts, [1, 2, 3])
    Checkpoints(tmp_path).save(model, opts, {"x": 1}, None)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    step(model, opts, [3, 4])
    after = {k: v.clone() for k, v in model.state_dict().items()}

    # a fresh model and fresh optimizers, restored, take the same next step and draw the same numbers
    emb2, lin2 = torch.nn.Embedding(20, 4, sparse=True), torch.nn.Linear(4, 3)
    model2 = torch.nn.ModuleDict({"emb": emb2, "lin": lin2})
    opts2 = [torch.optim.AdamW(lin2.parameters(), lr=0.5), LazyAdam(emb2.parameters(), lr=0.5)]
    progress, best = Checkpoints(tmp_path).restore(model2, opts2)
    assert progress == {"x": 1} and best is None
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]
    assert opts2[0].param_groups[0]["betas"] == (0.9, 0.999) and opts2[1].param_groups[0]["lr"] == 0.01
    step(model2, opts2, [3, 4])
    for k, v in model2.state_dict().items():
        assert torch.equal(v, after[k]), k


def test_a_crash_while_saving_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    with pytest.raises(Interrupted):
        _fit(tmp_path, stop_after_saves=4)
    before = json.loads((tmp_path / "state.json").read_text())

    def torn_write(tensors, path):  # the process dies half-way through writing the new tensors
        with open(path, "wb") as f:
            f.write(b"\x00" * 100)
        raise Interrupted

    monkeypatch.setattr(ckpt, "save_file", torn_write)
    with pytest.raises(Interrupted):
        _fit(tmp_path)
    monkeypatch.undo()
    assert json.loads((tmp_path / "state.json").read_text()) == before
    assert Checkpoints(tmp_path).read_meta()["progress"]["step"] == before["progress"]["step"]


@pytest.mark.parametrize("damage", ["tensors", "state", "missing-tensors", "future-version"])
def test_a_damaged_checkpoint_is_a_clear_error(tmp_path, damage):
    with pytest.raises(Interrupted):
        _fit(tmp_path, stop_after_saves=2)
    state_path = tmp_path / "state.json"
    tensors = tmp_path / json.loads(state_path.read_text())["tensors"]
    if damage == "tensors":
        tensors.write_bytes(tensors.read_bytes()[:-10])
    elif damage == "state":
        state_path.write_text('{"format": "titlecat-checkpoint", ')
    elif damage == "missing-tensors":
        tensors.unlink()
    else:
        state_path.write_text(json.dumps({**json.loads(state_path.read_text()), "format_version": 99}))
    with pytest.raises(CheckpointError, match="damaged|missing|version 99"):
        _fit(tmp_path)


def test_no_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint here"):
        Checkpoints(tmp_path).read_meta()


def test_check_resumable_names_every_difference():
    saved = {"config_flat": {"train.lr": "0.002", "model.name": "mlp"}, "call": {"train": "/d/a.jsonl", "test": None},
             "data": {"n_train": 40}}
    check_resumable(saved, {"train.lr": "0.002", "model.name": "mlp"}, {"train": "/d/a.jsonl", "test": None})
    with pytest.raises(CheckpointError) as e:
        check_resumable(saved, {"train.lr": "0.1", "model.name": "mlp"}, {"train": "/d/b.jsonl", "test": None},
                        {"n_train": 41})
    msg = str(e.value)
    assert "train.lr=0.1 (the interrupted run has 0.002)" in msg
    assert "--train /d/b.jsonl" in msg and "n_train 41" in msg and "another --output" in msg


class _Steps:
    """A logger that keeps the step of every metrics call."""

    def __init__(self):
        self.steps = []

    def log_metrics(self, metrics, step=None):
        self.steps.append(step)

    def log_params(self, params): ...

    def log_artifact(self, path, artifact_path=None): ...

    def set_tags(self, tags): ...

    def close(self, status="FINISHED"): ...


def test_an_epoch_logged_after_the_last_checkpoint_is_trained_again_but_not_logged_twice(tmp_path):
    first = _Steps()
    _fit(tmp_path, minutes=0, epochs=2, logger=first)  # minutes=0: a checkpoint at every epoch end
    assert first.steps == [1, 2] and Checkpoints(tmp_path).logged_epochs() == 2
    # as if the process had logged epoch 3 and died before its next checkpoint
    Checkpoints(tmp_path).mark_logged(3)
    again = _Steps()
    result, _ = _fit(tmp_path, minutes=0, epochs=4, logger=again)
    assert again.steps == [4]  # epoch 3 trained again from the epoch-2 checkpoint, not logged again
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]


def test_no_checkpoint_at_epoch_ends_before_checkpoint_minutes(tmp_path):
    _fit(tmp_path, minutes=60, epochs=2)
    assert not (tmp_path / "state.json").exists()
    assert Checkpoints(tmp_path).logged_epochs() == 0  # nothing to resume, so nothing recorded


def test_best_weights_that_are_the_models_are_written_once(tmp_path):
    from safetensors.torch import load_file

    _, model = _fit(tmp_path, minutes=0, epochs=1)  # epoch 1 improved on nothing: the model is the best
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["has_best"] and state["best_is_model"]
    tensors = load_file(tmp_path / state["tensors"])
    assert not [k for k in tensors if k.startswith("best.")]
    assert {k[6:] for k in tensors if k.startswith("model.")} == set(model.state_dict())
