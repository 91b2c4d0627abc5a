"""``titlecat download``: fetch and unpack the course data set safely.

The archive is streamed to a temporary file beside the destination (so a failed
or interrupted download leaves nothing behind), then extracted with tarfile's
``data`` filter: no absolute paths, no ``..``, no links out of the destination,
no device files.
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

COURSE_URL = "https://cs.famaf.unc.edu.ar/~ccardellino/resources/diplodatos/meli-challenge-2019.tar.bz2"


class DownloadError(RuntimeError):
    pass


def _safe_members(tar: tarfile.TarFile, dest: Path):
    root = dest.resolve()
    for m in tar.getmembers():
        target = (root / m.name).resolve()
        if m.name.startswith(("/", "\\")) or (target != root and root not in target.parents):
            raise DownloadError(f"archive member {m.name!r} would be written outside {dest}; refusing to extract")
        if m.issym() or m.islnk() or m.isdev():
            raise DownloadError(f"archive member {m.name!r} is a link or device; refusing to extract")
        yield m


def fetch(url: str = COURSE_URL, dest: str | Path = "data", timeout: float = 60.0, quiet: bool = False) -> list[Path]:
    """Download ``url`` (a .tar.bz2/.tar.gz archive) and extract it into ``dest``; returns the files."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".titlecat-download-", dir=dest)
    tmp = Path(tmp_name)
    staging = Path(tempfile.mkdtemp(prefix=".titlecat-extract-", dir=dest))
    try:
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                total = int(resp.headers.get("Content-Length") or 0)
                got = 0
                while block := resp.read(1 << 20):
                    out.write(block)
                    got += len(block)
                    if not quiet and total:
                        print(f"\rdownloading {url}: {got / 1e6:.1f} / {total / 1e6:.1f} MB", end="", file=sys.stderr)
                if not quiet and total:
                    print(file=sys.stderr)
                if total and got != total:
                    raise DownloadError(f"{url}: connection closed after {got} of {total} bytes; try again")
        except urllib.error.HTTPError as e:
            raise DownloadError(f"{url}: download failed (HTTP {e.code} {e.reason})") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise DownloadError(f"{url}: download failed ({getattr(e, 'reason', e)})") from None
        try:
            with tarfile.open(tmp, "r:*") as tar:
                members = list(_safe_members(tar, staging))
                tar.extractall(staging, members=members, filter="data")
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DownloadError(f"{url}: not a readable tar archive ({e})") from None
        files = []
        for item in sorted(staging.rglob("*")):
            if item.is_file():
                rel = item.relative_to(staging)
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(item, target)
                files.append(target)
        return files
    finally:
        tmp.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
