"""``--tracking mlflow`` on every workflow through MONAI's runner, read back with MLflow's client.

Each workflow keeps its store in its own folder (``<output_dir>/mlruns.db``), under an experiment named for it, with
the settings as parameters, one value per epoch of each epoch metric, the executed config as an artifact and the
final metrics. The patching itself (where MONAI puts its handlers in each config) is checked without running.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from monai.bundle import ConfigWorkflow
from monai.utils import path_to_sqlite_uri

from bundle.tracking import STORE
from tests.helpers import ROOT, launch, run_bundle

mlflow = pytest.importorskip("mlflow", reason="MLflow is not installed (requirements-deploy.txt)")

CONFIGS = ROOT / "configs"
SAMPLE = ROOT / "data" / "sample"
QUICK = ["--image_size", "64", "--batch_size", "4", "--num_workers", "0", "--show_progress", "false"]
PRETRAINING = {"pretrain_contrastive": "simclr", "pretrain_inpainting": "inpainting", "pretrain_pretext": "rotation"}


def configs(*names: str) -> str:
    return "[" + ",".join(f"'{CONFIGS / (n + '.json')}'" for n in names) + "]"


def small_datalist(folder: Path, per_class: int = 5) -> Path:
    """The first ``per_class`` images of each class of the embedded sample."""
    entries, count = [], {}
    for entry in json.loads((SAMPLE / "datalist.json").read_text())["training"]:
        if count.get(entry["label"], 0) < per_class:
            entries.append(entry)
            count[entry["label"]] = count.get(entry["label"], 0) + 1
    path = folder / "datalist.json"
    path.write_text(json.dumps({"training": entries}))
    return path


def data_args(tmp_path: Path) -> list[str]:
    return ["--bundle_root", str(ROOT), "--dataset_dir", str(SAMPLE), "--datalist", str(small_datalist(tmp_path))]


class Store:
    """An MLflow store read back through MLflow's client."""

    def __init__(self, path: Path) -> None:
        assert path.is_file(), f"no MLflow store at {path}"
        self.client = mlflow.MlflowClient(tracking_uri=path_to_sqlite_uri(str(path)))

    def runs(self, experiment: str) -> list:
        found = self.client.get_experiment_by_name(experiment)
        assert found is not None, f"no experiment {experiment!r}"
        return self.client.search_runs([found.experiment_id])

    def steps(self, run, key: str) -> list[int]:
        return [m.step for m in self.client.get_metric_history(run.info.run_id, key)]

    def artifacts(self, run, path: str | None = None) -> set[str]:
        found = set()
        for item in self.client.list_artifacts(run.info.run_id, path):
            found |= self.artifacts(run, item.path) if item.is_dir else {item.path}
        return found

    def config(self, run) -> dict:
        """The executed config logged to the run."""
        (name,) = [a for a in self.artifacts(run) if a.startswith("config_") and a.endswith(".json")]
        return json.loads(Path(self.client.download_artifacts(run.info.run_id, name)).read_text())


# ---- where MONAI's patching lands, for every workflow and overlay (no run) ---------------------------------------

PATCHED = {
    "train": (["train"], ["train#handlers", "validate#handlers"], "train"),
    "evaluate": (["train", "evaluate"], ["validate#handlers"], "evaluate"),
    "multi_gpu_train": (["train", "multi_gpu_train"], ["train#handlers", "validate#handlers"], "train"),
    "multi_gpu_evaluate": (["train", "evaluate", "multi_gpu_evaluate"], ["validate#handlers"], "evaluate"),
    "pretrain_contrastive": (["pretrain_contrastive"], ["train#handlers"], "pretrain_simclr"),
    "pretrain_inpainting": (["pretrain_inpainting"], ["train#handlers"], "pretrain_inpainting"),
    "pretrain_pretext": (["pretrain_pretext"], ["train#handlers"], "pretrain_rotation"),
    "multi_gpu_pretrain": (["pretrain_inpainting", "multi_gpu_pretrain"], ["train#handlers"], "pretrain_inpainting"),
    "curriculum": (["pretrain_curriculum"], [], "pretrain_curriculum"),
}


