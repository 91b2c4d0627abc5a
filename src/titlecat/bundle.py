"""The model bundle: a directory that ``evaluate`` and ``predict`` load from alone.

::

    bundle.json        format name and version, titlecat version, SHA-256 of every file
    config.yaml        the run's whole Config
    featurizer.json    text settings and vocabulary
    labels.json        the category of each output
    model.safetensors  the weights (safetensors: loading never runs code, unlike pickle)

An ensemble's bundle (``titlecat-ensemble``) holds its ``bundle.json`` (members, weights),
its ``config.yaml`` and one such bundle per member under ``members/``.

Loading checks the format version and every checksum first, so a truncated,
altered or half-copied bundle is reported clearly instead of failing deep inside
torch (or, worse, predicting with the wrong weights).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .config import Config, ConfigError
from .features import Featurizer, file_digest
from .vocab import LabelEncoder

FORMAT = "titlecat-bundle"
FORMAT_VERSION = 1
FILES = ("config.yaml", "featurizer.json", "labels.json", "model.safetensors")
HELD_OUT_FILE = "validation.safetensors"  # a refitted model's first training's validation logits (train.refit)
ENSEMBLE_FORMAT = "titlecat-ensemble"  # an ensemble: its config and one ordinary bundle per member
ENSEMBLE_MEMBERS = "members"  # the sub-directory of an ensemble bundle holding its members' bundles
CHECKPOINT_DIR = "checkpoint"  # where a training keeps its checkpoint inside --output (titlecat.checkpoint)


class BundleError(ValueError):
    """A missing, damaged or incompatible model bundle."""


_sha256 = file_digest  # the same streaming SHA-256 the preprocessing cache keys on


def check_output_dir(directory: str | Path, checkpoint_ok: bool = False) -> None:
    """Raise ``BundleError`` unless ``directory`` is new, empty, or an old bundle that may be replaced.

    Saving replaces the whole directory, so anything else (a file, a folder of the
    user's work) is refused rather than deleted.  A training checkpoint in it is
    refused too unless ``checkpoint_ok`` (resuming that training, or its final save):
    starting a new training there would throw away the interrupted one.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise BundleError(f"{directory}: exists and is not a directory; choose another output directory")
    names = {p.name for p in directory.iterdir()} if directory.is_dir() else set()
    if CHECKPOINT_DIR in names and not checkpoint_ok:
        raise BundleError(f"{directory}: holds the checkpoint of an interrupted training; continue it with "
                          f"`titlecat train --resume {directory}`, or delete {directory / CHECKPOINT_DIR} to start over")
    if "bundle.json" not in names and names - {CHECKPOINT_DIR}:
        raise BundleError(f"{directory}: exists, is not empty and is not a titlecat bundle; refusing to replace it "
                          "(choose a new or empty output directory)")


def save_bundle(directory: str | Path, config: Config, featurizer: Featurizer, labels: LabelEncoder,
                state: dict[str, torch.Tensor], extra: dict | None = None,
                extra_files: dict[str, dict] | None = None,
                tensor_files: dict[str, dict[str, torch.Tensor]] | None = None) -> Path:
    """Write the bundle atomically: into a temporary sibling, then renamed into place.

    ``extra_files`` (name -> JSON-able dict) and ``tensor_files`` (name -> tensors, as
    safetensors) are written beside the standard files and checksummed like them (the linear
    model keeps its vectorizers there, a refitted model its validation logits).
    """
    def write(tmp: Path) -> None:
        config.to_yaml(tmp / "config.yaml")
        (tmp / "featurizer.json").write_text(json.dumps(featurizer.to_dict(), ensure_ascii=False), encoding="utf-8")
        (tmp / "labels.json").write_text(json.dumps(labels.to_dict(), ensure_ascii=False), encoding="utf-8")
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp / "model.safetensors"))
        for name, content in (extra_files or {}).items():
            (tmp / name).write_text(json.dumps(content, ensure_ascii=False), encoding="utf-8")
        for name, tensors in (tensor_files or {}).items():
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / name))
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "titlecat_version": __version__,
            "model": config.model.name,
            "n_classes": len(labels),
            "files": {name: _sha256(tmp / name) for name in (*FILES, *(extra_files or {}), *(tensor_files or {}))},
            **(extra or {}),
        }
        (tmp / "bundle.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")

    return _write_atomically(directory, write)


def save_ensemble_bundle(directory: str | Path, config: Config, members: list[tuple[str, Callable[[Path], object]]],
                         weights: list[float], n_classes: int, extra: dict | None = None) -> Path:
    """Write an ensemble's bundle atomically: its config and one ordinary bundle per member.

    ``members``: (sub-directory name, function that saves that member's bundle into a directory).
    """
    def write(tmp: Path) -> None:
        config.to_yaml(tmp / "config.yaml")
        for name, save in members:
            save(tmp / ENSEMBLE_MEMBERS / name)
        meta = {
            "format": ENSEMBLE_FORMAT,
            "format_version": FORMAT_VERSION,
            "titlecat_version": __version__,
            "model": config.model.name,
            "n_classes": n_classes,
            "members": [f"{ENSEMBLE_MEMBERS}/{name}" for name, _ in members],
            "weights": weights,
            "files": {"config.yaml": _sha256(tmp / "config.yaml")},  # each member checks its own files
            **(extra or {}),
        }
        (tmp / "bundle.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")

    return _write_atomically(directory, write)


