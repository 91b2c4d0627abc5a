"""``titlecat serve`` over real HTTP: the server runs as its own process on 127.0.0.1 (a free port),
answers as ``titlecat predict`` does, refuses every bad request with a 4xx that names the problem
and goes on serving, holds up under concurrent clients, and stops cleanly on SIGTERM.

Every wait is bounded; each server's process group is killed in a finalizer.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from titlecat import __version__
from titlecat.cli import main

from conftest import tiny_test_rows, wait_until_answering
from test_tracking import _free_port

MAX_BATCH = 50
MAX_BODY = 20_000  # bytes (--max-body-mb 0.02): small, so the tests stay cheap
TITLES = [r["title"] for r in tiny_test_rows()] + ["", "🙂🙂", "Casco " * 2_000, "zapatillas   NIKE\tair"]


class ServeProcess:
    """``titlecat serve`` in a subprocess of its own session; ``request()`` speaks HTTP to it."""

    def __init__(self, model: str, log: Path, *args: str, env: dict | None = None):
        self.port, self.log, self._out = _free_port(), log, open(log, "ab")
        cmd = [sys.executable, "-m", "titlecat.cli", "serve", "--model", str(model), "--port", str(self.port),
               "--no-access-log", *args]
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, **(env or {})})

    def wait_healthy(self, timeout: float = 180.0) -> None:
        wait_until_answering(f"http://127.0.0.1:{self.port}/health", self.proc, self.log, "titlecat serve", timeout,
                             on_timeout=self.kill)

    def request(self, method: str, path: str, body: bytes | dict | None = None, headers: dict | None = None,
                timeout: float = 60, conn: http.client.HTTPConnection | None = None) -> tuple[int, dict | str]:
        """(status, parsed JSON answer, or the text of an answer that is not JSON)."""
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            if isinstance(body, dict):
                body, headers = json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})}
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            text = r.read().decode("utf-8")
            try:
                return r.status, json.loads(text)
            except ValueError:
                return r.status, text
        finally:
            if own:
                conn.close()

    def predict(self, titles: list[str], **fields) -> dict:
        status, answer = self.request("POST", "/predict", {"titles": titles, **fields})
        assert status == 200, answer
        return answer

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, then the exit code (SIGKILL after ``timeout``: a failure)."""
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"titlecat serve ignored SIGTERM for {timeout:.0f} s")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._out.close()


