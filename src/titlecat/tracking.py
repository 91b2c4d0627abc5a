"""Everything MLflow: the only module that imports it.

Training talks to a small ``RunLogger`` (params once, metrics with a step,
artifacts, tags).  ``MlflowLogger`` writes through ``MlflowClient`` with an
explicit run id (no global "active run"), and never lets a tracking failure kill
a training: metrics and params that cannot be sent are kept in a buffer and sent
again at the next call and at ``close``; what could not be logged in the end is
reported, and the model bundle is on local disk regardless.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Protocol

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
MAX_PARAM_VALUE = 6000  # MLflow's limit on a param value (characters)
MAX_PARAMS_PER_BATCH = 100  # MLflow's limit on params in one log_batch


class RunLogger(Protocol):
    run_id: str | None

    def log_params(self, params: dict[str, object]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def close(self, status: str = "FINISHED") -> None: ...


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


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


class MlflowLogger:
    """One MLflow run.  ``MLFLOW_TRACKING_URI`` is honoured; default ``sqlite:///mlflow.db``.

    ``run_id`` given: continue that run (resuming a training); otherwise a new run
    is created in ``experiment`` (created if missing).
    """

    def __init__(self, experiment: str = "titlecat", run_name: str | None = None, run_id: str | None = None,
                 uri: str | None = None, retries: int = 3):
        from mlflow.tracking import MlflowClient

        self.uri = uri or tracking_uri()
        self.client = MlflowClient(tracking_uri=self.uri)
        self.retries = retries
        self._pending_metrics: list = []
        self._pending_params: dict[str, str] = {}
        self._pending_artifacts: list[tuple[str, str | None]] = []
        self._warned = False
        self.failures = 0
        if run_id is None:
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp is not None else self._create_experiment(experiment)
            run = self.client.create_run(exp_id, run_name=run_name)
            self.run_id = run.info.run_id
        else:
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
        self.experiment = experiment

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
        for k, v in params.items():
            self._pending_params[str(k)[:250]] = str(v)[:MAX_PARAM_VALUE]
        self._flush()

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending_metrics += [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        self._flush()

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._pending_artifacts.append((str(path), artifact_path))
        self._flush()

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self._try(lambda k=k, v=v: self.client.set_tag(self.run_id, k, str(v)))

    def _try(self, fn) -> bool:
        try:
            fn()
            return True
        except Exception as e:  # noqa: BLE001  (any tracking failure must not stop training)
            self.failures += 1
            if not self._warned:
                print(f"titlecat: warning: MLflow at {self.uri} is not answering ({type(e).__name__}: {e}); "
                      "training goes on, logs are kept and sent again later", file=sys.stderr)
                self._warned = True
            return False

    def _flush(self) -> bool:
        from mlflow.entities import Param

        ok = True
        if self._pending_params:
            items = list(self._pending_params.items())
            for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
                chunk = [Param(k, v) for k, v in items[i : i + MAX_PARAMS_PER_BATCH]]
                if self._try(lambda c=chunk: self.client.log_batch(self.run_id, params=c)):
                    for p in chunk:
                        self._pending_params.pop(p.key, None)
                else:
                    ok = False
                    break
        if ok and self._pending_metrics:
            chunk = self._pending_metrics[:1000]
            if self._try(lambda: self.client.log_batch(self.run_id, metrics=chunk)):
                del self._pending_metrics[: len(chunk)]
                if self._pending_metrics:
                    return self._flush()
            else:
                ok = False
        while ok and self._pending_artifacts:
            path, dest = self._pending_artifacts[0]
            log = self.client.log_artifacts if Path(path).is_dir() else self.client.log_artifact
            if self._try(lambda: log(self.run_id, path, dest)):
                self._pending_artifacts.pop(0)
            else:
                ok = False
        if ok and self._warned:
            print(f"titlecat: MLflow at {self.uri} answers again; buffered logs were sent", file=sys.stderr)
            self._warned = False
        return ok

    def pending(self) -> dict[str, int]:
        return {"params": len(self._pending_params), "metrics": len(self._pending_metrics),
                "artifacts": len(self._pending_artifacts)}

    def close(self, status: str = "FINISHED", wait: float = 30.0) -> None:
        """Send what is buffered (retrying up to ``wait`` seconds), then end the run."""
        deadline = time.monotonic() + wait
        delay = 0.5
        while not self._flush() and time.monotonic() < deadline:
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
        left = self.pending()
        if any(left.values()):
            print(f"titlecat: warning: MLflow run {self.run_id} at {self.uri} is missing "
                  f"{left['params']} params, {left['metrics']} metric values and {left['artifacts']} artifacts "
                  "that could not be sent; the model bundle on disk is complete", file=sys.stderr)
            status = "FAILED" if status == "FINISHED" else status
        self._try(lambda: self.client.set_terminated(self.run_id, status=status))


def make_logger(enabled: bool, experiment: str = "titlecat", run_name: str | None = None,
                run_id: str | None = None) -> RunLogger:
    return MlflowLogger(experiment, run_name, run_id) if enabled else NullLogger()


def run_url_hint(logger: RunLogger) -> str:
    if isinstance(logger, MlflowLogger):
        return f"MLflow run {logger.run_id} in experiment {logger.experiment!r} at {logger.uri}"
    return "MLflow tracking off"