@pytest.mark.parametrize("name", sorted(PATCHED))
def test_monais_patching_lands_in_the_runs_folder_and_lists(name, tmp_path):
    names, lists, experiment = PATCHED[name]
    paths = [str(CONFIGS / f"{n}.json") for n in names]
    wf = ConfigWorkflow(paths, logging_file=False, tracking="mlflow", bundle_root=str(ROOT), ckpt_dir=str(tmp_path))
    parser = wf.parser
    output_dir = Path(parser.get_parsed_content("output_dir"))
    assert tmp_path in output_dir.parents
    assert parser.get_parsed_content("tracking_uri") == path_to_sqlite_uri(str(output_dir / STORE))
    assert parser.get_parsed_content("experiment_name") == experiment
    assert Path(parser.get_parsed_content("save_execute_config")).parent == output_dir  # the executed config
    for handlers in lists:  # MONAI appended its handler to the list the engine reads
        added = [h for h in parser[handlers] if isinstance(h, dict) and h.get("_target_") == "MLFlowHandler"]
        assert len(added) == 1, handlers
    if lists:  # the engine runs under the record that completes MONAI's (bundle.tracking.TrackedRun)
        block, engine = ("validate", "evaluator") if lists == ["validate#handlers"] else ("train", "trainer")
        assert parser["run"][-1].replace("::", "#") == f"$bundle.tracking.run(@{block}#{engine}, @{block}#tracking)"
        assert parser[f"{block}#tracking#_target_"] == "bundle.tracking.TrackedRun"


# ---- the workflows run for real ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, list[str]]:
    """configs/train.json for 2 epochs at 64 px on 20 sample images with --tracking mlflow: (ckpt_dir, args)."""
    folder = tmp_path_factory.mktemp("tracked")
    args = [*data_args(folder), "--ckpt_dir", str(folder / "models"), *QUICK]
    # val_accuracy is defined on a validation split this small; val_auc needs every class in it
    train = ["--max_epochs", "2", "--key_metric", "val_accuracy", "--learning_rate", "0.002", "--seed", "3"]
    run_bundle("run", "--config_file", str(CONFIGS / "train.json"), *args, *train, "--tracking", "mlflow")
    return folder / "models", args


@pytest.mark.slow  # a training run of two epochs through the runner
def test_training_is_recorded(trained):
    models, _ = trained
    store = Store(models / "training" / STORE)
    (run,) = store.runs("train")
    assert run.info.status == "FINISHED"
    params = run.data.params
    expected = {"image_size": "64", "batch_size": "4", "max_epochs": "2", "learning_rate": "0.002", "seed": "3"}
    assert {k: params[k] for k in expected} == expected
    assert {"backbone", "label_fraction", "weight_decay", "key_metric", "pretrained_ckpt"} <= set(params)
    assert params["run_name"] == run.info.run_name != "None"
    for key in ("epoch_loss", "val_auc", "val_accuracy", "val_dice"):  # one value per epoch
        assert store.steps(run, key) == [1, 2], key
    iterations = list(range(1, 2 * int(params["epoch_length"]) + 1))  # and each iteration's loss and learning rate
    assert store.steps(run, "train_loss") == store.steps(run, "lr_group_0") == iterations
    assert {"best_val_accuracy", "best_epoch"} <= set(run.data.metrics)
    assert run.data.metrics["best_epoch"] in (1.0, 2.0)
    assert {"training_log.csv", "training_curves.png"} <= store.artifacts(run)
    assert store.config(run)["image_size"] == 64  # the executed config, overrides applied