def _write_atomically(directory: str | Path, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` fills a temporary sibling of ``directory``, which then replaces it: a crash
    leaves either the old bundle or the new one, never half of one."""
    directory = Path(directory)
    check_output_dir(directory, checkpoint_ok=True)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        write(tmp)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old.{os.getpid()}")
            directory.rename(old)
            tmp.rename(directory)
            if (old / CHECKPOINT_DIR).is_dir():  # the training's checkpoint stays until the training ends
                (old / CHECKPOINT_DIR).rename(directory / CHECKPOINT_DIR)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def bundle_format(directory: str | Path) -> str | None:
    """The format a bundle's ``bundle.json`` names (None if unreadable: ``read_bundle`` then says why)."""
    try:
        meta = json.loads((Path(directory) / "bundle.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta.get("format") if isinstance(meta, dict) else None


def read_ensemble_bundle(directory: str | Path) -> tuple[dict, Config, list[Path]]:
    """Check an ensemble bundle: ``(meta, config, member bundle directories)`` (members are read by the caller)."""
    directory = Path(directory)
    meta_path = directory / "bundle.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{meta_path}: ensemble format version {meta.get('format_version')} is not supported "
                          f"by titlecat {__version__} (reads version {FORMAT_VERSION})")
    if not isinstance(meta.get("files", {}), dict):
        raise BundleError(f"{meta_path}: damaged (expected a JSON object with a 'files' mapping)")
    members, weights = meta.get("members"), meta.get("weights")
    if not isinstance(members, list) or not isinstance(weights, list) or len(members) != len(weights) or not members:
        raise BundleError(f"{meta_path}: damaged (expected equally long 'members' and 'weights' lists)")
    _check_files(directory, meta)
    config = _read_config(directory)
    dirs = [directory / m for m in members]
    outside = [str(m) for m, d in zip(members, dirs) if directory.resolve() not in d.resolve().parents]
    if outside:  # a bundle is self-contained: it never points elsewhere on the machine
        raise BundleError(f"{meta_path}: member {outside[0]!r} lies outside the bundle")
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise BundleError(f"{missing[0]}: member bundle missing from the ensemble")
    return meta, config, dirs


def read_bundle(directory: str | Path) -> tuple[dict, Config, Featurizer, LabelEncoder, dict[str, torch.Tensor],
                                                dict[str, dict[str, torch.Tensor]]]:
    """Check and read a bundle: ``(meta, config, featurizer, labels, state_dict, tensor files)``; the
    tensor files are those ``save_bundle`` wrote besides the weights (``HELD_OUT_FILE``)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise BundleError(f"{directory}: not a model bundle directory (expected the --output DIR of titlecat train)")
    meta_path = directory / "bundle.json"
    if not meta_path.is_file():
        raise BundleError(f"{directory}: bundle.json is missing; not a titlecat model bundle")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{meta_path}: damaged ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("files", {}), dict):
        raise BundleError(f"{meta_path}: damaged (expected a JSON object with a 'files' mapping)")
    if meta.get("format") != FORMAT:
        raise BundleError(f"{meta_path}: not a titlecat bundle (format {meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{meta_path}: bundle format version {meta.get('format_version')} is not supported "
                          f"by titlecat {__version__} (reads version {FORMAT_VERSION}); retrain or upgrade titlecat")
    _check_files(directory, meta)
    missing = [n for n in FILES if n not in meta.get("files", {})]
    if missing:
        raise BundleError(f"{meta_path}: lists no checksum for {', '.join(missing)}")
    config = _read_config(directory)
    # the checksums match, yet the files may still not parse (edited by hand, or by another writer)
    path = directory / "featurizer.json"
    try:
        featurizer = Featurizer.from_dict(json.loads(path.read_text(encoding="utf-8")))
        path = directory / "labels.json"
        labels = LabelEncoder.from_dict(json.loads(path.read_text(encoding="utf-8")))
        path = directory / "model.safetensors"
        state = load_file(str(path))
        tensor_files = {}
        if HELD_OUT_FILE in meta["files"]:
            path = directory / HELD_OUT_FILE
            held = tensor_files[HELD_OUT_FILE] = load_file(str(path))
            logits, rows, digest = held["logits"], held["labels"], held["digest"]
            if (logits.dim() != 2 or logits.shape[1] != len(labels) or rows.shape != (logits.shape[0],)
                    or digest.shape != (32,)):
                raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(rows.shape)} do not fit "
                                 f"{len(labels)} categories")
    except (ValueError, KeyError, TypeError, SafetensorError) as e:
        raise BundleError(f"{path}: damaged ({type(e).__name__}: {e})") from None
    return meta, config, featurizer, labels, state, tensor_files


def _check_files(directory: Path, meta: dict) -> None:
    """Every file ``bundle.json`` lists is there, with the checksum it had when saved."""
    for name, digest in meta.get("files", {}).items():
        path = directory / name
        if not path.is_file():
            raise BundleError(f"{path}: missing from the bundle")
        if _sha256(path) != digest:
            raise BundleError(f"{path}: checksum mismatch: the file was truncated or altered after saving")


def _read_config(directory: Path) -> Config:
    try:
        return Config.from_yaml(directory / "config.yaml")
    except ConfigError as e:
        raise BundleError(f"bundle config is not valid for this titlecat: {e}") from None
