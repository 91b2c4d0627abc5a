"""Everything MLflow: the only module that imports it.

Training talks to a small ``RunLogger`` (params once, metrics with a step,
artifacts, tags).  ``MlflowLogger`` writes through ``MlflowClient`` with an
explicit run id (no global "active run"), and never lets a tracking failure kill
a training: params, metrics, tags and artifacts that cannot be sent (a server
that went away, a SQLite file locked by another training) are kept in a buffer
and sent again later and at ``close``; what could not be logged in the end is
reported by name, and the model bundle is on local disk regardless.

MLflow's own HTTP client retries a failed request 7 times with exponential
backoff and waits up to 120 s for an answer, so one call to a dead server takes
minutes.  Our buffer already retries, so ``MlflowLogger`` makes MLflow's
requests fail fast: ``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0`` and
``MLFLOW_HTTP_REQUEST_TIMEOUT=10`` while it calls MLflow, unless the user set
those variables.  A dead server then costs seconds, not minutes.

Several trainings may log to one SQLite ``mlflow.db``: opening the store (which runs
MLflow's schema migrations on a new file) happens under a file lock, because two
processes migrating one new file at once break it for good.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
MAX_PARAM_VALUE = 6000  # MLflow's limit on a param value (characters)
MAX_PARAMS_PER_BATCH = 100  # MLflow's limit on params (and on tags) in one log_batch
MAX_METRICS_PER_BATCH = 1000  # MLflow's limit on metrics in one log_batch
QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


class TrackingError(RuntimeError):
    """MLflow could not be reached when the run had to be created (nothing was trained yet)."""


class RunLogger(Protocol):
    run_id: str | None

    def log_params(self, params: dict[str, object]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def close(self, status: str = "FINISHED") -> None: ...
    def register(self, name: str, aliases: list[str] | tuple[str, ...] = ()) -> str: ...


class NullLogger:
    """Logs nothing (``--no-tracking``, library use without MLflow)."""

    run_id = None

    def log_params(self, params: dict[str, object]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: dict[str, str]) -> None:
        pass

    def close(self, status: str = "FINISHED") -> None:
        pass

    def register(self, name: str, aliases: list[str] | tuple[str, ...] = ()) -> str:
        raise TrackingError(f"cannot register {name!r}: this run was not tracked, so it has no MLflow model")


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def _absolute(uri: str) -> str:
    """``sqlite:///mlflow.db`` -> ``sqlite:////abs/dir/mlflow.db``: the same file from any working
    directory.  A SQLite store that cannot be a database file is refused at once: MLflow would
    retry opening it for almost two minutes before failing."""
    if not uri.startswith("sqlite:") or uri == "sqlite:///:memory:":
        return uri
    raw = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else ""
    if not raw:
        raise TrackingError(f"MLFLOW_TRACKING_URI={uri} names no database file; give one, e.g. "
                            "sqlite:///mlflow.db (a file in the working directory)")
    path = Path(raw).resolve()
    if path.is_dir():
        raise TrackingError(f"MLFLOW_TRACKING_URI={uri}: {path} is a directory, not a SQLite file; "
                            f"e.g. sqlite:///{path / 'mlflow.db'}")
    if not path.exists() and not path.parent.is_dir():
        raise TrackingError(f"MLFLOW_TRACKING_URI={uri}: the folder {path.parent} does not exist; create it "
                            "or choose another store")
    return "sqlite:///" + str(path)


@contextlib.contextmanager
def _quick_http():
    """MLflow's HTTP requests without its own retries and with a short timeout (see the module doc)."""
    saved = {k: os.environ.get(k) for k in QUICK_HTTP}
    for k, v in QUICK_HTTP.items():
        if saved[k] is None:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)


