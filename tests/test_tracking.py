"""bundle.tracking: TrackedRun completing MONAI's MLFlowHandler record on a small ignite engine, ParentRun nesting
runs, and the one message when MLflow is missing; read back through MLflow's client from a SQLite store."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from monai.handlers import MLFlowHandler, from_engine
from monai.utils import path_to_sqlite_uri

from bundle import tracking
from bundle.errors import UserError
from bundle.settings import check
from bundle.workflow import parsed
from tests.helpers import ROOT, bundle_in_process

mlflow = pytest.importorskip("mlflow", reason="MLflow is not installed (requirements-deploy.txt)")
CLASSES = ["normal", "covid19"]


class ToyTrainer(Engine):
    """An ignite engine whose output is the bundle's dictionary; ``run()`` without arguments, as MONAI's engines.
    ``fail_at``: the iteration that raises."""

    def __init__(self, epochs: int = 2, fail_at: int | None = None) -> None:
        super().__init__(self._step)
        self.epochs, self.fail_at = epochs, fail_at

    def _step(self, engine: Engine, batch: int) -> dict:
        if engine.state.iteration == self.fail_at:
            raise RuntimeError("broken batch")
        return {"loss": torch.tensor(1.0 / engine.state.iteration), "pred": torch.zeros(2)}

    def run(self) -> None:  # type: ignore[override]
        super().run([0, 1, 2], max_epochs=self.epochs)


class EpochMetrics:
    """A handler publishing a number and a per-class vector in ``state.metrics``, and final metrics."""

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._publish)

    def _publish(self, engine: Engine) -> None:
        engine.state.metrics.update(val_auc=0.5 + engine.state.epoch / 10, per_class=torch.tensor([0.25, 0.75]))

    def final_metrics(self) -> dict:
        return {"best_val_auc": 0.7, "best_epoch": 2}


class Writer:
    """A handler writing ``log.csv`` (and ``plots/a.png``) in its folder when the engine completes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _write(self, engine: Engine) -> None:
        (self.folder / "plots").mkdir(exist_ok=True)
        (self.folder / "plots" / "a.png").write_bytes(b"png")
        (self.folder / "log.csv").write_text("epoch\n1\n2\n")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """One SQLite store for the module's runs (MLflow builds its tables once per file, which takes seconds)."""
    return tmp_path_factory.mktemp("tracking") / tracking.STORE


def monai_handler(store: Path, experiment: str, iteration_log: bool = True) -> MLFlowHandler:
    """MONAI's handler as ``--tracking mlflow`` builds it for a trainer (utils.DEFAULT_MLFLOW_SETTINGS)."""
    return MLFlowHandler(
        tracking_uri=path_to_sqlite_uri(str(store)),
        experiment_name=experiment,
        iteration_log=iteration_log,
        tag_name="train_loss",
        output_transform=from_engine(["loss"], first=True),  # reads a list: the bundle's output is a dictionary
        close_on_complete=True,
    )


def runs(store: Path, experiment: str) -> list:
    client = mlflow.MlflowClient(tracking_uri=path_to_sqlite_uri(str(store)))
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


def history(store: Path, run, key: str) -> list[tuple[int, float]]:
    client = mlflow.MlflowClient(tracking_uri=path_to_sqlite_uri(str(store)))
    return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]


def artifacts(store: Path, run, path: str | None = None) -> set[str]:
    client = mlflow.MlflowClient(tracking_uri=path_to_sqlite_uri(str(store)))
    found = set()
    for item in client.list_artifacts(run.info.run_id, path):
        found |= artifacts(store, run, item.path) if item.is_dir else {item.path}
    return found


def test_tracked_run_completes_monais_record(store, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)  # restored after the test
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("an earlier run's file")
    (out / "log.csv").write_text("epoch\n")  # rewritten by the run
    config = out / "config_20250101_120000.json"
    config.write_text(json.dumps({"image_size": 64}))
    handlers = [Writer(out), EpochMetrics(), monai_handler(store, "toy")]
    engine = ToyTrainer()
    for handler in handlers:  # as MONAI's trainer attaches its handlers, before the record
        handler.attach(engine)
    params = {"image_size": 64, "learning_rate": 0.001, "run_name": None, "_desc_": "left out"}
    record = tracking.TrackedRun(handlers, params, str(out), str(config), class_names=CLASSES)
    record.run(engine)

    (run,) = runs(store, "toy")
    assert run.info.status == "FINISHED" and run.info.run_name == record.run_name
    assert run.data.params["image_size"] == "64" and run.data.params["learning_rate"] == "0.001"
    assert run.data.params["run_name"] == record.run_name and "_desc_" not in run.data.params
    assert run.data.params["max_epochs"] == "2"  # MONAI's own
    assert run.data.tags["bundle_version"]
    assert [s for s, _ in history(store, run, "train_loss")] == [1, 2, 3, 4, 5, 6]  # each iteration's loss
    assert history(store, run, "val_auc") == [(1, pytest.approx(0.6)), (2, pytest.approx(0.7))]
    assert history(store, run, "per_class/covid19") == [(1, 0.75), (2, 0.75)]
    assert run.data.metrics["best_val_auc"] == 0.7 and history(store, run, "best_epoch") == [(2, 2.0)]
    assert artifacts(store, run) == {config.name, "log.csv", "plots/a.png"}  # not old.txt nor the store
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert mlflow.telemetry.get_telemetry_client() is None  # nothing is sent anywhere


