"""The training loop: one loop for every network, readable top to bottom.

``fit`` runs epochs of ``train_one_epoch``, evaluates on validation after each,
keeps the best weights by validation balanced accuracy, stops early after
``patience`` epochs without improvement, and reloads the best weights at the end.
Given a ``Checkpoints``, it saves the whole training state at every epoch end and
every ``checkpoint_minutes``, and continues from a checkpoint it finds there.
It talks to a ``RunLogger`` (``titlecat.tracking``) and never to MLflow directly.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .batching import Batch, BatchLoader, collate
from .bundle import non_finite
from .checkpoint import Checkpoints
from .config import DistillConfig, TrainConfig
from .evaluate import score_data
from .featurizer import Encoded
from .models.protocol import FitResult
from .optim import lr_at, make_optimizers
from .tracking import NullLogger, RunLogger


class TrainingDiverged(ValueError):
    """The training loss became NaN or infinite (a learning rate too high, most often)."""

    def __init__(self, what: str, where: str, lr: float, kept: str = "nothing of it is saved"):
        super().__init__(f"training diverged: {what} {where} with train.lr={lr:g}; {kept}: try a lower train.lr")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but torch sees no CUDA device; use train.device=cpu or auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def log_prior(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """log of each category's share of the training rows (add-one smoothed: no category is -inf)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64) + 1.0
    return torch.from_numpy(np.log(counts / counts.sum())).float()


@dataclass
class Progress:
    """Where a training is.  With the weights and the optimizer and random states, this is
    what a checkpoint holds, so that a resumed training continues exactly (``titlecat.checkpoint``)."""

    epoch: int = 0  # epochs completed (trained, validated, logged)
    batch: int = 0  # batches of the current epoch already trained (> 0 in a mid-epoch checkpoint)
    step: int = 0  # optimizer steps so far: the learning-rate schedule's clock
    loss_sum: float = 0.0  # the current epoch's training loss, summed over its batches so far
    correct: int = 0  # the current epoch's correct training predictions so far
    seen: int = 0  # the current epoch's training titles so far
    epoch_seconds: float = 0.0  # the current epoch's training time so far
    elapsed: float = 0.0  # training time up to the last checkpoint (all processes of the run)
    bad_epochs: int = 0  # validations (epoch ends, eval_every_steps) since the best score (early stopping)
    stopped: bool = False  # early stopping fired: nothing is left to train
    best_epoch: int = 0  # the epoch during which the best weights were (at its end, or mid-epoch)
    best_step: int = 0  # the optimizer step of the best weights
    best_score: float = -1.0  # best validation balanced accuracy so far
    history: list[dict] = field(default_factory=list)  # one dict of metrics per completed epoch

    def start_epoch(self) -> None:
        self.batch, self.loss_sum, self.correct, self.seen, self.epoch_seconds = 0, 0.0, 0, 0, 0.0