@contextlib.contextmanager
def sqlite_setup_lock(uri: str):
    """Hold an exclusive file lock while MLflow opens a SQLite store.

    Opening a new ``mlflow.db`` runs MLflow's schema migrations; two processes doing it
    at the same time break the file for good ("duplicate column name: step",
    "table _alembic_tmp_tags already exists").  The lock makes the second wait.
    """
    path = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else None
    if path is None or path == ":memory:":
        yield
        return
    lock_path = Path(path).with_name(Path(path).name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(lock_path):
        yield


def _default_wait(uri: str) -> float:
    """How long to retry a start or a registration: a SQLite file may be busy for a while; a
    server that refuses is likely down."""
    return 15.0 if uri.startswith("sqlite:") else 3.0


def _retried(uri: str, wait: float, attempt, failure, permanent=None):
    """``attempt()`` under the quick-HTTP and SQLite-setup guards, retried with a doubling delay
    (0.5 s, up to 4 s) for ``wait`` seconds; then, or at once for an error ``permanent`` says
    cannot pass, ``TrackingError(failure(reason))``."""
    deadline, delay = time.monotonic() + wait, 0.5
    while True:
        try:
            with _quick_http(), sqlite_setup_lock(uri):
                return attempt()
        except Exception as e:  # noqa: BLE001  (any MLflow or connection failure)
            if time.monotonic() + delay > deadline or (permanent is not None and permanent(e)):
                raise TrackingError(failure(_reason(e))) from None
            time.sleep(delay)
            delay = min(delay * 2, 4.0)


@contextlib.contextmanager
def file_lock(lock_path: str | Path | None):
    """An exclusive ``flock`` on ``lock_path`` for the block, which waits for any other holder
    (the file is created if missing); nothing without a path, or where there is no ``fcntl``
    (Windows: there two trainings must not create one mlflow.db at once)."""
    try:
        import fcntl
    except ImportError:
        fcntl = None
    if lock_path is None or fcntl is None:
        yield
        return
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class MlflowLogger:
    """One MLflow run.  ``MLFLOW_TRACKING_URI`` is honoured; default ``sqlite:///mlflow.db``.

    ``run_id`` given: continue that run (resuming a training); otherwise a new run
    is created in ``experiment`` (created if missing), nested under ``parent_run_id``
    when given (MLflow's ``mlflow.parentRunId`` tag: the trials of a tuning study).
    Creating or reopening the run is retried for ``start_wait`` seconds (default 15
    for SQLite, whose file may be busy with another training, 3 for a server), then
    ``TrackingError`` says what to do.  After a failed write, further writes are only
    buffered for a while (``backoff`` seconds, doubling up to a minute), so a dead
    server does not slow every epoch down.
    """

    def __init__(self, experiment: str = "titlecat", run_name: str | None = None, run_id: str | None = None,
                 uri: str | None = None, start_wait: float | None = None, backoff: float = 2.0,
                 parent_run_id: str | None = None):
        self.uri = _absolute(uri or tracking_uri())  # a resumed run may start from another directory
        self.experiment = experiment
        self._pending_metrics: list = []
        self._pending_params: dict[str, str] = {}
        self._run_params: dict[str, str] = {}  # params a reopened run already has (MLflow never changes one)
        self._pending_tags: dict[str, str] = {}
        self._pending_artifacts: list[tuple[str, str | None]] = []
        self._spool: Path | None = None  # copies of artifacts waiting to be sent (their originals may go)
        self.sent = {"params": 0, "metrics": 0, "tags": 0, "artifacts": 0}
        self.failures = 0
        self._down_since: float | None = None  # a write failed and none has succeeded since
        self._backoff0 = backoff
        self._backoff = backoff
        self._retry_at = 0.0
        if start_wait is None:
            start_wait = _default_wait(self.uri)
        self.run_id = self._start(experiment, run_name, run_id, start_wait, parent_run_id)

    def _start(self, experiment: str, run_name: str | None, run_id: str | None, wait: float,
               parent_run_id: str | None = None) -> str:
        from mlflow.tracking import MlflowClient

        def attempt() -> str:
            self.client = MlflowClient(tracking_uri=self.uri)
            if run_id is not None:
                self.client.update_run(run_id, status="RUNNING")
                run = self.client.get_run(run_id)
                self.experiment = self.client.get_experiment(run.info.experiment_id).name
                self._run_params = dict(run.data.params)
                return run_id
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp is not None else self._create_experiment(experiment)
            tags = {TAG_PARENT: parent_run_id} if parent_run_id else None
            return self.client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id

        what = f"reopen MLflow run {run_id}" if run_id else f"create an MLflow run in {experiment!r}"
        return _retried(self.uri, wait, attempt, lambda reason: (
            f"could not {what} at {self.uri} ({reason}); start the tracking server or fix MLFLOW_TRACKING_URI, "
            "or train with --no-tracking"))

    def _create_experiment(self, name: str) -> str:
        try:
            return self.client.create_experiment(name)
        except Exception:  # another process created it between our get and create
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    # ---- buffered writes ---------------------------------------------------------

    def log_params(self, params: dict[str, object]) -> None:
        """Params of a reopened run keep their first value: a resumed training's files may be
        named differently (absolute paths), and MLflow refuses to change a param."""
        for k, v in params.items():
            if str(k)[:250] not in self._run_params:
                self._pending_params[str(k)[:250]] = str(v)[:MAX_PARAM_VALUE]
        self._flush()

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending_metrics += [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        self._flush()

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._pending_artifacts.append((str(path), artifact_path))
        if not self._flush() and any(p == str(path) for p, _ in self._pending_artifacts):
            self._keep_copy(str(path))

    def set_tags(self, tags: dict[str, str]) -> None:
        self._pending_tags.update({str(k): str(v) for k, v in tags.items()})
        self._flush()

    def _keep_copy(self, path: str) -> None:
        """Copy a waiting artifact: the caller may delete its file (a temporary directory) before we retry."""
        if self._spool is None:
            self._spool = Path(tempfile.mkdtemp(prefix="titlecat-mlflow-"))
        src = Path(path)
        dest = self._spool / str(len(list(self._spool.iterdir()))) / src.name
        dest.parent.mkdir()
        shutil.copytree(src, dest) if src.is_dir() else shutil.copy2(src, dest)
        self._pending_artifacts = [(str(dest) if p == path else p, d) for p, d in self._pending_artifacts]

    def _try(self, fn) -> bool:
        try:
            with _quick_http():
                fn()
            return True
        except Exception as e:  # noqa: BLE001  (any tracking failure must not stop training)
            self.failures += 1
            if self._down_since is None:
                self._down_since = time.monotonic()
                print(f"titlecat: warning: MLflow at {self.uri} failed ({_reason(e)}); "
                      "training goes on, logs are kept and sent again later", file=sys.stderr)
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, 60.0)
            return False

    def _flush(self, force: bool = False) -> bool:
        """Send what is buffered, oldest first; False if something is left.  While backing off after
        a failure, only buffers (unless ``force``)."""
        from mlflow.entities import Param, RunTag

        if not force and self._down_since is not None and time.monotonic() < self._retry_at:
            return False
        before = dict(self.sent)
        while self._pending_params:
            chunk = list(self._pending_params.items())[:MAX_PARAMS_PER_BATCH]
            if not self._try(lambda c=chunk: self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in c])):
                return False
            for k, _ in chunk:
                self._pending_params.pop(k, None)
            self.sent["params"] += len(chunk)
        while self._pending_tags:
            chunk = list(self._pending_tags.items())[:MAX_PARAMS_PER_BATCH]
            if not self._try(lambda c=chunk: self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in c])):
                return False
            for k, _ in chunk:
                self._pending_tags.pop(k, None)
            self.sent["tags"] += len(chunk)
        while self._pending_metrics:
            chunk = self._pending_metrics[:MAX_METRICS_PER_BATCH]
            if not self._try(lambda c=chunk: self.client.log_batch(self.run_id, metrics=c)):
                return False
            del self._pending_metrics[: len(chunk)]
            self.sent["metrics"] += len(chunk)
        while self._pending_artifacts:
            path, dest = self._pending_artifacts[0]
            log = self.client.log_artifacts if Path(path).is_dir() else self.client.log_artifact
            if not self._try(lambda: log(self.run_id, path, dest)):
                return False
            self._pending_artifacts.pop(0)
            self.sent["artifacts"] += 1
        if self._down_since is not None:
            late = {k: self.sent[k] - before[k] for k in self.sent}
            print(f"titlecat: MLflow at {self.uri} answers again; sent what was kept meanwhile "
                  f"({_pending_counts(late)})", file=sys.stderr)
            self._down_since, self._backoff = None, self._backoff0
        return True

    def pending(self) -> dict[str, int]:
        return {"params": len(self._pending_params), "metrics": len(self._pending_metrics),
                "tags": len(self._pending_tags), "artifacts": len(self._pending_artifacts)}

    def close(self, status: str = "FINISHED", wait: float = 30.0) -> None:
        """Send what is buffered (retrying up to ``wait`` seconds), then end the run.

        If something could not be sent, say exactly what was logged and what was not.
        """
        deadline = time.monotonic() + wait
        delay = 0.5
        while not self._flush(force=True) and time.monotonic() < deadline:
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 5.0)
        if any(self.pending().values()):
            print(f"titlecat: warning: MLflow run {self.run_id} at {self.uri} is incomplete: it has "
                  f"{_pending_counts(self.sent)}; NOT logged, after retrying for {wait:.0f} s: "
                  f"{self._pending_summary()}. "
                  "The model bundle on local disk is complete.", file=sys.stderr)
        self._try(lambda: self.client.set_terminated(self.run_id, status=status))
        if self._spool is not None:
            shutil.rmtree(self._spool, ignore_errors=True)

    def _pending_summary(self) -> str:
        """What is still buffered, by name: metrics with their steps, params, tags, artifacts."""
        parts = []
        steps: dict[str, list[int]] = {}
        for m in self._pending_metrics:
            steps.setdefault(m.key, []).append(m.step)
        if steps:
            parts.append(f"{len(self._pending_metrics)} metric values (" + ", ".join(
                f"{k} at step{'s' if len(v) > 1 else ''} {_ranges(v)}" for k, v in steps.items()) + ")")
        if self._pending_params:
            parts.append(f"{len(self._pending_params)} params ({', '.join(list(self._pending_params)[:8])}"
                         f"{', ...' if len(self._pending_params) > 8 else ''})")
        if self._pending_tags:
            parts.append(f"{len(self._pending_tags)} tags ({', '.join(self._pending_tags)})")
        if self._pending_artifacts:
            parts.append(f"{len(self._pending_artifacts)} artifacts (" + ", ".join(
                (d or Path(p).name) + "/" if Path(p).is_dir() else (d + "/" if d else "") + Path(p).name
                for p, d in self._pending_artifacts) + ")")
        return "; ".join(parts)


    # ---- the Model Registry ---------------------------------------------------------

    def register(self, name: str, aliases: list[str] | tuple[str, ...] = (), artifact_path: str = "model",
                 wait: float | None = None) -> str:
        """Register the run's MLflow model (``artifact_path``) as a new version of ``name`` in the
        Model Registry (created if missing) and point ``aliases`` at it; returns the version.

        Called after ``close``: the model must have been sent.  Retried for ``wait`` seconds (15
        for SQLite, 3 for a server), then ``TrackingError`` says how to register it by hand."""
        if any(self.pending().values()):
            raise TrackingError(f"not registered as {name!r}: MLflow run {self.run_id} at {self.uri} is incomplete "
                                f"({self._pending_summary()})")
        return _retried(self.uri, _default_wait(self.uri) if wait is None else wait,
                        lambda: self._register(name, aliases, artifact_path), lambda reason: (
                            f"could not register the model of MLflow run {self.run_id} as {name!r} at {self.uri} "
                            f"({reason}); the run and its model are logged: register it later with "
                            f"mlflow.register_model('runs:/{self.run_id}/{artifact_path}', {name!r})"),
                        permanent=_permanent)

    def _register(self, name: str, aliases, artifact_path: str) -> str:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name)
        except MlflowException as e:
            if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        source = f"{self.client.get_run(self.run_id).info.artifact_uri.rstrip('/')}/{artifact_path}"
        version = self.client.create_model_version(name, source, run_id=self.run_id).version
        for alias in aliases:
            self.client.set_registered_model_alias(name, alias, version)
        return str(version)


