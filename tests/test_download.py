"""``titlecat download`` against a real HTTP server on 127.0.0.1 (no internet is needed).

Each test writes the archive it serves into ``tmp_path / "www"``; the server is a
``ThreadingHTTPServer`` on port 0, shut down when the test ends.  Every failure must
be a ``DownloadError`` (exit 2 from the CLI) that leaves nothing behind: no half
extracted files, no temporary files in the destination, nothing outside it.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import socket
import tarfile
import threading
import uuid
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from titlecat.cli import main
from titlecat.data import read_records
from titlecat.download import DownloadError, fetch

from conftest import tiny_rows, tiny_test_rows

LAYOUT = "meli-challenge-2019"
SHORT_BY = 4096  # the lying route announces this many bytes more than it sends


class _Handler(SimpleHTTPRequestHandler):
    """Serves files of the ``www`` folder; ``/short/NAME`` announces a longer body than it sends."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path.startswith("/short/"):
            body = (Path(self.directory) / self.path.removeprefix("/short/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-bzip2")
            self.send_header("Content-Length", str(len(body) + SHORT_BY))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True  # the connection drops before the announced end
            return
        super().do_GET()

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def www(tmp_path) -> Path:
    d = tmp_path / "www"
    d.mkdir()
    return d


@pytest.fixture
def server(www):
    """Base URL of a server for ``www``; stopped and closed by the finalizer."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(www)))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive()


def _gz_jsonl(rows) -> bytes:
    return gzip.compress(b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows), mtime=0)


def _course_files() -> dict[str, bytes]:
    train, test = tiny_rows(), tiny_test_rows()
    return {
        f"{LAYOUT}/spanish.train.jsonl.gz": _gz_jsonl(train),
        f"{LAYOUT}/spanish.validation.jsonl.gz": _gz_jsonl(train[:8]),
        f"{LAYOUT}/spanish.test.jsonl.gz": _gz_jsonl(test),
        f"{LAYOUT}/README.txt": b"tiny copy of the course layout\n",
    }


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:bz2") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    return info, data


def _dir(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, None


def _symlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, None


def _course_archive() -> bytes:
    return _tar([_dir(LAYOUT)] + [_file(n, d) for n, d in _course_files().items()])


def _snapshot(root: Path, skip: Path) -> set[str]:
    """Every path under ``root`` except those under ``skip`` (the served folder)."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if skip not in (p, *p.parents)}


def _assert_no_leftovers(dest: Path) -> None:
    """After a failure the destination holds nothing: no partial files, no temporaries."""
    left = sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) if dest.exists() else []
    assert left == [], f"left behind in {dest}: {left}"


# ---- the good archive -------------------------------------------------------------------


def test_download_extracts_the_course_layout(server, www, tmp_path):
    (www / "meli.tar.bz2").write_bytes(_course_archive())
    dest = tmp_path / "data"

    files = fetch(f"{server}/meli.tar.bz2", dest, timeout=10, quiet=True)

    expected = _course_files()
    assert sorted(files) == files, "files are returned in sorted order"
    assert [f.relative_to(dest).as_posix() for f in files] == sorted(expected)
    for f in files:
        assert f.is_file()
        assert f.read_bytes() == expected[f.relative_to(dest).as_posix()]
    # only the archive's content is left in dest: the download and staging temporaries are gone
    assert {p.name for p in dest.iterdir()} == {LAYOUT}
    assert not [p for p in dest.rglob(".titlecat-*")]
    # and the extracted data is readable by titlecat itself
    assert len(list(read_records(dest / LAYOUT / "spanish.train.jsonl.gz"))) == len(tiny_rows())


def test_download_keeps_other_files_in_dest(server, www, tmp_path):
    (www / "meli.tar.bz2").write_bytes(_course_archive())
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep me")

    fetch(f"{server}/meli.tar.bz2", dest, timeout=10, quiet=True)

    assert (dest / "mine.txt").read_text() == "keep me"
    assert (dest / LAYOUT / "spanish.test.jsonl.gz").is_file()


def test_cli_download_prints_what_it_got(server, www, tmp_path, capsys):
    (www / "meli.tar.bz2").write_bytes(_course_archive())
    dest = tmp_path / "data"

    rc = main(["download", "--url", f"{server}/meli.tar.bz2", "--dest", str(dest)])

    assert rc == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{len(_course_files())} files, ")
    assert str(dest.resolve()) in out.splitlines()[0]
    for name in _course_files():
        assert str(dest / name) in out
    assert (dest / LAYOUT / "spanish.train.jsonl.gz").is_file()


