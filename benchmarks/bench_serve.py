"""Benchmark: ``titlecat serve`` latency and throughput over HTTP, against fastText's in-process
``predict`` measured in the same run.

    python benchmarks/bench_serve.py --mlp runs/mlp --ensemble runs/ensemble \\
        [--data ../shared/data/meli2019-es] [--requests 2000] [--screenshot docs/serve_page.png]

For each bundle (the default MLP, an ensemble) a server is started as ``titlecat serve --model
DIR --no-access-log`` (one worker, the defaults otherwise) on 127.0.0.1, and a client in this
process, on one keep-alive connection, sends:

* ``--requests`` requests of one title each (the test file's titles in order, ``k=3``), one at
  a time, after 50 to warm up: p50, p90, p99 and mean latency, measured by the client from
  sending the request to having parsed the JSON answer;
* the 9,480 test titles in one request, and in requests of 1,000 titles: titles/s, beside
  ``Classifier.predict`` in this process on the same batches (one call; calls of 1,000), and
  their ratios; best of 5 rounds, each round taking the four in turn.

Beside them, in the same run: the same titles one at a time in process, titlecat's
``Classifier.predict(title, k=3)`` (on one torch thread, as the server runs it) and fastText's ``model.predict(title, k=3)`` (fastText trained
here on the training file with the data README's settings: epoch 25, lr 0.5, wordNgrams 2,
minn 3, maxn 5, dim 100; its test balanced accuracy is printed as a check).
Goals (issue 20) on 2 cores: the default MLP p50 <= 5 ms and p99 <= 20 ms for one title over
HTTP; batched serving >= 50% of the in-process batch throughput (checked for both batch sizes).  The machine is shared: run it
under ``flock /tmp/titlecat-cpu.lock``; the load average at the start and end is recorded.
Writes benchmarks/results/bench_serve.json and bench_serve.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _measure import RESULTS  # benchmarks/ is on sys.path when run as a script

GOALS = {"p50_ms": 5.0, "p99_ms": 20.0, "batch_ratio": 0.5}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``titlecat serve`` in a subprocess, and one keep-alive HTTP connection to it."""

    def __init__(self, bundle: Path, log: Path):
        self.port = free_port()
        self.log = open(log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "titlecat.cli", "serve", "--model", str(bundle),
                                      "--port", str(self.port), "--no-access-log"],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"titlecat serve exited; see {log}")
            try:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                if self.get("/health")["status"] == "ok":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"titlecat serve not up after 300 s; see {log}")
            time.sleep(0.5)

    def get(self, path: str) -> dict:
        self.conn.request("GET", path)
        return json.loads(self.conn.getresponse().read())

    def predict(self, titles: list[str], k: int = 3) -> dict:
        body = json.dumps({"titles": titles, "k": k})
        try:
            self.conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
            r = self.conn.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # uvicorn closes a connection idle for 5 s (while this process predicts in process): reopen it
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            self.conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
            r = self.conn.getresponse()
        answer = json.loads(r.read())
        if r.status != 200:
            raise SystemExit(f"HTTP {r.status}: {answer}")
        return answer

    def stop(self) -> int:
        self.conn.close()
        os.killpg(self.proc.pid, signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.log.close()
        return code


def rss_mb(pid: int) -> float:
    """A process's resident memory (what one server worker holds), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {"n": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


def one_at_a_time(predict, titles: list[str], n: int, warmup: int = 50) -> dict:
    """Latency percentiles of ``predict(title)`` on ``n`` titles, one call each, after ``warmup`` calls."""
    for t in titles[:warmup]:
        predict(t)
    times = []
    for i in range(n):
        title = titles[i % len(titles)]
        t0 = time.perf_counter()
        predict(title)
        times.append(time.perf_counter() - t0)
    return percentiles(times)


def batch_rounds(clf, srv: Server, titles: list[str], rounds: int = 5) -> dict:
    """Titles/s of the whole list, in one call and in calls of 1,000 titles: ``Classifier.predict``
    in process, and over HTTP (``k=1`` each).  Best of ``rounds``, the four taken in turn in every
    round, so that a neighbour's load falls on all of them alike (measured one after the other, the
    in-process figure once came out below the served one).  Both batch sizes, because a batch's
    size changes the model's own speed: the default MLP computes a word's n-gram vectors once per
    batch, and 1,000 titles share much less of that work than 9,480."""
    clf.predict(titles[:1000])  # warm-up: first-call allocations and thread start-up, on both sides
    srv.predict(titles[:1000])
    n = len(titles)
    chunks = [titles[i:i + 1000] for i in range(0, n, 1000)]
    runs = {"in_process_all": lambda: clf.predict(titles),
            "in_process_1000": lambda: [clf.predict(c) for c in chunks],
            "http_all": lambda: srv.predict(titles, k=1),
            "http_1000": lambda: [srv.predict(c, k=1) for c in chunks]}
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - t0)
    return {k: n / v for k, v in best.items()}


def bench_model(name: str, bundle: Path, titles: list[str], n_requests: int, tmp: Path) -> dict:
    import torch

    import titlecat

    print(f"== {name}: {bundle}", flush=True)
    clf = titlecat.load(bundle)
    out: dict = {"bundle": str(bundle), "model": clf.config.model.name, "parameters": clf.num_parameters(),
                 "test_balanced_accuracy": clf.info.test_balanced_accuracy}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the server runs a request of a few titles (titlecat.serve)
    out["in_process_one_title"] = one_at_a_time(lambda t: clf.predict(t, k=3), titles, n_requests)
    torch.set_num_threads(threads)
    srv = Server(bundle, tmp / f"serve-{name}.log")
    try:
        out["server_rss_mb_loaded"] = rss_mb(srv.proc.pid)
        out["http_one_title"] = one_at_a_time(lambda t: srv.predict([t]), titles, n_requests)
        rates = batch_rounds(clf, srv, titles)
        out["in_process_batch_titles_per_s"] = rates["in_process_all"]  # one call, as everywhere else here
        out["in_process_batch_1000_titles_per_s"] = rates["in_process_1000"]
        out["http_batch_titles_per_s"] = rates["http_all"]
        out["http_batch_1000_titles_per_s"] = rates["http_1000"]
        out["batch_ratio"] = rates["http_all"] / rates["in_process_all"]  # the same batches on both sides
        out["batch_ratio_1000"] = rates["http_1000"] / rates["in_process_1000"]
        out["batch_ratio_1000_vs_one_call"] = rates["http_1000"] / rates["in_process_all"]
        out["server_rss_mb_after"] = rss_mb(srv.proc.pid)
    finally:
        out["sigterm_exit_code"] = srv.stop()
    print(json.dumps(out, indent=1), flush=True)
    return out


def bench_fasttext(train_path: Path, test_path: Path, titles: list[str], n_requests: int, tmp: Path,
                   epochs: int) -> dict:
    import fasttext
    from sklearn.metrics import balanced_accuracy_score

    from titlecat.data import read_records

    def line(title: str) -> str:
        return " ".join(title.lower().split())

    train_txt = tmp / "fasttext.train.txt"
    with open(train_txt, "w", encoding="utf-8") as f:
        for r in read_records(train_path):
            f.write(f"__label__{r.category} {line(r.title)}\n")
    settings = dict(epoch=epochs, lr=0.5, wordNgrams=2, minn=3, maxn=5, dim=100, verbose=0)
    print(f"== fastText: training ({settings})", flush=True)
    t0 = time.perf_counter()
    model = fasttext.train_supervised(str(train_txt), **settings)
    out: dict = {"settings": settings, "train_seconds": time.perf_counter() - t0}
    test = list(read_records(test_path))
    predicted = [labels[0].removeprefix("__label__") for labels in model.predict([line(r.title) for r in test])[0]]
    out["test_balanced_accuracy"] = balanced_accuracy_score([r.category for r in test], predicted)
    out["in_process_one_title"] = one_at_a_time(lambda t: model.predict(line(t), k=3), titles, n_requests)
    print(json.dumps(out, indent=1), flush=True)
    return out


def screenshot(bundle: Path, titles: list[str], path: Path, tmp: Path) -> None:
    """The page with three titles answered: docs/serve_page.png."""
    import shutil

    from playwright.sync_api import sync_playwright

    srv = Server(bundle, tmp / "serve-page.log")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 900, "height": 760})
            page.goto(f"http://127.0.0.1:{srv.port}/")
            page.wait_for_function("document.getElementById('model').textContent.includes('categories')")
            page.fill("#titles", "\n".join(titles))
            page.click("#go")
            page.wait_for_selector(".prediction")
            path.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(path), full_page=True)
            browser.close()
    finally:
        srv.stop()
    print(f"page: {path}")


def markdown(res: dict) -> str:
    rows = ["| | default MLP | ensemble | fastText (in process) |", "|---|---|---|---|"]
    m, e, f = res["mlp"], res.get("ensemble"), res["fasttext"]

    def cell(d, key, sub=None, fmt="{:.2f}"):
        v = None if d is None or key not in d else d[key] if sub is None else d[key][sub]
        return "-" if v is None else fmt.format(v)

    for label, key in (("p50", "p50_ms"), ("p90", "p90_ms"), ("p99", "p99_ms")):
        rows.append(f"| one title over HTTP, {label} ms | {cell(m, 'http_one_title', key)} | "
                    f"{cell(e, 'http_one_title', key)} | - |")
    for label, key in (("p50", "p50_ms"), ("p99", "p99_ms")):
        rows.append(f"| one title in process, {label} ms | {cell(m, 'in_process_one_title', key)} | "
                    f"{cell(e, 'in_process_one_title', key)} | {cell(f, 'in_process_one_title', key)} |")
    n = res["n_test_titles"]
    for label, key in ((f"titles/s over HTTP, one request of {n:,}", "http_batch_titles_per_s"),
                       (f"titles/s in process, one call of {n:,}", "in_process_batch_titles_per_s"),
                       (f"over HTTP / in process, {n:,} at a time", "batch_ratio"),
                       ("titles/s over HTTP, requests of 1,000", "http_batch_1000_titles_per_s"),
                       ("titles/s in process, calls of 1,000", "in_process_batch_1000_titles_per_s"),
                       ("over HTTP / in process, 1,000 at a time", "batch_ratio_1000")):
        fmt = "{:.0%}" if "ratio" in key else "{:,.0f}"
        rows.append(f"| {label} | {cell(m, key, fmt=fmt)} | {cell(e, key, fmt=fmt)} | - |")
    rows.append(f"| server memory (RSS), MB | {cell(m, 'server_rss_mb_after', fmt='{:,.0f}')} | "
                f"{cell(e, 'server_rss_mb_after', fmt='{:,.0f}')} | - |")
    rows.append(f"| test balanced accuracy | {cell(m, 'test_balanced_accuracy', fmt='{:.4f}')} | "
                f"{cell(e, 'test_balanced_accuracy', fmt='{:.4f}')} | {cell(f, 'test_balanced_accuracy', fmt='{:.4f}')} |")
    goals = res["goals_met"]
    return "\n".join([
        f"`python benchmarks/bench_serve.py` on {res['machine']}, {res['n_requests']:,} one-title requests per "
        f"model (k=3) on one keep-alive connection; load average {res['load_start'][0]:.1f} at the start, "
        f"{res['load_end'][0]:.1f} at the end; ensemble: {res.get('ensemble_note', '-')}.", "", *rows, "",
        "Goals (default MLP, one title over HTTP): p50 <= 5 ms "
        f"{'met' if goals['p50_ms'] else 'NOT met'}, p99 <= 20 ms {'met' if goals['p99_ms'] else 'NOT met'}; "
        f"batched >= 50% of in process, the same batches on both sides, {'met' if goals['batch_ratio'] else 'NOT met'} "
        f"(requests of 1,000 against one in-process call of {n:,}: "
        f"{cell(m, 'batch_ratio_1000_vs_one_call', fmt='{:.0%}')}).", ""])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mlp", type=Path, required=True, help="the default MLP's bundle (titlecat train --model mlp)")
    ap.add_argument("--ensemble", type=Path, help="an ensemble's bundle")
    ap.add_argument("--ensemble-note", default="the four networks (mlp, cnn, rnn, transformer), shipped configs",
                    help="what the ensemble is, for the table")
    ap.add_argument("--data", type=Path, default=Path("../shared/data/meli2019-es"))
    ap.add_argument("--requests", type=int, default=2000, help="one-title requests per model (default 2,000)")
    ap.add_argument("--fasttext-epochs", type=int, default=25)
    ap.add_argument("--screenshot", type=Path, help="also write a screenshot of the page here")
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()

    from titlecat.data import read_records

    train_path, test_path = args.data / "spanish.train.jsonl.gz", args.data / "spanish.test.jsonl.gz"
    titles = [r.title for r in read_records(test_path)]
    res: dict = {"machine": f"{os.cpu_count()} cores", "load_start": os.getloadavg(), "n_requests": args.requests,
                 "n_test_titles": len(titles)}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="titlecat-bench-serve-") as tmp:
        tmp = Path(tmp)
        res["mlp"] = bench_model("mlp", args.mlp, titles, args.requests, tmp)
        if args.ensemble is not None:
            res["ensemble"] = bench_model("ensemble", args.ensemble, titles, args.requests, tmp)
            res["ensemble_note"] = args.ensemble_note
        res["fasttext"] = bench_fasttext(train_path, test_path, titles, args.requests, tmp, args.fasttext_epochs)
        if args.screenshot is not None:
            screenshot(args.mlp, titles[:3], args.screenshot, tmp)
    res["load_end"] = os.getloadavg()
    res["minutes"] = (time.perf_counter() - t_start) / 60
    m = res["mlp"]
    res["goals_met"] = {"p50_ms": m["http_one_title"]["p50_ms"] <= GOALS["p50_ms"],
                        "p99_ms": m["http_one_title"]["p99_ms"] <= GOALS["p99_ms"],
                        "batch_ratio": min(m["batch_ratio"], m["batch_ratio_1000"]) >= GOALS["batch_ratio"]}
    res["http_p50_vs_fasttext_in_process_p50"] = (m["http_one_title"]["p50_ms"]
                                                  / res["fasttext"]["in_process_one_title"]["p50_ms"])
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "bench_serve.json").write_text(json.dumps(res, indent=2) + "\n")
    text = markdown(res)
    (args.output / "bench_serve.md").write_text(text)
    print("\n" + text)
    return 0 if all(res["goals_met"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