def _permanent(e: BaseException) -> bool:
    """An MLflow refusal that a retry will not change (a bad name or alias), not an outage."""
    return getattr(e, "error_code", None) in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST",
                                              "PERMISSION_DENIED", "UNAUTHENTICATED")


def download_model(uri: str, dest: str | Path) -> Path:
    """Download the MLflow model ``uri`` (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``,
    ``runs:/RUN/model``) into the new directory ``dest``, from ``MLFLOW_TRACKING_URI`` (the
    registry is the tracking store's); ``TrackingError`` names what could not be found."""
    import mlflow.artifacts

    uri_store = _absolute(tracking_uri())
    registry = os.environ.get("MLFLOW_REGISTRY_URI") or uri_store
    Path(dest).mkdir(parents=True, exist_ok=True)
    try:
        with _quick_http(), _no_progress_bar(), sqlite_setup_lock(uri_store):
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest),
                                                            tracking_uri=uri_store, registry_uri=registry))
    except Exception as e:  # noqa: BLE001  (MLflow raises several kinds for a missing model)
        raise TrackingError(f"could not get the MLflow model {uri} from {uri_store} ({_reason(e)}); check the "
                            "name, version or alias, and MLFLOW_TRACKING_URI") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines() or [""])[0][:300]


def _reason(e: BaseException) -> str:
    """Why an MLflow call failed, in a few words (MLflow wraps a refused connection in a paragraph)."""
    text = str(e)
    if "NewConnectionError" in text or "Connection refused" in text or isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if "timed out" in text.lower():
        return f"no answer within {os.environ.get('MLFLOW_HTTP_REQUEST_TIMEOUT', QUICK_HTTP['MLFLOW_HTTP_REQUEST_TIMEOUT'])} s"
    if "database is locked" in text:
        return "the SQLite file is locked by another process"
    return f"{type(e).__name__}: {_first_line(e)}"


