"""The model bundle: a directory that ``evaluate`` and ``predict`` load from alone.

::

    bundle.json        format name and version, titlecat version, when it was saved, SHA-256 of
                       every file, the run's scores (``RunInfo.KEPT``)
    config.yaml        the run's whole Config
    labels.json        the category of each output
    ...                the model's own files (``Model.save``): a network's featurizer.json and
                       model.safetensors, the TF-IDF model's linear.json and model.safetensors
    validation.safetensors  a refitted model's first training's validation logits (train.refit)

An ensemble's bundle (``titlecat-ensemble``) holds its ``bundle.json`` (members, weights),
its ``config.yaml`` and one such bundle per member under ``members/``.

Loading checks the format version and every checksum first, so a truncated,
altered or half-copied bundle is reported clearly instead of failing deep inside
torch (or, worse, predicting with the wrong weights).  This module knows files, not models:
``titlecat.classifier`` saves and loads whole models through it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ._version import __version__
from .checkpoint import CHECKPOINT_DIR
from .config import Config, ConfigError
from .data import file_digest

FORMAT = "titlecat-bundle"
ENSEMBLE_FORMAT = "titlecat-ensemble"  # an ensemble: its config and one ordinary bundle per member
FORMAT_VERSION = 1
# the files each format must list (a model's own files are checked when it reads them: ``listed_file``)
REQUIRED = {FORMAT: ("config.yaml", "labels.json"), ENSEMBLE_FORMAT: ("config.yaml",)}
HELD_OUT_FILE = "validation.safetensors"  # a refitted model's first training's validation logits (train.refit)
ENSEMBLE_MEMBERS = "members"  # the sub-directory of an ensemble bundle holding its members' bundles


class BundleError(ValueError):
    """A missing, damaged or incompatible model bundle."""


def check_output_dir(directory: str | Path, checkpoint_ok: bool = False) -> None:
    """Raise ``BundleError`` unless ``directory`` is new, empty, or an old bundle that may be replaced.

    Saving replaces the whole directory, so anything else (a file, a folder of the
    user's work) is refused rather than deleted.  A training checkpoint in it is
    refused too unless ``checkpoint_ok`` (resuming that training, or its final save):
    starting a new training there would throw away the interrupted one.
    """
    directory = Path(directory)
    try:
        real = directory.resolve()
    except (RuntimeError, OSError) as e:  # Python 3.11 and 3.12 raise RuntimeError for a loop
        raise BundleError(f"{directory}: cannot be resolved ({e}); a loop of symbolic links?") from None
    if directory.exists() and not directory.is_dir():
        raise BundleError(f"{directory}: exists and is not a directory; choose another output directory")
    _check_writable(directory, real)
    names = {p.name for p in directory.iterdir()} if directory.is_dir() else set()
    if CHECKPOINT_DIR in names and not checkpoint_ok:
        raise BundleError(f"{directory}: holds the checkpoint of an interrupted training; continue it with "
                          f"`titlecat train --resume {directory}`, or delete {directory / CHECKPOINT_DIR} to start over")
    if "bundle.json" not in names and names - {CHECKPOINT_DIR}:
        raise BundleError(f"{directory}: exists, is not empty and is not a titlecat bundle; refusing to replace it "
                          "(choose a new or empty output directory)")


def _check_writable(directory: Path, real: Path) -> None:
    """Fail now, not after the training, if the bundle could not be written: ``directory`` (or,
    when new, its nearest existing ancestor, where it would be created) must be a folder in which
    a file can really be created -- a probe, because permissions alone do not tell (a read-only
    mount, a full quota; root ignores mode bits)."""
    ancestor = real.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise BundleError(f"{directory}: cannot be created: {ancestor} is a file, not a folder; choose another "
                          "output directory")
    # the bundle is written beside the directory (a temporary sibling renamed into place): that folder
    # must take new files, and so must the directory itself when it exists (its checkpoint goes there)
    probe_in = [ancestor] + ([real] if real.is_dir() else [])
    for folder in probe_in:
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".titlecat-probe-", dir=folder))
        except OSError as e:
            raise BundleError(f"{directory}: cannot be written ({folder}: {e.strerror or e}); choose an output "
                              "directory you can write to") from None


def write_bundle(directory: str | Path, config: Config, bundle_format: str, write: Callable[[Path], dict],
                 meta: dict | None = None) -> Path:
    """Write a bundle atomically: into a temporary sibling, then renamed into place.

    ``write(tmp)`` writes the model's files into ``tmp`` and returns entries for ``bundle.json``;
    every file it leaves at the top of ``tmp`` is checksummed (sub-directories, such as an
    ensemble's members, are bundles that check their own).
    """
    def fill(tmp: Path) -> None:
        config.to_yaml(tmp / "config.yaml")
        extra = write(tmp)
        files = sorted(p.name for p in tmp.iterdir() if p.is_file())
        info = {
            "format": bundle_format,
            "format_version": FORMAT_VERSION,
            "titlecat_version": __version__,
            "model": config.model.name,
            "saved_at": utc_now(),
            **extra,
            "files": {name: file_digest(tmp / name) for name in files},
            **(meta or {}),
        }
        (tmp / "bundle.json").write_text(json.dumps(info, indent=2), encoding="utf-8")

    return _write_atomically(directory, fill)


def utc_now() -> str:
    """The time now, UTC, ISO 8601 to the second: ``2026-12-03T12:19:50+00:00``."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_atomically(directory: str | Path, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` fills a temporary sibling of ``directory``, which then replaces it: a crash
    leaves either the old bundle or the new one, never half of one."""
    directory = Path(directory)
    check_output_dir(directory, checkpoint_ok=True)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        write(tmp)
        _honour_umask(tmp)
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


def _honour_umask(root: Path) -> None:
    """Give ``root`` and everything in it the permissions a plain ``mkdir`` or ``open`` would:
    ``mkdtemp`` makes 0700 folders and safetensors 0600 files, so a model shared in a group
    folder could not be loaded by the group."""
    mask = os.umask(0o022)  # the only way to read the umask is to set it
    os.umask(mask)
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def read_bundle(directory: str | Path) -> tuple[dict, Config]:
    """Check a bundle -- its ``bundle.json``, format, version and every checksum -- and read its
    ``(meta, config)``; the model's own files are read by the model (``Model.load``)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise BundleError(f"{directory}: not a model bundle directory (expected the --output DIR of titlecat train)")
    meta_path = directory / "bundle.json"
    if not meta_path.is_file():
        raise BundleError(f"{directory}: bundle.json is missing; not a titlecat model bundle")
    meta = read_json(meta_path)
    if not isinstance(meta, dict) or not isinstance(meta.get("files", {}), dict):
        raise BundleError(f"{meta_path}: damaged (expected a JSON object with a 'files' mapping)")
    if meta.get("format") not in REQUIRED:
        raise BundleError(f"{meta_path}: not a titlecat bundle (format {meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{meta_path}: bundle format version {meta.get('format_version')} is not supported "
                          f"by titlecat {__version__} (reads version {FORMAT_VERSION}); retrain or upgrade titlecat")
    for name, digest in meta.get("files", {}).items():
        if not isinstance(name, str) or name in ("", ".", "..") or name != Path(name).name or "\\" in name:
            # a bundle lists only its own top-level files: never one outside it (``../x``, ``/etc/passwd``)
            raise BundleError(f"{meta_path}: lists the file {name!r}, which is not a file name inside the bundle")
        path = directory / name
        if not path.is_file():
            raise BundleError(f"{path}: missing from the bundle")
        if file_digest(path) != digest:
            raise BundleError(f"{path}: checksum mismatch: the file was truncated or altered after saving")
    for name in REQUIRED[meta["format"]]:
        listed_file(directory, name, meta)
    try:
        config = Config.from_yaml(directory / "config.yaml")
    except ConfigError as e:
        raise BundleError(f"bundle config is not valid for this titlecat: {e}") from None
    return meta, config


def directory_bytes(directory: str | Path) -> int:
    """Bytes of every file under ``directory`` (a bundle's size on disk, an ensemble's members included)."""
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())


def listed_file(directory: Path, name: str, meta: dict | None = None) -> Path:
    """``directory / name``, a file the bundle's ``bundle.json`` checksums (else ``BundleError``)."""
    if meta is None:
        meta = read_json(directory / "bundle.json")
    if name not in meta.get("files", {}):
        raise BundleError(f"{directory / 'bundle.json'}: lists no checksum for {name}")
    return directory / name


# ---- the files inside: JSON and safetensors, never pickle --------------------------------------


def write_json(path: Path, content: Any) -> None:
    path.write_text(json.dumps(content, ensure_ascii=False), encoding="utf-8")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise BundleError(f"{path}: damaged ({type(e).__name__}: {e})") from None


def write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    bad = non_finite(tensors)
    if bad:  # a diverged model would predict arbitrary categories with exit 0: never saved as if fine
        raise BundleError(f"{path}: not written: {bad} holds NaN or infinite weights (a training that diverged)")
    save_file(tensors, str(path))


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        tensors = load_file(str(path))
    except (ValueError, OSError, SafetensorError) as e:
        raise BundleError(f"{path}: damaged ({type(e).__name__}: {e})") from None
    bad = non_finite(tensors)
    if bad:
        raise BundleError(f"{path}: {bad} holds NaN or infinite weights (a training that diverged); retrain it")
    return tensors


def non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor with a NaN or infinite value (None: all finite)."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None