def row_losses(logits: torch.Tensor, batch: Batch, cfg: TrainConfig, distill: DistillConfig | None = None,
               logit_offset: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) each title's loss: the cross-entropy with its label (``logit_offset`` (C,) added to the
    logits: ``logit_adjustment``; ``label_smoothing``).

    With a teacher's logits in the batch (distillation, ``distill``), Hinton et al.'s loss:
    ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy``, where ``_T`` is the
    softmax of logits / T; a transfer title (label -1) learns from the teacher's term alone.
    """
    hard_logits = logits if logit_offset is None else logits + logit_offset
    if batch.teacher is None:
        return F.cross_entropy(hard_logits, batch.labels, reduction="none", label_smoothing=cfg.label_smoothing)
    distill = distill or DistillConfig()
    t = distill.temperature
    known = batch.labels >= 0
    hard = F.cross_entropy(hard_logits, batch.labels.clamp(min=0), reduction="none", label_smoothing=cfg.label_smoothing)
    soft = F.kl_div(F.log_softmax(logits / t, dim=1), F.log_softmax(batch.teacher / t, dim=1), reduction="none",
                    log_target=True).sum(1) * (t * t)
    return torch.where(known, distill.alpha * soft + (1.0 - distill.alpha) * hard, soft)


def train_one_epoch(model, data: Encoded, batches: list[np.ndarray], optimizers, cfg: TrainConfig, device,
                    progress: Progress, total_steps: int, autocast: bool, desc: str,
                    after_step: Callable[[], None] | None = None,
                    logit_offset: torch.Tensor | None = None, stop: Callable[[], bool] | None = None,
                    distill: DistillConfig | None = None) -> None:
    """Train on ``batches`` (row indices into ``data``); steps and running statistics go to ``progress``.

    ``after_step`` runs after every optimizer step: where a mid-epoch checkpoint may be written.
    ``logit_offset`` (C,) is added to the logits inside the loss only (``logit_adjustment``).
    ``stop()``, asked after every step, ends the epoch early (early stopping between epoch ends).
    ``distill``: how rows with a teacher's logits learn from them (``row_losses``).
    """
    model.train()
    bar = tqdm(batches, initial=progress.batch, total=progress.batch + len(batches), desc=desc, leave=False,
               disable=None, unit="it")
    for idx in bar:
        t0 = time.perf_counter()
        # token dropout draws from (seed, step), so a resumed training drops the same tokens
        rng = np.random.default_rng([cfg.seed, progress.step]) if cfg.token_dropout > 0 else None
        batch = collate(data, idx, cfg.token_dropout, rng).to(device)
        # -- learning rate for this step --
        lr = lr_at(progress.step, total_steps, cfg)
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
        # -- forward / backward --
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(batch)  # (B, C)
        losses = row_losses(logits.float(), batch, cfg, distill, logit_offset)
        if batch.weights is not None:  # per-row weights (e.g. unreliable labels), normalised per batch
            loss = (losses * batch.weights).sum() / batch.weights.sum().clamp(min=1e-8)
        else:
            loss = losses.mean()
        if not torch.isfinite(loss):  # diverged: stop now, before the step spreads it and anything is saved
            raise TrainingDiverged(f"the loss is {float(loss)}", f"at epoch {progress.epoch + 1}, batch "
                                   f"{progress.batch + 1} (step {progress.step + 1})", cfg.lr,
                                   "nothing of it is saved (a checkpoint written before, if any, is kept)")
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        # -- step --
        for opt in optimizers:
            opt.step()
        # -- running statistics, in `progress` so that a mid-epoch checkpoint carries them --
        progress.step += 1
        progress.batch += 1
        progress.loss_sum += float(loss.detach())
        progress.correct += int((logits.detach().argmax(1) == batch.labels).sum())  # (a transfer title's -1: never)
        progress.seen += batch.size
        progress.epoch_seconds += time.perf_counter() - t0
        if progress.batch % 20 == 0:
            bar.set_postfix(loss=f"{progress.loss_sum / progress.batch:.3f}", lr=f"{lr:.2e}")
        if after_step is not None:
            after_step()
        if stop is not None and stop():
            break


def fit(model: torch.nn.Module, train_data: Encoded, val_data: Encoded | None, cfg: TrainConfig,
        logger: RunLogger | None = None, device: torch.device | None = None,
        checkpoints: Checkpoints | None = None,
        on_epoch: Callable[[int, dict], None] | None = None, *,
        stop_after: float | None = None, metric_prefix: str = "", distill: DistillConfig | None = None) -> FitResult:
    """Train ``model`` in place; on return it holds the best weights (by val balanced accuracy).

    Validation runs at every epoch end and, with ``cfg.eval_every_steps``, every that many
    optimizer steps too: the best weights are kept and early stopping counts (``patience``) at
    that grain, so one epoch of 20 million titles does not pass unchecked.
    With ``checkpoints``, the training state is saved at every epoch end and every
    ``cfg.checkpoint_minutes``; if a checkpoint is already there, training continues
    from it (same batches, same random numbers) instead of starting over.
    ``on_epoch(epoch, metrics)`` is called after each epoch (1-based, the metrics just
    logged); it may raise to stop the training (``titlecat tune`` prunes poor trials so).
    ``cfg.max_steps`` ends the training after that many steps (the schedule still spans
    ``cfg.epochs``): a time-boxed run, validated where it stops.

    A refit (``train.refit``) passes no ``val_data`` and ``stop_after`` = the chosen epochs
    (fractional when validation chose between epoch ends): it trains that much of the same
    schedule (``cfg.epochs`` long) and keeps the last weights; its metrics are logged as
    ``metric_prefix`` + name.

    Rows of ``train_data`` with a teacher's logits (``train_data.teacher``: distillation) learn from
    them as ``distill`` says (``row_losses``).
    """
    logger = logger or NullLogger()
    device = device or resolve_device(cfg.device)
    autocast = device.type == "cuda" and cfg.precision in ("auto", "bf16")
    model.to(device)
    loader = BatchLoader(train_data, cfg.batch_size, shuffle=True, seed=cfg.seed,
                         bucket_by_length=cfg.bucket_by_length)
    optimizers = make_optimizers(model, cfg)
    total_steps = cfg.epochs * len(loader)  # the learning-rate schedule's length, in steps
    last_step = total_steps if stop_after is None else min(total_steps, round(stop_after * len(loader)))
    if cfg.max_steps:
        last_step = min(last_step, cfg.max_steps)
    logit_offset = None
    if cfg.logit_adjustment > 0:
        logit_offset = cfg.logit_adjustment * log_prior(train_data.labels, model.n_classes).to(device)
    progress = Progress()
    best_state: dict[str, torch.Tensor] | None = None
    if checkpoints is not None and checkpoints.exists():
        # -- resume: weights, optimizer and random states, and the position of the last checkpoint --
        saved, best_state = checkpoints.restore(model, optimizers)
        saved.setdefault("best_step", saved.get("best_epoch", 0) * len(loader))  # a checkpoint from before best_step
        progress = Progress(**saved)
        tqdm.write(f"resuming at epoch {progress.epoch + 1}, batch {progress.batch} (step {progress.step})")
    start = time.perf_counter() - progress.elapsed

    last_val: dict | None = None
    val_has_known = val_data is not None and bool(((val_data.labels >= 0) & (val_data.labels < model.n_classes)).any())

    def validate(epoch: int) -> dict | None:
        """Score the current weights on validation; keep them if best; count towards early stopping."""
        nonlocal best_state, last_val
        if val_data is None:
            return None
        val = last_val = score_data(model, val_data, cfg.eval_batch_size, device, autocast)
        # finite weights, overflowing logits (a NaN loss with no known class among the rows is no sign of it)
        if val_has_known and not math.isfinite(val["loss"]):
            raise TrainingDiverged(f"the validation loss is {val['loss']}", f"at step {progress.step} (epoch {epoch})",
                                   cfg.lr)
        if val["balanced_accuracy"] > progress.best_score:
            progress.best_score, progress.best_epoch = val["balanced_accuracy"], epoch
            progress.best_step = progress.step
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            progress.bad_epochs = 0
        else:
            progress.bad_epochs += 1
            if progress.bad_epochs >= cfg.patience:
                tqdm.write(f"early stop: no better validation balanced accuracy for {cfg.patience} evaluations")
                progress.stopped = True
        return val

    def check_weights(where: str, kept: str = "nothing of it is saved") -> None:
        bad = non_finite(model.state_dict())
        if bad:
            raise TrainingDiverged(f"{bad} holds NaN or infinite weights", where, cfg.lr, kept)

    def after_step() -> None:
        """After every optimizer step: validation every ``eval_every_steps`` (but at an epoch's last
        step, which the epoch end validates), then a checkpoint when ``checkpoint_minutes`` have
        passed -- after the validation, so a resumed training never validates a step twice."""
        every = cfg.eval_every_steps
        if (every and val_data is not None and progress.step % every == 0 and progress.batch < len(loader)
                and progress.step < last_step):
            val = validate(progress.epoch + 1)
            train_loss = progress.loss_sum / max(1, progress.batch)
            logger.log_metrics({metric_prefix + k: v for k, v in {
                "step_train_loss": train_loss, "step_val_loss": val["loss"], "step_val_accuracy": val["accuracy"],
                "step_val_balanced_accuracy": val["balanced_accuracy"]}.items()}, step=progress.step)
            tqdm.write(f"{metric_prefix}step {progress.step:,} (epoch {progress.epoch + 1}, batch {progress.batch:,}"
                       f"/{len(loader):,})  train loss {train_loss:.4f}  val loss {val['loss']:.4f}  "
                       f"val bal.acc {val['balanced_accuracy']:.4f}")
        checkpoint()

    def checkpoint(epoch_end: bool = False) -> None:
        """Save the training state when ``checkpoint_minutes`` have passed, after a step or at an
        epoch end (at every epoch end when it is 0): a killed training loses at most that much work."""
        if checkpoints is not None and checkpoints.due(epoch_end):
            if not epoch_end:  # (an epoch end has just checked them)
                check_weights(f"at step {progress.step}", "the checkpoint before is kept")  # it stays the last good one
            progress.elapsed = time.perf_counter() - start
            checkpoints.save(model, optimizers, asdict(progress), best_state,
                             best_is_model=progress.batch == 0 and progress.best_step == progress.step)

    # epochs a previous process of this run already logged (it died after a later epoch end
    # than its last checkpoint): trained again, identically, but not logged twice
    logged_through = checkpoints.logged_epochs() if checkpoints is not None else 0

    while progress.step < last_step and not progress.stopped:
        epoch = progress.epoch + 1
        # -- train: the epoch's batches (fixed by seed and epoch), less those a checkpoint already
        #    trained, and those past the last step --
        t0 = time.perf_counter()
        batches = loader.batch_indices(epoch - 1)[progress.batch :][: last_step - progress.step]
        train_one_epoch(model, train_data, batches, optimizers, cfg, device, progress, total_steps, autocast,
                        desc=f"epoch {epoch}/{cfg.epochs}", after_step=after_step, logit_offset=logit_offset,
                        stop=lambda: progress.stopped, distill=distill)
        check_weights(f"after epoch {epoch} (step {progress.step})")  # its last step may diverge with a finite loss
        # -- validate (unless early stopping fired mid-epoch: these weights were just validated) --
        val = last_val if progress.stopped else validate(epoch)
        epoch_secs = time.perf_counter() - t0
        train_secs = max(progress.epoch_seconds, 1e-9)
        metrics = {
            "train_loss": progress.loss_sum / max(1, progress.batch),
            "train_accuracy": progress.correct / max(1, progress.seen),
            **({} if val is None else {"val_loss": val["loss"], "val_accuracy": val["accuracy"],
                                       "val_balanced_accuracy": val["balanced_accuracy"]}),
            "epoch_seconds": epoch_secs,
            "elapsed_seconds": time.perf_counter() - start,
            "iterations_per_second": progress.batch / train_secs,
            "samples_per_second": progress.seen / train_secs,
            "lr": lr_at(progress.step - 1, total_steps, cfg),
        }
        if epoch > logged_through:
            logger.log_metrics({metric_prefix + k: v for k, v in metrics.items()}, step=epoch)
            if val is not None and cfg.eval_every_steps:  # the step-grained series, complete
                logger.log_metrics({metric_prefix + "step_" + k: metrics[k] for k in
                                    ("train_loss", "val_loss", "val_accuracy", "val_balanced_accuracy")},
                                   step=progress.step)
        progress.history.append({"epoch": epoch, **metrics})
        shown = "" if val is None else f"  val loss {val['loss']:.4f}  val bal.acc {val['balanced_accuracy']:.4f}"
        tqdm.write(f"{metric_prefix}epoch {epoch:2d}  train loss {metrics['train_loss']:.4f}{shown}  "
                   f"{metrics['samples_per_second']:,.0f} titles/s  {epoch_secs:.1f}s")
        if val_data is None:  # without validation: the last weights
            progress.best_epoch, progress.best_step = epoch, progress.step
        progress.epoch = epoch
        progress.start_epoch()
        # -- checkpoint (when due), after the epoch's metrics are logged --
        checkpoint(epoch_end=True)
        if checkpoints is not None:
            checkpoints.mark_logged(epoch)
        if on_epoch is not None:
            on_epoch(epoch, metrics)

    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(history=progress.history, best_epoch=progress.best_epoch,
                     best_val_balanced_accuracy=progress.best_score, train_seconds=time.perf_counter() - start,
                     steps=progress.step, best_epochs=progress.best_step / max(1, len(loader)))