def test_a_failed_engine_ends_its_run_failed(store, tmp_path):
    engine = ToyTrainer(fail_at=2)
    handler = monai_handler(store, "toy_failed")
    handler.attach(engine)
    with pytest.raises(RuntimeError, match="broken batch"):
        tracking.TrackedRun([handler], {"seed": 0}, str(tmp_path)).run(engine)
    (run,) = runs(store, "toy_failed")
    assert run.info.status == "FAILED" and run.data.params["seed"] == "0"


def test_without_monais_handler_the_engine_only_runs(tmp_path):
    engine = ToyTrainer(epochs=1)
    tracking.TrackedRun([EpochMetrics(), None], {"seed": 0}, str(tmp_path)).run(engine)
    assert engine.state.epoch == 1 and not list(tmp_path.iterdir())


def test_parent_run_nests_the_runs_of_its_stages(store, tmp_path):
    config = tmp_path / "config_20250101_120000.json"
    config.write_text("{}")
    parent = tracking.ParentRun("mlflow", str(store.parent), "curriculum", "c1", {"max_epochs": None}, str(config))
    with parent.recording():
        settings, ids = parent.stage("01_inpainting")
        assert ids == {"experiment_name": "curriculum", "run_name": "c1/01_inpainting"}
        assert settings["configs"]["tracking_uri"] == parent.uri == path_to_sqlite_uri(str(store))
        assert settings["handlers_id"]["trainer"]["id"] == "train#trainer"  # MONAI's defaults otherwise
    by_name = {r.info.run_name: r for r in runs(store, "curriculum")}
    assert set(by_name) == {"c1", "c1/01_inpainting"}
    parent_run, child = by_name["c1"], by_name["c1/01_inpainting"]
    assert child.data.tags["mlflow.parentRunId"] == parent_run.info.run_id
    assert child.data.tags["stage"] == "01_inpainting"
    assert parent_run.data.params["max_epochs"] == "None" and artifacts(store, parent_run) == {config.name}
    assert parent_run.info.status == child.info.status == "FINISHED"

    failing = tracking.ParentRun("mlflow", str(store.parent), "curriculum", "c2")

    def interrupted_stage() -> None:
        with failing.recording():
            failing.stage("01_inpainting")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted_stage()
    statuses = {r.info.run_name: r.info.status for r in runs(store, "curriculum")}
    assert statuses["c2"] == statuses["c2/01_inpainting"] == "KILLED"


def test_parent_run_without_tracking_records_nothing(tmp_path):
    parent = tracking.ParentRun(None, str(tmp_path), "curriculum")
    with parent.recording():
        assert parent.stage("01_inpainting") == (None, {})
    assert not list(tmp_path.iterdir())


def test_scalars_are_what_mlflow_takes():
    values = {
        "auc": 0.5,
        "loss": torch.tensor([2.0]),
        "per_class": torch.tensor([0.1, 0.2]),
        "three": [1.0, 2.0, 3.0],
        "table": torch.zeros(2, 2),
        "ci95": {"auc": 0.4},
        "name": "text",
        "flag": True,
        "undefined": None,
        "odd (name)": float("nan"),
    }
    out = tracking.scalars(values, CLASSES)
    assert out.keys() == {"auc", "loss", "per_class/normal", "per_class/covid19", "three/0", "three/1", "three/2"} | {
        "ci95/auc",
        "odd _name_",
    }
    assert out["loss"] == 2.0 and out["per_class/covid19"] == pytest.approx(0.2) and math.isnan(out["odd _name_"])


def test_config_path_reads_monais_joined_text(tmp_path):
    config = tmp_path / "config_20250101_120000.json"
    config.write_text("{}")
    assert tracking.config_path(str(config)) == str(config)
    # output_dir given as a path: MONAI joins it to the file name as text
    assert tracking.config_path(f"{tmp_path} + '/config_20250101_120000.json'") == str(config)
    assert tracking.config_path(True) is None and tracking.config_path(None) is None
    assert tracking.config_path(str(tmp_path / "missing.json")) is None


def test_requested_is_the_command_lines_unless_a_workflow_was_given_one(monkeypatch):
    import monai.bundle.__main__ as main

    monkeypatch.setattr(
        "sys.argv", [main.__file__, "run", "--config_file", "configs/train.json", "--tracking", "mlflow"]
    )
    assert tracking.requested() == "mlflow"
    with tracking.requesting(None):
        assert tracking.requested() is None
    monkeypatch.setattr("sys.argv", ["pytest"])
    assert tracking.requested() is None


def test_missing_mlflow_is_one_message_before_any_work(monkeypatch, tmp_path):
    monkeypatch.setattr(tracking, "mlflow_installed", lambda: False)
    settings = parsed("train", {"ckpt_dir": str(tmp_path)}, "settings")[0]
    assert check(settings, "train")  # without tracking nothing is asked of MLflow
    with tracking.requesting("mlflow"), pytest.raises(UserError) as stop:
        check(settings, "train")
    assert "--tracking mlflow: MLflow is not installed" in str(stop.value) and "nothing was run" in str(stop.value)
    # through MONAI's runner, as a user types it
    args = ["--ckpt_dir", str(tmp_path / "m"), "--dataset_dir", str(ROOT / "data" / "sample"), "--tracking", "mlflow"]
    proc = bundle_in_process("run", "--config_file", "configs/train.json", *args)
    assert proc.returncode == 1 and "--tracking mlflow: MLflow is not installed" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and not (tmp_path / "m" / "model.pt").exists()
