"""Experiment tracking with MLflow: what ``--tracking mlflow`` records of each workflow, and where.

``python -m monai.bundle run --config_file <config> --tracking mlflow`` adds MONAI's ``MLFlowHandler`` to the
engines a config names as MONAI expects (``train#trainer`` with ``train#handlers``, ``validate#evaluator`` with
``validate#handlers``) and adds the ids those handlers read where the config lacks them. The configs define these
ids so that MONAI's defaults land in the run's own folder under the workflow's name: ``output_dir`` (the store is
``<output_dir>/mlruns.db``, its artifacts ``<output_dir>/mlruns/``), ``experiment_name`` (``train``, ``evaluate``,
``pretrain_<method>``, ``pretrain_curriculum``), ``run_name`` and ``save_execute_config`` (true: MONAI writes the
executed config into ``output_dir``; the id then holds its path).

MONAI's handlers record every iteration's loss and learning rate and, after every epoch, the engines'
``state.metrics``: the mean training loss ``epoch_loss``, the validation metrics, the pretraining monitor's values,
the test metrics. ``TrackedRun`` runs a workflow's engine and completes that record:

* it fits MONAI's handlers to the bundle's engines: the loss is an entry of the engines' output dictionary (MONAI
  reads a list), a per-class metric (C,) is logged one class each (MLflow takes numbers only), an iteration's loss
  and learning rate are one write to the store (MONAI makes two), and all handlers of the run share one run name
  (a handler without one would continue any unfinished run of the experiment);
* it records the settings as the run's parameters and, at the end, the final metrics (``final_metrics()`` of the
  handlers that have it: the best validation metric and its epoch, the evaluation report's figures with their
  intervals), the executed config and the files the run wrote into ``output_dir``; then it ends the run, as
  FAILED (KILLED after Ctrl-C) when the engine stopped on an error;
* it keeps MLflow offline: MLflow's usage reports to its server are switched off.

Only rank 0 records: MONAI disables its handlers on the other ranks, where ``TrackedRun`` finds none. A workflow
that runs others in its process (the curriculum) records one run of its own, each stage's run nested under it, in
its store (``ParentRun``).
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser
from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS
from monai.handlers import MLFlowHandler
from monai.utils import optional_import, path_to_sqlite_uri, path_to_uri

from . import __version__
from .overrides import command_line
from .values import Rule, boolean, described, optional, text

mlflow, _ = optional_import("mlflow")

__all__ = [
    "run",
    "STORE",
    "ARTIFACTS",
    "requested",
    "requesting",
    "settings_of",
    "mlflow_installed",
    "tracking_check",
    "keep_offline",
    "scalars",
    "config_path",
    "TrackedRun",
    "ParentRun",
    "RULES",
    "CHECKS",
]

STORE = "mlruns.db"  # the store in output_dir, as MONAI's default tracking_uri names it
ARTIFACTS = "mlruns"  # the artifacts beside it, as MONAI's handler keeps them for a SQLite store
_BATCH = 100  # MLflow takes at most 100 parameters or tags in one call
_PARAM_LENGTH = 6000  # and parameter values of at most 6000 characters
_BAD_NAME = re.compile(r"[^\w\-. :/]")  # characters MLflow refuses in a metric's name
# MONAI's save_execute_config when output_dir was given as a path rather than an expression: the two are joined as
# text, "<folder> + '/config_<time>.json'", which names no file
_JOINED_CONFIG = re.compile(r"^(?P<folder>.*) \+ '/(?P<name>config_\d{8}_\d{6}\.json)'$")
_given: list[Any] = []  # the tracking given to bundle.workflow.run, innermost last


def requested() -> Any:
    """The ``--tracking`` of this run: what ``bundle.workflow.run`` was given (innermost call), else the value on
    this process's ``python -m monai.bundle run`` command line; None without tracking."""
    if _given:
        return _given[-1]
    line = command_line()
    return None if line is None else line.values.get("tracking")