# ---- archives that try to escape the destination ------------------------------------------

_ABS_TARGET = f"/tmp/titlecat-test-{uuid.uuid4().hex}.txt"

EVIL = {
    "dotdot": [_file(f"{LAYOUT}/ok.txt", b"ok"), _file("../evil.txt", b"pwned")],
    "nested-dotdot": [_file(f"{LAYOUT}/../../evil.txt", b"pwned")],
    "absolute": [_file(f"{LAYOUT}/ok.txt", b"ok"), _file(_ABS_TARGET, b"pwned")],
    "symlink-out": [_symlink(f"{LAYOUT}/link", "../../"), _file(f"{LAYOUT}/ok.txt", b"ok")],
    "symlink-absolute": [_symlink(f"{LAYOUT}/passwd", "/etc/passwd")],
    "write-through-symlink": [_symlink("up", ".."), _file("up/evil.txt", b"pwned")],
}


@pytest.mark.parametrize("case", sorted(EVIL))
def test_archive_escaping_dest_is_refused(case, server, www, tmp_path):
    (www / "evil.tar.bz2").write_bytes(_tar(EVIL[case]))
    dest = tmp_path / "outer" / "data"
    before = _snapshot(tmp_path, www)

    with pytest.raises(DownloadError, match="refusing to extract") as err:
        fetch(f"{server}/evil.tar.bz2", dest, timeout=10, quiet=True)

    assert "archive member" in str(err.value)
    _assert_no_leftovers(dest)
    assert _snapshot(tmp_path, www) - before <= {"outer", "outer/data"}, "something was written outside dest"
    assert not (tmp_path / "outer" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not Path(_ABS_TARGET).exists()


def test_cli_refuses_traversal_with_exit_2(server, www, tmp_path, capsys):
    (www / "evil.tar.bz2").write_bytes(_tar(EVIL["dotdot"]))
    dest = tmp_path / "data"

    rc = main(["download", "--url", f"{server}/evil.tar.bz2", "--dest", str(dest)])

    assert rc == 2
    cap = capsys.readouterr()
    assert cap.err.startswith("titlecat: error:") or "\ntitlecat: error:" in cap.err
    assert "../evil.txt" in cap.err
    assert "Traceback" not in cap.out + cap.err
    _assert_no_leftovers(dest)


# ---- transfer failures ------------------------------------------------------------------


def test_404_is_a_download_error(server, tmp_path):
    dest = tmp_path / "data"
    url = f"{server}/missing.tar.bz2"
    with pytest.raises(DownloadError) as err:
        fetch(url, dest, timeout=10, quiet=True)
    assert url in str(err.value) and "HTTP 404" in str(err.value)
    _assert_no_leftovers(dest)


def test_cli_404_exits_2_without_traceback(server, tmp_path, capsys):
    dest = tmp_path / "data"
    url = f"{server}/missing.tar.bz2"

    rc = main(["download", "--url", url, "--dest", str(dest)])

    assert rc == 2
    cap = capsys.readouterr()
    assert cap.err.startswith("titlecat: error:")
    assert url in cap.err and "HTTP 404" in cap.err
    assert "Traceback" not in cap.out + cap.err
    assert cap.out == ""
    _assert_no_leftovers(dest)


def test_unreachable_server_is_a_download_error(tmp_path):
    # a port that was free a moment ago: the connection is refused
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "data"
    with pytest.raises(DownloadError, match="download failed"):
        fetch(f"http://127.0.0.1:{port}/x.tar.bz2", dest, timeout=5, quiet=True)
    _assert_no_leftovers(dest)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "corrupt-middle"])
