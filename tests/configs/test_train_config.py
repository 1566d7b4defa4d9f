"""configs/train.json and configs/evaluate.json run by MONAI's bundle runner, as users run them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from monai.bundle import ConfigWorkflow

from tests.conftest import BACKBONE, CLASS_NAMES, ROOT, SHARED_CXR, requires_shared
from tests.helpers import bundle_in_process, run_bundle, start

TRAIN = "configs/train.json"
EVALUATE = "['configs/train.json','configs/evaluate.json']"
SMALL = ["--image_size", "32", "--batch_size", "4", "--num_workers", "0"]


def out_args(tmp_path, dataset_dir) -> list[str]:
    return [
        "--dataset_dir",
        str(dataset_dir),
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--output_dir",
        str(tmp_path / "eval"),
    ]


def test_properties_and_ids_follow_model_zoo(tiny_dataset, tmp_path):
    wf = ConfigWorkflow(
        config_file=str(ROOT / TRAIN),
        meta_file=str(ROOT / "configs/metadata.json"),
        logging_file=str(ROOT / "configs/logging.conf"),
        workflow_type="train",
        dataset_dir=str(tiny_dataset),
        ckpt_dir=str(tmp_path / "m"),
        output_dir=str(tmp_path / "e"),
    )
    wf.initialize()
    assert wf.check_properties() in (None, [])  # every required train property resolves
    assert wf.parser.get_parsed_content("train#trainer#max_epochs") == 30
    wf.finalize()


def test_train_then_evaluate_writes_metrics_and_plots(trained_tiny, evaluated_tiny):
    assert "epoch 2/2: train_loss" in trained_tiny.proc.stdout and "val_auc" in trained_tiny.proc.stdout
    state = torch.load(trained_tiny.models / "model.pt", weights_only=True)
    assert any(k.startswith("encoder.") for k in state) and "classifier.3.weight" in state  # a plain state_dict
    metrics = json.loads((evaluated_tiny.output / "metrics.json").read_text())
    for key in ("auc_macro", "accuracy", "hm", "dice_lung", "confusion_matrix", "per_class"):
        assert key in metrics, key
    assert set(metrics["per_class"]) == set(CLASS_NAMES)
    assert set(metrics["per_class"]["covid19"]) >= {"auc", "sensitivity", "specificity"}
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["num_images"] > 0
    assert (evaluated_tiny.output / "roc.png").stat().st_size > 1000
    assert (evaluated_tiny.output / "confusion_matrix.png").stat().st_size > 1000


def test_pretrained_ckpt_is_loaded_and_reported(tiny_dataset, tmp_path):
    from bundle.atomic import atomic_save
    from bundle.networks import MultiTaskNet

    encoder = {k: v for k, v in MultiTaskNet(4, BACKBONE).state_dict().items() if k.startswith("encoder.")}
    atomic_save(encoder, tmp_path / "p.pt")
    proc = run_bundle(
        "run",
        "--config_file",
        TRAIN,
        "--max_epochs",
        "1",
        "--pretrained_ckpt",
        str(tmp_path / "p.pt"),
        *out_args(tmp_path, tiny_dataset),
        *SMALL,
    )
    assert "keys matched (classifier 0/2, decoder 0/" in proc.stdout
    assert f"encoder {len(encoder)}/{len(encoder)}, segmentation_head 0/2)" in proc.stdout


def test_bad_datalist_stops_before_training_with_named_entries(tiny_dataset, tmp_path):
    path = tiny_dataset / "datalist.json"
    content = json.loads(path.read_text())
    content["training"][2]["image"] = "images/does_not_exist.png"
    (tiny_dataset / "images" / "c0_1.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage")  # corrupt image
    path.write_text(json.dumps(content))
    proc = bundle_in_process("run", "--config_file", TRAIN, *out_args(tmp_path, tiny_dataset), *SMALL)
    assert proc.returncode != 0
    assert "training[2]" in proc.stderr and "does_not_exist.png): image file not found" in proc.stderr
    assert "training[1]" in proc.stderr and "c0_1.png" in proc.stderr and "cannot decode" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    # the run's lock made the folder; nothing was written in it but the record of the files found sound
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["cache"]
    assert [p.name for p in (tmp_path / "models" / "cache").iterdir()] == ["checked_files.json"]


def read_epoch(path) -> int:
    trainer = torch.load(path, weights_only=True)["trainer"]  # ignite keeps the iteration count
    return int(trainer["iteration"]) // int(trainer["epoch_length"])


@pytest.mark.slow
def test_interrupted_training_resumes_from_last_checkpoint(tiny_dataset, tmp_path):
    args = ["run", "--config_file", TRAIN, *out_args(tmp_path, tiny_dataset), *SMALL]
    last = tmp_path / "models" / "checkpoint.pt"
    command = [sys.executable, "-m", "monai.bundle", *args, "--max_epochs", "200"]
    proc = start(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not (last.exists() and read_epoch(last) >= 2):
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)  # no chance to clean up: as a crash or a lost machine
        proc.wait()
    done = read_epoch(last)
    assert 2 <= done < 200
    resumed = run_bundle(*args, "--max_epochs", str(done + 2), "--keep_resume_state", "true")
    assert f"resuming from {last}" in resumed.stdout
    assert f"epoch {done + 1}/" in resumed.stdout and f"epoch {done + 2}/" in resumed.stdout
    assert "epoch 1/" not in resumed.stdout
    assert read_epoch(last) == done + 2
    state = torch.load(last, weights_only=True)
    assert {"network", "optimizer", "lr_scheduler", "trainer", "checkpointer"} <= set(state)


@pytest.mark.slow  # a whole epoch and an evaluation on the real collection
@requires_shared
def test_real_collection_train_and_evaluate(tmp_path):
    args = out_args(tmp_path, SHARED_CXR) + ["--image_size", "64"]
    run_bundle("run", "--config_file", TRAIN, "--max_epochs", "1", *args)
    run_bundle("run", "--config_file", EVALUATE, *args)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["num_images"] > 100 and metrics["dice_images"] > 10
    assert 0.5 < metrics["auc_macro"] <= 1.0 and 0.0 < metrics["dice_lung"] <= 1.0


@pytest.mark.slow  # two real commands: multi-label training, then its evaluation
@pytest.mark.parametrize("multi_label", [True])
def test_multilabel_training(tmp_path, multi_label):
    from tests.conftest import write_dataset

    path = write_dataset(tmp_path / "ml", n_per_class=6)
    content = json.loads(path.read_text())
    for e in content["training"]:
        e["label"] = [int(e["label"] == 1), int(e["label"] in (2, 3)), int(e["label"] == 3)]
    path.write_text(json.dumps(content))
    classes = "['pneumonia','infection','covid19']"
    args = out_args(tmp_path, tmp_path / "ml") + SMALL + ["--class_names", classes, "--multi_label", "True"]
    run_bundle("run", "--config_file", TRAIN, "--max_epochs", "1", *args)
    run_bundle("run", "--config_file", EVALUATE, *args)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics["per_class"]) == {"pneumonia", "infection", "covid19"}
    assert len(metrics["confusion_matrix"]) == 3 and metrics["confusion_matrix"][0][0].__len__() == 2