@contextmanager
def requesting(tracking: Any) -> Iterator[None]:
    """Within it, ``requested()`` answers ``tracking`` (``bundle.workflow.run`` runs a workflow in it)."""
    _given.append(tracking)
    try:
        yield
    finally:
        _given.pop()


def settings_of(tracking: Any) -> dict | None:
    """MONAI's tracking settings for a ``--tracking`` value (a copy): its defaults for ``mlflow``, else the settings
    file or mapping given; None without tracking."""
    if not tracking:
        return None
    if isinstance(tracking, str) and tracking in DEFAULT_EXP_MGMT_SETTINGS:
        return copy.deepcopy(DEFAULT_EXP_MGMT_SETTINGS[tracking])
    return copy.deepcopy(dict(ConfigParser.load_config_files(tracking)))


def mlflow_installed() -> bool:
    """Whether MLflow can be imported here (MONAI imports it only when present)."""
    return importlib.util.find_spec("mlflow") is not None


def tracking_check(settings: Mapping[str, Any], workflow: str) -> list[str]:
    """``--tracking mlflow`` needs MLflow installed (MONAI's handler would otherwise stop the run in a traceback)."""
    tracking = requested()
    if not tracking or mlflow_installed():
        return []
    if tracking != "mlflow" and "MLFlowHandler" not in repr(settings_of(tracking)):
        return []
    shown = tracking if isinstance(tracking, str) else "<settings>"
    return [
        f"--tracking {shown}: MLflow is not installed in this Python environment; install it (pip install -r "
        "requirements-deploy.txt) or run without --tracking"
    ]


def keep_offline() -> None:
    """Switch off MLflow's usage reports, which MLflow 3 sends to its server by default: runs contact no server."""
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    mlflow.telemetry.set_telemetry_client()  # drops the client made when MLflow was imported, before any report


def _metric_name(name: Any) -> str:
    return _BAD_NAME.sub("_", str(name))