def test_damaged_archive_is_a_download_error(damage, server, www, tmp_path):
    good = _course_archive()
    body = {
        "truncated": good[: len(good) // 2],
        "garbage": b"this is not a tar archive at all\n" * 50,
        "empty": b"",
        "corrupt-middle": good[:100] + bytes(b ^ 0xFF for b in good[100:200]) + good[200:],
    }[damage]
    (www / "bad.tar.bz2").write_bytes(body)
    dest = tmp_path / "data"

    with pytest.raises(DownloadError, match="not a readable tar archive"):
        fetch(f"{server}/bad.tar.bz2", dest, timeout=10, quiet=True)

    _assert_no_leftovers(dest)


def test_connection_closed_before_content_length_is_a_download_error(server, www, tmp_path):
    (www / "meli.tar.bz2").write_bytes(_course_archive())
    dest = tmp_path / "data"

    with pytest.raises(DownloadError) as err:
        fetch(f"{server}/short/meli.tar.bz2", dest, timeout=10, quiet=True)

    msg = str(err.value)
    assert f"{server}/short/meli.tar.bz2" in msg
    assert "connection closed before the whole archive arrived" in msg and "nothing was kept" in msg
    _assert_no_leftovers(dest)


def test_cli_short_read_exits_2(server, www, tmp_path, capsys):
    (www / "meli.tar.bz2").write_bytes(_course_archive())
    dest = tmp_path / "data"

    rc = main(["download", "--url", f"{server}/short/meli.tar.bz2", "--dest", str(dest)])

    assert rc == 2
    cap = capsys.readouterr()
    assert "titlecat: error:" in cap.err and "Traceback" not in cap.out + cap.err
    _assert_no_leftovers(dest)


# ---- the archive's digest, the cache and retries ------------------------------------------


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_a_pinned_digest_that_matches_is_unpacked_and_the_archive_cached(server, www, tmp_path):
    archive = _course_archive()
    (www / "meli.tar.bz2").write_bytes(archive)
    cache = tmp_path / "cache"

    files = fetch(f"{server}/meli.tar.bz2", tmp_path / "a", quiet=True, sha256=_sha(archive), cache_dir=cache)
    (www / "meli.tar.bz2").unlink()  # the second fetch must not need the server
    again = fetch(f"{server}/meli.tar.bz2", tmp_path / "b", quiet=True, sha256=_sha(archive), cache_dir=cache)

    assert [f.relative_to(tmp_path / "a") for f in files] == [f.relative_to(tmp_path / "b") for f in again]
    assert [p.read_bytes() for p in cache.iterdir()] == [archive]


def test_a_download_that_does_not_match_the_pinned_digest_is_refused_and_not_kept(server, www, tmp_path):
    (www / "meli.tar.bz2").write_bytes(_course_archive())
    dest, cache = tmp_path / "data", tmp_path / "cache"
    wrong = "0" * 64

    with pytest.raises(DownloadError) as err:
        fetch(f"{server}/meli.tar.bz2", dest, quiet=True, sha256=wrong, cache_dir=cache, retries=0)

    msg = str(err.value)
    assert msg.startswith(f"{server}/meli.tar.bz2: the download is damaged or not the expected archive")
    assert f"its SHA-256 is {_sha(_course_archive())}, expected {wrong}; nothing was kept" in msg
    _assert_no_leftovers(dest)
    assert not list(cache.rglob("*meli*")), "a damaged download was cached"


def test_a_damaged_first_download_is_retried(www, tmp_path):
    """The first answer is cut short (a flaky network), the second is whole: one retry gets it."""
    archive = _course_archive()
    answers = [archive[: len(archive) // 3], archive]

    class Flaky(SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = answers.pop(0) if len(answers) > 1 else answers[0]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        files = fetch(f"http://127.0.0.1:{httpd.server_address[1]}/meli.tar.bz2", tmp_path / "data", quiet=True,
                      sha256=_sha(archive), cache_dir=tmp_path / "cache", retries=1)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert len(files) == len(_course_files())


def test_cli_download_without_a_pinned_digest_prints_the_one_it_got(server, www, tmp_path, capsys):
    (www / "meli.tar.bz2").write_bytes(_course_archive())

    assert main(["download", "--url", f"{server}/meli.tar.bz2", "--dest", str(tmp_path / "data")]) == 0

    err = capsys.readouterr().err
    assert f"has no pinned SHA-256; the archive's is {_sha(_course_archive())} (give it as --sha256" in err


def test_cli_refuses_a_malformed_digest(tmp_path, capsys):
    assert main(["download", "--url", "http://127.0.0.1:9/x.tar.bz2", "--dest", str(tmp_path / "d"),
                 "--sha256", "abc"]) == 2
    assert capsys.readouterr().err == "titlecat: error: --sha256 abc: not a SHA-256 (64 hexadecimal digits)\n"
