"""Training checkpoints: what a killed training needs to continue exactly where it was.

A checkpoint lives in ``DIR/checkpoint/`` (``DIR`` = the run's ``--output``)::

    state.json                the training's progress (epoch, batch inside the epoch, step, best
                              score, bad epochs, history), python and numpy random states, the
                              optimizers' settings, the run's config and call, the MLflow run id
    tensors.<n>.safetensors   model weights, best weights so far, optimizer state tensors,
                              torch random states

No pickle (``torch.save`` pickles, and unpickling runs code): tensors go to
safetensors, everything else to JSON.  A save is atomic: the tensors go to a new
file, then ``state.json`` (which names that file and its SHA-256) replaces the old
one through a temporary file and ``os.replace``, and only then are older tensor
files deleted.  A process killed at any instant leaves the previous checkpoint or
the new one, whole.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .data import file_digest, resolved

CHECKPOINT_DIR = "checkpoint"  # where a training keeps its checkpoint inside its --output
STATE = "state.json"
LOGGED = "logged.json"  # the last epoch whose metrics were logged (see Checkpoints.mark_logged)
FORMAT = "titlecat-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A missing, damaged or mismatching training checkpoint."""


_sha256 = file_digest  # streaming SHA-256, shared with the bundle and the preprocessing cache


def _plain(value):
    """JSON for the numpy scalars a metric may be (``json`` knows only Python numbers)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # on disk before it replaces the old file (survives a power cut, not only a kill)
        os.replace(tmp, path)
    except BaseException:  # Ctrl-C or SIGTERM mid-write: the old file stays, the half-written one goes
        tmp.unlink(missing_ok=True)
        raise


# ---- optimizers and random states <-> (tensors, JSON) -----------------------------------------


def _optimizer_parts(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state dict split into tensors (``prefix.<param>.<name>``) and JSON."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, entries in sd["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{pid}.{name}"] = value
            else:  # LazyAdam's step count, for one
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"scalars": scalars, "param_groups": sd["param_groups"]}


def _load_optimizer(opt: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor], saved: dict) -> None:
    state: dict[int, dict] = {int(pid): dict(entries) for pid, entries in saved["scalars"].items()}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            pid, name = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(pid), {})[name] = value
    # JSON turned tuples (Adam's betas) into lists; give them back as they were
    groups = [{k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()}
              for g in saved["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})


def _rng_parts() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    np_state = np.random.get_state(legacy=False)
    np_state["state"]["key"] = np_state["state"]["key"].tolist()
    version, internal, gauss = random.getstate()
    return tensors, {"numpy": np_state, "python": [version, list(internal), gauss]}


def _set_rng(tensors: dict[str, torch.Tensor], saved: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k[9:]))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    np_state = saved["numpy"]
    np_state["state"]["key"] = np.asarray(np_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(np_state)
    version, internal, gauss = saved["python"]
    random.setstate((version, tuple(internal), gauss))


# ---- the checkpoint directory -------------------------------------------------------------------


class Checkpoints:
    """Saves and restores a training's checkpoint in ``directory``.

    ``meta`` (JSON) is stored with every checkpoint: the run's config, how it was
    called, a fingerprint of its data and the MLflow run id; ``read_meta`` returns it
    before anything is built, so a resumed run can be set up as the first one was.
    ``every_minutes`` > 0 makes ``due()`` true that long after the last save; 0 makes it
    true at every epoch end.  A save writes the weights and the optimizer state (3-4 times
    the weights: gigabytes for the default MLP), so a short training does not save at every epoch.
    """

    def __init__(self, directory: str | Path, every_minutes: float = 0.0, meta: dict | None = None):
        self.directory = Path(directory)
        self.every_seconds = every_minutes * 60.0
        self.meta = meta or {}
        self._last_save = time.monotonic()

    def exists(self) -> bool:
        return (self.directory / STATE).is_file()

    def due(self, epoch_end: bool = False) -> bool:
        if self.every_seconds <= 0:
            return epoch_end
        return time.monotonic() - self._last_save >= self.every_seconds

    def mark_logged(self, epoch: int) -> None:
        """Record that ``epoch``'s metrics went to the tracker (a few bytes, every epoch end):
        a run resumed from an older checkpoint trains that epoch again but does not log it twice."""
        if self.exists():
            _write_atomic(self.directory / LOGGED, json.dumps({"epoch": epoch}).encode("utf-8"))

    def logged_epochs(self) -> int:
        """The last epoch whose metrics were logged (0 if none is recorded)."""
        try:
            return int(json.loads((self.directory / LOGGED).read_text(encoding="utf-8"))["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def save(self, model: torch.nn.Module, optimizers: list[torch.optim.Optimizer], progress: dict,
             best_state: dict[str, torch.Tensor] | None, best_is_model: bool = False) -> None:
        """Write the whole training state; ``progress`` is the loop's JSON-able position and scores.
        ``best_is_model``: the best weights are the model's own (an epoch end that improved), so
        they are not written twice."""
        self.directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        best_is_model = best_is_model and best_state is not None
        if not best_is_model:
            tensors.update({f"best.{k}": v for k, v in (best_state or {}).items()})
        optim_json = []
        for i, opt in enumerate(optimizers):
            t, j = _optimizer_parts(opt, f"optim.{i}")
            tensors.update(t)
            optim_json.append(j)
        rng_tensors, rng_json = _rng_parts()
        tensors.update(rng_tensors)

        name = f"tensors.{uuid.uuid4().hex[:16]}.safetensors"  # never the name of the checkpoint in force
        path = self.directory / name
        try:
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))
            state = {"format": FORMAT, "format_version": FORMAT_VERSION, "tensors": name, "sha256": _sha256(path),
                     "has_best": best_state is not None, "best_is_model": best_is_model, "progress": progress,
                     "optimizers": optim_json, "rng": rng_json, **self.meta}
            _write_atomic(self.directory / STATE, json.dumps(state, default=_plain).encode("utf-8"))  # the commit point
        finally:
            # whatever happened -- done, Ctrl-C, SIGTERM (the CLI makes it an exception), a full disk --
            # keep only the checkpoint in force: the old one once this one is committed, else the old one
            # and not this one's gigabytes
            self._prune()
        self._last_save = time.monotonic()

    def _prune(self) -> None:
        """Delete every tensors file but the one ``state.json`` names."""
        keep = self._in_force()
        for f in self.directory.glob("tensors.*.safetensors"):
            if f.name != keep:
                f.unlink(missing_ok=True)

    def _in_force(self) -> str | None:
        """The tensors file the committed ``state.json`` names (None: no checkpoint yet)."""
        try:
            return json.loads((self.directory / STATE).read_text(encoding="utf-8")).get("tensors")
        except (OSError, ValueError, AttributeError):
            return None

    def read_meta(self) -> dict:
        """The checkpoint's ``state.json`` (progress, config, call, run id), checked but without tensors."""
        path = self.directory / STATE
        if not path.is_file():
            raise CheckpointError(f"{self.directory}: no checkpoint here (expected {STATE}); "
                                  "--resume takes the --output DIR of an interrupted titlecat train")
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path}: damaged ({e})") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a titlecat checkpoint")
        if state.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{path}: checkpoint format version {state.get('format_version')} is not "
                                  f"supported (this titlecat reads version {FORMAT_VERSION})")
        missing = [k for k in ("tensors", "sha256", "has_best", "progress", "optimizers", "rng") if k not in state]
        if missing:
            raise CheckpointError(f"{path}: damaged (no {', '.join(missing)})")
        return state

    def restore(self, model: torch.nn.Module,
                optimizers: list[torch.optim.Optimizer]) -> tuple[dict, dict[str, torch.Tensor] | None]:
        """Load weights, optimizer and random states in place; returns ``(progress, best_state)``."""
        state = self.read_meta()
        path = self.directory / state["tensors"]
        if not path.is_file() or _sha256(path) != state["sha256"]:
            raise CheckpointError(f"{path}: missing or damaged (checksum mismatch); the checkpoint cannot be used")
        try:
            tensors = load_file(str(path))
        except SafetensorError as e:
            raise CheckpointError(f"{path}: damaged ({e})") from None
        try:
            model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        except RuntimeError as e:
            raise CheckpointError(f"{path}: weights of another model ({str(e).splitlines()[0]})") from None
        if state.get("best_is_model"):  # saved once, as the model's own weights
            best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif state["has_best"]:
            best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
        else:
            best = None
        if len(state["optimizers"]) != len(optimizers):
            raise CheckpointError(f"{path}: holds {len(state['optimizers'])} optimizers, the model has "
                                  f"{len(optimizers)}; the checkpoint is of another model")
        for i, (opt, saved) in enumerate(zip(optimizers, state["optimizers"])):
            _load_optimizer(opt, f"optim.{i}", tensors, saved)
        _set_rng(tensors, state["rng"])
        self._last_save = time.monotonic()
        return state["progress"], best

    def remove(self) -> None:
        """Delete the checkpoint (the run finished: its bundle holds what is worth keeping)."""
        shutil.rmtree(self.directory, ignore_errors=True)


