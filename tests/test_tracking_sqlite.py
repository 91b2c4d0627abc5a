"""Two trainings, two processes, one SQLite ``mlflow.db`` created by neither beforehand: both
finish, and both runs are intact (every epoch's metrics, the test score, all params).

MLflow creates a new SQLite store by running its schema migrations; two processes doing it
at once break the file for good ("duplicate column name: step").  ``titlecat.tracking`` holds
a file lock while it opens a SQLite store, and SQLite's "database is locked" while both
write goes through the logger's retry buffer.
"""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import _write_jsonl, tiny_rows, tiny_test_rows
from test_tracking import EPOCH_METRICS, EPOCHS, SMALL


def test_two_trainings_share_one_sqlite_file(tmp_path):
    from mlflow.tracking import MlflowClient

    train = _write_jsonl(tmp_path / "train.jsonl", tiny_rows())
    test = _write_jsonl(tmp_path / "test.jsonl", tiny_test_rows())
    db = tmp_path / "shared" / "mlflow.db"  # new: both processes also race to create its tables
    db.parent.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "titlecat.cli", "train", "--train", str(train), "--test", str(test),
                               "--output", str(tmp_path / name), "--experiment", "shared", "--run-name", name, *SMALL],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name in ("first", "second")]
    logs = [p.communicate(timeout=240)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log
        assert "Traceback" not in log and "NOT logged" not in log

    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("shared").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["first", "second"]
    for run in runs:
        assert run.info.status == "FINISHED"
        for key in EPOCH_METRICS:
            assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == \
                list(range(1, EPOCHS + 1)), (run.info.run_name, key)
        assert "test_balanced_accuracy" in run.data.metrics
        assert len(run.data.params) == len(runs[0].data.params)