@pytest.mark.slow  # an evaluation through the runner, after the training
def test_evaluation_is_recorded(trained):
    models, args = trained
    evaluate = ["--n_bootstrap", "20", "--n_overlays", "1", "--tracking", "mlflow"]
    run_bundle("run", "--config_file", configs("train", "evaluate"), *args, *evaluate)
    store = Store(models / "evaluation" / STORE)
    (run,) = store.runs("evaluate")
    assert run.info.status == "FINISHED"
    assert run.data.params["n_bootstrap"] == "20" and run.data.params["saliency"] == "gradcampp"
    assert store.steps(run, "test_accuracy") == [1]
    metrics = run.data.metrics
    # MONAI's test metrics, per class one entry each, and the report's figures with their intervals
    assert {"test_auc", "test_auc_per_class/normal", "test_sensitivity/covid19", "test_dice"} <= set(metrics)
    assert {"auc_macro", "accuracy", "accuracy_ci95_low", "accuracy_ci95_high", "hm", "normal/auc"} <= set(metrics)
    report = json.loads((models / "evaluation" / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(report["accuracy"])
    assert {"metrics.json", "metrics.csv", "roc.png", "test_predictions.csv"} <= store.artifacts(run)
    assert store.config(run)["n_bootstrap"] == 20


@pytest.mark.slow  # a pretraining run of two epochs through the runner
@pytest.mark.parametrize("name", sorted(PRETRAINING))
def test_pretraining_is_recorded(name, tmp_path):
    args = [*data_args(tmp_path), "--ckpt_dir", str(tmp_path / "runs"), *QUICK, "--max_epochs", "2"]
    args += ["--probe_interval", "1"] + (["--sample_interval", "1"] if name == "pretrain_inpainting" else [])
    run_bundle("run", "--config_file", str(CONFIGS / f"{name}.json"), *args, "--tracking", "mlflow")
    store = Store(tmp_path / "runs" / "pretraining" / STORE)
    (run,) = store.runs(f"pretrain_{PRETRAINING[name]}")
    assert run.info.status == "FINISHED"
    assert run.data.params["ssl_method"] == PRETRAINING[name] and run.data.params["max_epochs"] == "2"
    for key in ("epoch_loss", "embedding_std", "knn_accuracy"):  # the monitor's values, one per epoch
        assert store.steps(run, key) == [1, 2], key
    assert "train_loss" in run.data.metrics and store.config(run)["ssl_method"] == PRETRAINING[name]
    if name == "pretrain_inpainting":
        assert {"reconstruction_epoch0001.png", "reconstruction_epoch0002.png"} <= store.artifacts(run)
    if name == "pretrain_pretext":
        assert len(store.steps(run, "pretext_accuracy")) == 2 * int(run.data.params["epoch_length"])


@pytest.mark.slow  # two pretraining stages through the runner
def test_curriculum_nests_a_run_per_stage(tmp_path):
    args = [*data_args(tmp_path), "--ckpt_dir", str(tmp_path / "runs"), *QUICK[:6], "--max_epochs", "1"]
    run_bundle("run", "--config_file", str(CONFIGS / "pretrain_curriculum.json"), *args, "--tracking", "mlflow")
    root = tmp_path / "runs" / "curriculum"
    store = Store(root / STORE)
    runs = {r.info.run_name: r for r in store.runs("pretrain_curriculum")}
    (parent,) = [r for r in runs.values() if "/" not in r.info.run_name]
    name = parent.info.run_name
    assert set(runs) == {name, f"{name}/01_inpainting", f"{name}/02_simclr"}
    assert parent.data.params["max_epochs"] == "1" and store.config(parent)["stages"][1]["name"] == "simclr"
    for stage, method in (("01_inpainting", "inpainting"), ("02_simclr", "simclr")):
        run = runs[f"{name}/{stage}"]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id and run.info.status == "FINISHED"
        assert run.data.params["ssl_method"] == method and run.data.params["ckpt_dir"] == str(root / stage)
        assert store.steps(run, "epoch_loss") == [1] and store.config(run)["ssl_method"] == method
    assert parent.info.status == "FINISHED"
    assert not list(root.glob(f"*/pretraining/{STORE}"))  # one store, the curriculum's


@pytest.mark.slow  # two processes under torchrun
def test_multi_gpu_training_is_recorded_once_by_rank_0(tmp_path):
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2"),
        *("-m", "monai.bundle", "run", "--config_file", configs("train", "multi_gpu_train")),
        *data_args(tmp_path),
        *("--ckpt_dir", str(tmp_path / "models"), *QUICK, "--max_epochs", "2", "--tracking", "mlflow"),
    ]
    proc = launch(command, env={"OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    store = Store(tmp_path / "models" / "training" / STORE)
    (run,) = store.runs("train")
    assert run.info.status == "FINISHED"
    assert store.steps(run, "epoch_loss") == [1, 2] and store.steps(run, "val_accuracy") == [1, 2]