# ---- resuming a run as it was started --------------------------------------------------------------


def read_checkpoint(output: str | Path | None) -> dict:
    """The ``state.json`` of the checkpoint in ``output/checkpoint`` (what ``--resume output`` continues)."""
    if output is None:
        raise CheckpointError("resuming needs the output directory of the interrupted training")
    return Checkpoints(Path(output) / CHECKPOINT_DIR).read_meta()


def resumable(output: str | Path | None) -> bool:
    """Whether ``output`` holds the checkpoint of an interrupted training (``--resume output``)."""
    return output is not None and (Path(output) / CHECKPOINT_DIR / STATE).is_file()


def run_file(path: str | Path | None) -> str | None:
    """A data file as a checkpoint records it: absolute, so a run can be resumed from another directory."""
    return None if path is None else str(resolved(path))


def check_resumable(saved: dict, config: dict[str, str], call: dict, data: dict | None = None) -> None:
    """Raise ``CheckpointError`` naming every setting, file or data fact that differs from the interrupted
    run's: a resumed training must continue with what it started with, or its result means nothing.

    ``config`` is the flattened config (``Config.flat()``); ``call`` the files read; ``data`` a
    fingerprint of the prepared data (sizes, categories, vocabulary), checked once it is known.
    """
    old_config, old_call = saved.get("config_flat", {}), saved.get("call", {})
    diffs = [f"{k}={config.get(k)} (the interrupted run has {old_config.get(k)})"
             for k in sorted(set(config) | set(old_config)) if config.get(k) != old_config.get(k)]
    diffs += [f"--{k} {call.get(k)} (the interrupted run read {old_call.get(k)})"
              for k in ("train", "test", "validation", "teacher") if call.get(k) != old_call.get(k)]
    if data is not None:
        diffs += [f"data {k} {data.get(k)} (the interrupted run had {saved.get('data', {}).get(k)})"
                  for k in sorted(data) if data.get(k) != saved.get("data", {}).get(k)]
    if diffs:
        raise CheckpointError("cannot resume: " + "; ".join(diffs) + ". A resumed training continues with the "
                              "settings and files it started with: drop the changes, or start a new training "
                              "with another --output")