def _pending_counts(c: dict[str, int]) -> str:
    return ", ".join(f"{c[k]} {name}" for k, name in (("params", "params"), ("metrics", "metric values"),
                                                        ("tags", "tags"), ("artifacts", "artifacts")))


def _ranges(steps: list[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``"1-3, 5"``."""
    out, run = [], []
    for s in sorted(set(steps)):
        if run and s != run[-1] + 1:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(s)
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(out)


def public_url(url: str) -> str:
    """The storage URL with its password hidden (it goes into logs, MLflow and the config file)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001  (not a URL SQLAlchemy knows: show it as given)
        return url


def make_logger(enabled: bool, experiment: str = "titlecat", run_name: str | None = None,
                run_id: str | None = None, uri: str | None = None, parent_run_id: str | None = None) -> RunLogger:
    return MlflowLogger(experiment, run_name, run_id, uri, parent_run_id=parent_run_id) if enabled else NullLogger()


# tags that tell runs apart (titlecat report reads them); MLflow's own tag nests a trial under its study
TAG_KIND = "titlecat.kind"  # "tune" on a study's parent run, "trial" on each trial; absent on a training
TAG_STUDY = "titlecat.study"  # the Optuna study of a tune run, a trial, or a tuned training
TAG_TRIAL = "titlecat.trial"  # the trial number (trials and tuned trainings)
TAG_TUNED = "titlecat.tuned"  # "true" on a training whose config came from titlecat tune, else "false"
TAG_PARENT = "mlflow.parentRunId"


def tuning_tags(tuned_from) -> dict[str, str]:
    """Tags of a training run: whether its config is a tuned one (``Config.tuned_from``), and from where."""
    if tuned_from is None:
        return {TAG_TUNED: "false"}
    return {TAG_TUNED: "true", TAG_STUDY: tuned_from.study, TAG_TRIAL: str(tuned_from.trial)}


def run_url_hint(logger: RunLogger) -> str:
    if isinstance(logger, MlflowLogger):
        return f"MLflow run {logger.run_id} in experiment {logger.experiment!r} at {logger.uri}"
    return "MLflow tracking off"


# ---- reading runs back (titlecat report) ----------------------------------------------


@dataclass
class RunRecord:
    """One MLflow run as plain data: what ``titlecat report`` works from."""

    run_id: str
    name: str
    status: str  # FINISHED, FAILED, KILLED, RUNNING
    start_time: int  # milliseconds since the epoch
    params: dict[str, str]
    metrics: dict[str, float]  # the last value of each metric
    tags: dict[str, str]


class RunReader:
    """Reads an experiment's runs, metric histories and artifacts (``MLFLOW_TRACKING_URI`` honoured)."""

    def __init__(self, uri: str | None = None):
        from mlflow.tracking import MlflowClient

        self.uri = _absolute(uri or tracking_uri())
        path = self.uri.removeprefix("sqlite:///") if self.uri.startswith("sqlite:///") else None
        if path is not None and not Path(path).is_file():  # MLflow would create an empty store: say so instead
            raise TrackingError(f"no MLflow store at {self.uri} ({Path(path).resolve()} does not exist); "
                                "train first, or set MLFLOW_TRACKING_URI to the store that holds the runs")
        with sqlite_setup_lock(self.uri):
            self.client = MlflowClient(tracking_uri=self.uri)

    def runs(self, experiment: str) -> list[RunRecord]:
        """Every run of ``experiment``, oldest first."""
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            raise TrackingError(f"no MLflow experiment {experiment!r} at {self.uri}; pass --experiment NAME")
        out, token = [], None
        while True:
            page = self.client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
            out += [RunRecord(r.info.run_id, r.info.run_name or "", r.info.status, r.info.start_time or 0,
                              dict(r.data.params), dict(r.data.metrics), dict(r.data.tags)) for r in page]
            token = page.token
            if not token:
                return sorted(out, key=lambda r: r.start_time)

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """``[(step, value), ...]`` of one metric, by step."""
        return sorted((m.step, m.value) for m in self.client.get_metric_history(run_id, key))

    def artifact(self, run_id: str, path: str, dest: str | Path) -> Path | None:
        """Download one artifact of the run into ``dest``; None if the run has no such artifact."""
        try:
            with _no_progress_bar():
                Path(dest).mkdir(parents=True, exist_ok=True)
                return Path(self.client.download_artifacts(run_id, path, str(dest)))
        except Exception:  # noqa: BLE001  (MLflow raises various errors for a missing artifact)
            return None


@contextlib.contextmanager
def _no_progress_bar():
    """MLflow's downloads without their progress bar (one per small file, on stderr)."""
    quiet = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        yield
    finally:
        if quiet is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = quiet