def scalars(values: Mapping[str, Any], class_names: Sequence[str] | None = None) -> dict[str, float]:
    """``values`` as MLflow metrics: numbers (and one-element tensors) as they are, a vector (C,) one entry per class
    (``<name>/<class>`` when ``class_names`` has C names, else ``<name>/<index>``), a mapping's entries as
    ``<name>/<key>``; None, text and tables are left out. Names keep the characters MLflow accepts."""
    out: dict[str, float] = {}
    for key, value in values.items():
        name = _metric_name(key)
        if isinstance(value, Mapping):
            out.update({f"{name}/{k}": v for k, v in scalars(value, class_names).items()})
            continue
        if value is None or isinstance(value, (bool, str, bytes)):
            continue
        try:
            array = torch.as_tensor(value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            continue
        if array.numel() == 1:
            out[name] = float(array.reshape(-1)[0])
        elif array.ndim == 1:
            labels = class_names if class_names is not None and len(class_names) == len(array) else range(len(array))
            out.update({f"{name}/{_metric_name(label)}": float(v) for label, v in zip(labels, array)})
    return out


def config_path(value: Any) -> str | None:
    """The executed config's file from ``save_execute_config``; None when there is none (no tracking, or false)."""
    if not isinstance(value, (str, os.PathLike)):
        return None
    path = os.fspath(value)
    joined = _JOINED_CONFIG.match(path)
    if joined and not os.path.isfile(path):
        path = os.path.join(joined["folder"], joined["name"])
    return path if os.path.isfile(path) else None


def _param(value: Any) -> str:
    shown = str(value)
    return shown if len(shown) <= _PARAM_LENGTH else shown[: _PARAM_LENGTH - 3] + "..."


def _log_params(client: Any, run_id: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
    """Log ``params`` (those the run has not logged yet: MLflow refuses a second value) and ``tags``."""
    logged = client.get_run(run_id).data.params
    entries = [mlflow.entities.Param(k, _param(v)) for k, v in params.items() if not k.startswith("_")]
    entries = [p for p in entries if p.key not in logged]
    for i in range(0, len(entries), _BATCH):
        client.log_batch(run_id, params=entries[i : i + _BATCH])
    client.log_batch(run_id, tags=[mlflow.entities.RunTag(k, str(v)) for k, v in tags.items()])


def _log_metrics(client: Any, run_id: str, metrics: Mapping[str, float], step: int) -> None:
    stamp = int(time.time() * 1000)
    entries = [mlflow.entities.Metric(k, v, stamp, step) for k, v in metrics.items()]
    for i in range(0, len(entries), _BATCH):
        client.log_batch(run_id, metrics=entries[i : i + _BATCH])


def _files(folder: str | None) -> dict[str, tuple[int, int]]:
    """The files under ``folder`` a run's record keeps, by relative path, with their time and size: not the MLflow
    store and its artifacts, hidden files (the run lock) or TensorBoard's event files (their values are metrics)."""
    if not folder or not os.path.isdir(folder):
        return {}
    found = {}
    for path in Path(folder).rglob("*"):
        rel = path.relative_to(folder)
        if rel.parts[0].startswith((ARTIFACTS, ".")) or path.name.startswith("events.out.tfevents"):
            continue
        if path.is_file():
            stat = path.stat()
            found[rel.as_posix()] = (stat.st_mtime_ns, stat.st_size)
    return found


def _loss(output: Any) -> Any:
    """The loss of the bundle's engines' output dictionary (``{"loss": tensor, ...}``)."""
    loss = output.get("loss") if isinstance(output, Mapping) else None
    return loss.detach() if isinstance(loss, torch.Tensor) else loss


class TrackedRun:
    """Run a workflow's engine; with ``--tracking mlflow``, complete and end the MLflow run of MONAI's handlers.

    Without an ``MLFlowHandler`` among ``handlers`` (no tracking, or a rank other than 0) ``run`` only runs the
    engine. The configs' last step is ``bundle.tracking.run(<engine>, <block>#tracking)`` (``run``).

    Args:
        handlers: the handlers MONAI adds its ``MLFlowHandler`` to (``train#handlers``, ``validate#handlers``): the
            engine's and those of the engines it runs (the validator).
        params: the run's parameters (the config's ``settings``).
        output_dir: the run's folder: the files the run writes there are logged at the end.
        config: the executed config MONAI wrote (``save_execute_config``), logged at the end.
        run_name: the MLflow run's name; None: the date and time the run starts.
        iteration_output: the engine's output -> the number (the loss) or ``{name: number}`` logged every
            iteration; default the ``loss`` entry.
        class_names: names of the entries of per-class metrics.
    """

    def __init__(
        self,
        handlers: Sequence[Any] | None,
        params: Mapping[str, Any] | None = None,
        output_dir: str | None = None,
        config: Any = None,
        run_name: str | None = None,
        iteration_output: Callable[[Any], Any] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.handlers = [h for h in handlers or () if h is not None]
        self.mlflow_handlers = [h for h in self.handlers if isinstance(h, MLFlowHandler)]
        self.params, self.output_dir, self.config = dict(params or {}), output_dir, config
        self.run_name = run_name
        self.iteration_output = iteration_output or _loss
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.client: Any = None
        self.run_id: str | None = None
        self._before: dict[str, tuple[int, int]] = {}

    def run(self, engine: Engine) -> Any:
        """``engine.run()``, recorded when MONAI's handlers are there; the run ends FAILED if the engine fails."""
        if not self.mlflow_handlers:
            return engine.run()
        self._prepare(engine)
        try:
            return engine.run()
        except BaseException as e:  # Ctrl-C and a user error (SystemExit) end the run as well
            self._end("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
            raise

    def _prepare(self, engine: Engine) -> None:
        """Fit MONAI's handlers to the bundle's engines and register this record after them."""
        keep_offline()
        self.run_name = self.run_name or time.strftime("%Y%m%d-%H%M%S")
        self._before = _files(self.output_dir)
        for handler in self.mlflow_handlers:
            handler.run_name = self.run_name
            handler.iteration_logger = functools.partial(self._log_iteration, handler)
            handler.epoch_logger = functools.partial(self._log_epoch, handler)
            handler.artifacts = ()  # the executed config is logged by _finish, which finds it where MONAI may not
            if engine.has_event_handler(handler.close, Events.COMPLETED):
                engine.remove_event_handler(handler.close, Events.COMPLETED)  # closed after the final entries
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.COMPLETED, self._finish)

    def _log_iteration(self, handler: MLFlowHandler, engine: Engine) -> None:
        """A handler's iteration log: ``iteration_output`` of the output and the optimizer's learning rate of each
        group (``lr_group_<i>``, as MONAI names it), in one write where MONAI makes two."""
        value = self.iteration_output(engine.state.output)
        values = dict(value) if isinstance(value, Mapping) else {handler.tag_name: value}
        for i, group in enumerate(getattr(getattr(engine, "optimizer", None), "param_groups", None) or ()):
            values.update({f"{name}_group_{i}": group[name] for name in handler.optimizer_param_names})
        metrics = scalars(values)
        if metrics and handler.cur_run is not None:
            _log_metrics(handler.client, handler.cur_run.info.run_id, metrics, engine.state.iteration)

    def _log_epoch(self, handler: MLFlowHandler, engine: Engine) -> None:
        """A handler's epoch log: the engine's ``state.metrics``, per-class ones one entry per class."""
        metrics = scalars(engine.state.metrics, self.class_names)
        if metrics and handler.cur_run is not None:
            step = handler.global_epoch_transform(engine.state.epoch)
            _log_metrics(handler.client, handler.cur_run.info.run_id, metrics, step)

    def _start(self, engine: Engine) -> None:
        """After MONAI's handlers opened the run (they are attached first): its parameters and tags."""
        lead = next((h for h in self.mlflow_handlers if engine.has_event_handler(h.start, Events.STARTED)), None)
        if lead is None or lead.cur_run is None:
            return
        self.client, self.run_id = lead.client, lead.cur_run.info.run_id
        params = {**self.params, **({"run_name": self.run_name} if "run_name" in self.params else {})}
        _log_params(self.client, self.run_id, params, {"bundle_version": __version__})

    def _finish(self, engine: Engine) -> None:
        """The final metrics, the executed config and the files the run wrote; then the run ends."""
        try:
            if self.run_id is not None:
                final: dict[str, Any] = {}
                for handler in self.handlers:
                    if callable(getattr(handler, "final_metrics", None)):
                        final.update(handler.final_metrics())
                _log_metrics(self.client, self.run_id, scalars(final, self.class_names), engine.state.epoch)
                self._log_files()
        finally:
            self._end(None)

    def _log_files(self) -> None:
        config = config_path(self.config)
        if config is not None:
            self.client.log_artifact(self.run_id, config)
        for rel, stamp in sorted(_files(self.output_dir).items()):
            if self._before.get(rel) != stamp:
                folder = os.path.dirname(rel)
                self.client.log_artifact(self.run_id, os.path.join(self.output_dir, rel), folder or None)

    def _end(self, status: str | None) -> None:
        """End the run (``status``, or FINISHED when None) and release the handlers' store."""
        for handler in self.mlflow_handlers:
            if status is not None and handler.cur_run is not None:
                handler.client.set_terminated(handler.cur_run.info.run_id, status)
                handler.cur_run = None  # ended: close must not mark it finished
            handler.close()


class ParentRun:
    """The MLflow run of a workflow that runs others in its process (a curriculum's stages): its parameters and
    executed config, with each stage's run nested under it, all in ``<output_dir>/mlruns.db``. Does nothing without
    tracking.

    Args:
        tracking: the run's ``--tracking`` (``requested()``); None: nothing is recorded.
        output_dir: the folder of the store (``MLFLOW_TRACKING_URI``, when set, names another, as for MONAI's
            handlers).
        experiment_name: the MLflow experiment.
        run_name: the run's name; None: the date and time it starts. A stage's run is ``<run_name>/<stage>``.
        params: the run's parameters (the config's ``settings``).
        config: the executed config MONAI wrote (``save_execute_config``).
    """

    def __init__(
        self,
        tracking: Any,
        output_dir: str,
        experiment_name: str,
        run_name: str | None = None,
        params: Mapping[str, Any] | None = None,
        config: Any = None,
    ) -> None:
        self.settings = settings_of(tracking)
        self.output_dir, self.experiment_name, self.run_name = output_dir, experiment_name, run_name
        self.params, self.config = dict(params or {}), config
        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or path_to_sqlite_uri(os.path.join(output_dir, STORE))
        self.client: Any = None
        self.run_id: str | None = None
        self.experiment_id: str | None = None

    @contextmanager
    def recording(self) -> Iterator[None]:
        """The run, from entering to leaving: FINISHED, or FAILED (KILLED after Ctrl-C) when an error leaves it."""
        self._start()
        try:
            yield
        except BaseException as e:
            self._end("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
            raise
        self._end("FINISHED")

    def _start(self) -> None:
        if self.settings is None:
            return
        keep_offline()
        self.client = mlflow.MlflowClient(tracking_uri=self.uri)
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is not None:
            self.experiment_id = experiment.experiment_id
        else:  # where MONAI's handlers put a SQLite store's artifacts: beside it
            location = path_to_uri(Path(self.output_dir).resolve() / ARTIFACTS)
            self.experiment_id = self.client.create_experiment(self.experiment_name, artifact_location=location)
        self.run_name = self.run_name or time.strftime("%Y%m%d-%H%M%S")
        run = self.client.create_run(self.experiment_id, run_name=self.run_name)
        self.run_id = run.info.run_id
        params = {**self.params, **({"run_name": self.run_name} if "run_name" in self.params else {})}
        _log_params(self.client, self.run_id, params, {"bundle_version": __version__})
        config = config_path(self.config)
        if config is not None:
            self.client.log_artifact(self.run_id, config)

    def stage(self, name: str) -> tuple[dict | None, dict[str, str]]:
        """The tracking settings and the ids to give the workflow of stage ``name``: its run is made here, nested
        under this one, and MONAI's handlers continue it (the unfinished run of their name). ``(None, {})`` without
        tracking."""
        if self.run_id is None:
            return None, {}
        run_name = f"{self.run_name}/{name}"
        tags = {"mlflow.parentRunId": self.run_id, "stage": name}
        self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        settings = copy.deepcopy(self.settings)
        settings.setdefault("configs", {})["tracking_uri"] = self.uri
        return settings, {"experiment_name": self.experiment_name, "run_name": run_name}

    def _end(self, status: str) -> None:
        """End this run and the runs of its stages still open (a stage that stopped before its engine started)."""
        if self.run_id is None:
            return
        query = f"tags.mlflow.parentRunId = '{self.run_id}' and attributes.status = 'RUNNING'"
        for run in self.client.search_runs([self.experiment_id], filter_string=query):
            self.client.set_terminated(run.info.run_id, status)
        self.client.set_terminated(self.run_id, status)
        self.run_id = None


def _config_file_rule(v: Any) -> str | None:
    if v is None or boolean(v) is None or (isinstance(v, (str, os.PathLike)) and os.fspath(v).strip()):
        return None
    return "must be true, false or the path of a file"


# the settings tracking consumes (bundle.settings gathers every component's table)
RULES: dict[str, Rule] = {
    "experiment_name": described(text, "MLflow experiment of the run's record (``--tracking mlflow``)"),
    "run_name": described(
        optional(text), "MLflow run name (``--tracking mlflow``); null: the date and time the run starts"
    ),
    "save_execute_config": described(
        _config_file_rule,
        "with ``--tracking``: the executed config, logged to the run (true: MONAI writes it into ``output_dir``)",
        allowed="true, false or the path of a file",
    ),
}
CHECKS = (tracking_check,)


def run(engine: Engine, tracking: TrackedRun) -> Any:
    """``tracking.run(engine)`` with the engine named first: a config expression builds what it references in the
    order it names them, so the engine, and the checks its datasets make (splits that share patients), come before
    the handlers the record reads (a missing checkpoint)."""
    return tracking.run(engine)