def serving(model, log: Path, *args: str, env: dict | None = None):
    """A started, healthy ``ServeProcess`` (a generator for fixtures: stopped at the end by SIGTERM,
    so that it deletes a model it downloaded; killed if it does not stop)."""
    srv = ServeProcess(model, log, *args, env=env)
    try:
        srv.wait_healthy()
        yield srv
    finally:
        if srv.proc.poll() is None:
            os.killpg(srv.proc.pid, signal.SIGTERM)
            try:
                srv.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        srv.kill()


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    """The session's tiny MLP served with small limits (--max-batch 50, --max-body-mb 0.02)."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    yield from serving(trained.bundle, log, "--max-batch", str(MAX_BATCH), "--max-body-mb", str(MAX_BODY / 1e6))


def cli_predictions(bundle, titles: list[str], k: int, capsys) -> list[dict]:
    """What ``titlecat predict --json`` prints for ``titles``, one object per title."""
    assert main(["predict", "--model", str(bundle), "--top-k", str(k), "--json", *titles]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def assert_same_predictions(got: list[dict], expected: list[dict]) -> None:
    """The same titles and categories, and probabilities to the 6 decimals both print (a title's
    last decimal may move with the batch it is summed in)."""
    assert [(p["title"], p["categories"]) for p in got] == [(p["title"], p["categories"]) for p in expected]
    for p, e in zip(got, expected):
        assert p["probabilities"] == pytest.approx(e["probabilities"], abs=2e-6)


def test_answers_equal_titlecat_predict(server, trained, capsys):
    answer = server.predict(TITLES, k=3)
    assert answer["model"] == "mlp"
    assert answer["predictions"] == cli_predictions(trained.bundle, TITLES, 3, capsys)  # the same batch: exactly
    # one title at a time, as many a client will send them: the same answers
    assert_same_predictions([server.predict([t])["predictions"][0] for t in TITLES[:4]],
                            cli_predictions(trained.bundle, TITLES[:4], 1, capsys))


def test_health_model_docs_and_page(server, trained):
    assert server.request("GET", "/health") == (200, {"status": "ok", "model": "mlp", "titlecat_version": __version__})
    status, info = server.request("GET", "/model")
    assert status == 200
    assert info["model"] == "mlp" and info["source"] == str(trained.bundle)
    assert info["categories"] == list(trained.clf.labels.classes_) and info["n_categories"] == 4
    assert info["scores"]["test_balanced_accuracy"] == pytest.approx(trained.clf.info.test_balanced_accuracy)
    assert info["trained_at"] and info["saved_at"]  # ISO 8601 times
    assert info["max_batch"] == MAX_BATCH and info["max_body_bytes"] == MAX_BODY
    assert info["parameters"] == trained.clf.num_parameters() and info["settings"]["name"] == "mlp"
    # OpenAPI, from the pydantic request and response models, with this server's limits
    status, spec = server.request("GET", "/openapi.json")
    assert status == 200 and {"/predict", "/health", "/model"} <= set(spec["paths"])
    request = spec["components"]["schemas"]["PredictRequest"]["properties"]
    assert request["titles"]["maxItems"] == MAX_BATCH and request["k"]["maximum"] == 4
    assert server.request("GET", "/docs")[0] == 200
    status, page = server.request("GET", "/")
    assert status == 200 and "<title>titlecat</title>" in page


def _chunked(body: bytes, chunk: int = 4096) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + chunk]), body[i:i + chunk])
                    for i in range(0, len(body), chunk)) + b"0\r\n\r\n"


JSON = {"Content-Type": "application/json"}
BAD_REQUESTS = [  # (name, body, headers, status, words of the detail)
    ("malformed JSON", b'{"titles": ["Casco moto"', JSON, 400, "malformed JSON"),
    ("not JSON at all", b"Casco moto", JSON, 400, "malformed JSON"),
    ("no body", b"", JSON, 422, "missing"),
    ("a list, not an object", b'["Casco moto"]', JSON, 422, "expected a JSON object"),
    ("not sent as JSON", b'{"titles": ["Casco moto"]}', {"Content-Type": "text/plain"}, 422,
     "Content-Type: application/json"),
    ("no titles field", {"k": 2}, None, 422, "titles: missing"),
    ("an empty list", {"titles": []}, None, 422, "titles: empty list"),
    ("titles as one string", {"titles": "Casco moto"}, None, 422, "titles: expected a list"),
    ("a title that is a number", {"titles": ["Casco moto", 42]}, None, 422, "titles[1]: expected a string, got a number"),
    ("a title that is null", {"titles": [None]}, None, 422, "titles[0]: expected a string, got null"),
    ("k of 0", {"titles": ["Casco moto"], "k": 0}, None, 422, "k: 0 is out of range; 1 <= k <= 4"),
    ("k over the categories", {"titles": ["Casco moto"], "k": 5}, None, 422, "k: 5 is out of range"),
    ("k as a string", {"titles": ["Casco moto"], "k": "3"}, None, 422, "k: expected an integer"),
    ("an unknown field", {"titles": ["Casco moto"], "top_k": 3}, None, 422, "top_k: unknown field"),
    ("more titles than --max-batch", {"titles": ["Casco moto"] * (MAX_BATCH + 1)}, None, 413,
     f"at most {MAX_BATCH} per request"),
    ("a body over the size limit", {"titles": ["Casco moto " * 500] * 5}, None, 413,
     f"over the limit of {MAX_BODY:,} bytes"),
    ("a chunked body over the size limit", _chunked(json.dumps({"titles": ["Casco moto " * 500] * 5}).encode()),
     {**JSON, "Transfer-Encoding": "chunked"}, 413, f"over the limit of {MAX_BODY:,} bytes"),
    ("bytes that are not UTF-8", b'{"titles": ["Casco \xff moto"]}', JSON, 400, "parsing the body"),
]


@pytest.mark.parametrize("name, body, headers, status, words", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_a_bad_request_gets_a_4xx_naming_it_and_the_server_goes_on(server, name, body, headers, status, words):
    got, answer = server.request("POST", "/predict", body, headers)
    assert got == status, answer
    assert isinstance(answer, dict) and words in answer["detail"], answer
    assert server.predict(["Casco Moto Integral Negro"])["predictions"][0]["categories"] == ["MOTORCYCLE_HELMETS"]


def test_8_clients_200_requests_each_all_answered_right(server, trained):
    """Concurrent clients on keep-alive connections: every answer is the right one, none fails."""
    titles = [r["title"] for r in tiny_test_rows()]
    labels, _ = trained.clf.predict(titles, k=2)
    expected = {t: list(lab) for t, lab in zip(titles, labels)}
    errors, answered = [], [0] * 8

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        try:
            for j in range(200):
                title = titles[(i + j) % len(titles)]
                status, answer = server.request("POST", "/predict", {"titles": [title], "k": 2}, conn=conn)
                if status != 200 or answer["predictions"][0]["categories"] != expected[title]:
                    errors.append((i, j, status, answer))
                    return
                answered[i] += 1
        except Exception as e:  # noqa: BLE001  (a failed request is the test's finding)
            errors.append((i, repr(e)))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "clients still waiting after 300 s"
    assert errors == [] and answered == [200] * 8
    assert time.monotonic() - t0 < 300


@pytest.fixture(scope="module")
def kinds(trained, tmp_path_factory):
    """Bundles of the other kinds: the TF-IDF baseline, an ensemble (the tiny MLP and the baseline)
    and the tiny MLP quantized (its tables decoded at load: served like any network)."""
    import titlecat

    d = tmp_path_factory.mktemp("kinds")
    tfidf = titlecat.train(trained.train, trained.test, model="tfidf", tracking=False, output=d / "tfidf",
                           cache_dir=d / "cache")
    titlecat.Ensemble([trained.clf, tfidf]).save(d / "ensemble")
    trained.clf.quantize("int4").save(d / "quantized")
    return d


@pytest.mark.parametrize("kind", ["tfidf", "ensemble", "quantized"])
def test_every_kind_of_model_is_served_and_sigterm_stops_it_cleanly(kind, kinds, tmp_path, capsys):
    srv = ServeProcess(kinds / kind, tmp_path / "serve.log")
    try:
        srv.wait_healthy()
        assert srv.request("GET", "/model")[1]["model"] == {"quantized": "mlp"}.get(kind, kind)
        assert srv.predict(TITLES, k=2)["predictions"] == cli_predictions(kinds / kind, TITLES, 2, capsys)
        assert srv.terminate() == 0
    finally:
        srv.kill()
    log = srv.output()
    assert "Shutting down" in log and "Finished server process" in log and "Traceback" not in log


def test_two_workers_answer_and_sigterm_stops_every_process(trained, tmp_path):
    srv = ServeProcess(trained.bundle, tmp_path / "serve.log", "--workers", "2")
    try:
        srv.wait_healthy()
        answers = {srv.predict(["Casco moto"])["predictions"][0]["categories"][0] for _ in range(20)}
        assert answers == {"MOTORCYCLE_HELMETS"}
        assert srv.terminate() == 0
        deadline = time.monotonic() + 30  # the workers (and multiprocessing's resource tracker) follow the parent
        while _group(srv.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _group(srv.proc.pid) == []
    finally:
        srv.kill()
    assert "Stopping parent process" in srv.output()


def _group(pgid: int) -> list[str]:
    """The processes left in a process group: ``pid command`` lines."""
    out = subprocess.run(["ps", "-o", "pid=,args=", "-g", str(pgid)], capture_output=True, text=True).stdout
    return out.splitlines()


def test_a_port_in_use_or_a_bad_bundle_is_one_line_exit_2(server, trained, tmp_path, capsys):
    assert main(["serve", "--model", str(trained.bundle), "--port", str(server.port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{server.port}" in err and "choose another --port" in err
    assert main(["serve", "--model", str(tmp_path), "--port", str(_free_port())]) == 2
    assert "bundle.json is missing; not a titlecat model bundle" in capsys.readouterr().err
    assert main(["serve", "--model", str(trained.bundle), "--workers", "0"]) == 2
    assert "must be positive" in capsys.readouterr().err
