"""Checkpoints: atomic writes, weights-only loads, pretrained transfer with a report, resume that survives damage."""

from __future__ import annotations

import errno
import logging
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader
from torch import nn

from bundle.atomic import atomic_save
from bundle.checkpoints import (
    TrainingCheckpointer,
    WeightsError,
    check_weights,
    load_pretrained,
    load_weights,
    previous_path,
)
from bundle.errors import UserError, set_debug
from bundle.networks import MultiTaskNet
from tests.conftest import ROOT, copy_models, write_dataset
from tests.helpers import bundle_in_process, remount, run_bundle, small_disk

TRAIN = "configs/train.json"


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    """fail() raises UserError (not the debug variant) whatever the environment says."""
    for key in ("CXR_DEBUG", "MONAI_DEBUG_CONFIG"):
        monkeypatch.delenv(key, raising=False)
    set_debug(False)


def test_atomic_save_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    atomic_save({"a": torch.ones(2)}, path)
    assert torch.equal(load_weights(path)["a"], torch.ones(2))

    def broken_save(obj, f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError):
        atomic_save({"a": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(load_weights(path)["a"], torch.ones(2))  # old file intact
    assert os.listdir(tmp_path) == ["m.pt"]  # no temporary left behind


class Custom:
    """An arbitrary picklable object: weights_only loading must refuse it."""


class Planted:
    """Unpickling it would create the file ``marker``: proof that a loader ran code from a weights file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_load_weights_refuses_pickled_objects(tmp_path):
    torch.save({"obj": Custom()}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError, match="holds pickled Python objects besides tensors .*Custom"):
        load_weights(tmp_path / "evil.pt")


def test_load_weights_reads_safetensors_and_names_a_broken_one(tmp_path):
    from safetensors.torch import save_file

    save_file({"encoder.w": torch.arange(6.0).reshape(2, 3)}, str(tmp_path / "model.safetensors"))
    state = load_weights(tmp_path / "model.safetensors")
    assert list(state) == ["encoder.w"] and torch.equal(state["encoder.w"], torch.arange(6.0).reshape(2, 3))
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="cut.safetensors: is not a readable .safetensors file, or is truncated"):
        load_weights(tmp_path / "cut.safetensors", name="pretrained_ckpt")


def test_load_pretrained_reports_matches(tmp_path, caplog):
    source = MultiTaskNet(num_classes=1, seg_channels=1)  # e.g. a reconstruction network
    state = {f"module.{k}": v for k, v in source.state_dict().items()}  # DDP prefix is stripped
    atomic_save(state, tmp_path / "p.pt")
    target = MultiTaskNet(num_classes=4)
    with caplog.at_level(logging.INFO):
        report = load_pretrained(target, tmp_path / "p.pt")
    enc = [k for k in target.state_dict() if k.startswith("encoder.")]
    assert set(enc) <= set(report["matched"])
    assert "segmentation_head.conv2d.weight" in report["mismatched"] or any(
        k.startswith("segmentation_head") for k in report["mismatched"]
    )
    assert "classifier.3.weight" in report["mismatched"]
    torch.testing.assert_close(target.state_dict()[enc[0]], source.state_dict()[enc[0]])
    assert "keys matched" in caplog.text and "encoder" in caplog.text


def test_load_pretrained_rejects_unrelated_file(tmp_path):
    atomic_save({"foo.weight": torch.zeros(3)}, tmp_path / "x.pt")
    with pytest.raises(UserError, match=r"pretrained_ckpt .*x\.pt: no key matches the network \(the file's keys: foo"):
        load_pretrained(MultiTaskNet(num_classes=2), tmp_path / "x.pt")
    with pytest.raises(UserError, match=r"pretrained_ckpt .*missing\.pt: file not found; pass another"):
        load_pretrained(MultiTaskNet(num_classes=2), tmp_path / "missing.pt")


# ---- damaged, foreign and unsafe weights files --------------------------------------------------------------------


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def damaged(kind: str, folder: Path) -> Path:
    """A weights file damaged in the way ``kind`` says."""
    path = folder / f"{kind}.pt"
    good = folder / "good.pt"
    atomic_save(tiny_net().state_dict(), good)
    if kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(os.urandom(4096))
    elif kind == "text":
        path.write_text("model weights\nwere here\n")
    elif kind == "lfs":
        path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 1000\n")
    elif kind == "folder":
        path.mkdir()
    elif kind == "list":
        torch.save([torch.ones(2)], path)
    elif kind == "not_tensors":
        torch.save({"0.weight": 1.5, "note": "hello"}, path)
    elif kind == "non_finite":
        state = tiny_net().state_dict()
        state["0.weight"][0, 0] = float("nan")
        torch.save(state, path)
    return path


PROBLEMS = {
    "missing": "file not found",
    "truncated": "is truncated or corrupt",
    "empty": "is empty (0 bytes)",
    "random": "is not a PyTorch weights file, or is corrupt",
    "text": "is not a PyTorch weights file, or is corrupt (it is text, starting 'model weights')",
    "lfs": "is a Git LFS pointer, not the weights: fetch them with `git lfs pull`",
    "folder": "is a folder, not a weights file",
    "list": "holds a list, not a state_dict",
    "not_tensors": "is not a state_dict of tensors: 0.weight, note are not tensors",
    "non_finite": "holds NaN or infinite values in 1 tensor (0.weight)",
}


@pytest.mark.parametrize("kind", sorted(PROBLEMS))
def test_every_bad_weights_file_stops_with_one_message(kind, tmp_path):
    path = tmp_path / "missing.pt" if kind == "missing" else damaged(kind, tmp_path)
    with pytest.raises(UserError) as pretrained:
        load_pretrained(tiny_net(), path, name="pretrained_ckpt")
    with pytest.raises(UserError) as model:
        check_weights(path, tiny_net())
    for error, name in ((pretrained, "pretrained_ckpt"), (model, "ckpt_file")):
        message = str(error.value)
        assert message.startswith(f"{name} {path}: {PROBLEMS[kind]}"), message
        assert "\n" not in message and len(message) < 600
    if kind == "missing":
        assert "train first" in str(model.value)


def test_check_weights_requires_a_strict_match(tmp_path):
    other = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 5))  # another number of classes
    atomic_save(other.state_dict(), tmp_path / "five.pt")
    with pytest.raises(UserError) as e:
        check_weights(tmp_path / "five.pt", tiny_net(), name="ckpt_dir")
    assert str(e.value).startswith(f"ckpt_dir {tmp_path / 'five.pt'}: does not match the network")
    assert "2 shapes differ (2.weight [5, 4] in the file, [2, 4] in the network; 2.bias [5] in the file" in str(e.value)
    assert "--ckpt_dir" in str(e.value)
    partial = {k: v for k, v in tiny_net().state_dict().items() if not k.startswith("2.")}
    atomic_save({**partial, "head.weight": torch.zeros(1)}, tmp_path / "partial.pt")
    with pytest.raises(
        UserError, match=r"2 of the network's keys missing \(2 2\); 1 keys the network lacks \(head 1\)"
    ):
        check_weights(tmp_path / "partial.pt", tiny_net())
    # without a network: readability and finiteness only
    assert check_weights(tmp_path / "five.pt") == str(tmp_path / "five.pt")


@pytest.mark.parametrize("form", ["plain", "model", "network", "module", "compiled"])
def test_check_weights_hands_checkpoint_loader_a_file_it_loads(form, tmp_path):
    source = tiny_net()
    with torch.no_grad():
        source[0].weight.add_(1.0)
    state = source.state_dict()
    written = {
        "plain": state,
        "model": {"model": state, "epoch": 3},
        "network": {"network": state, "optimizer": {"state": {}, "param_groups": []}},
        "module": {f"module.{k}": v for k, v in state.items()},
        "compiled": {f"_orig_mod.{k}": v for k, v in state.items()},
    }[form]
    path = tmp_path / "model.pt"
    torch.save(written, path)
    target = tiny_net()
    load_path = check_weights(path, target)
    assert (load_path == str(path)) is (form in ("plain", "model"))  # others: a plain copy
    engine = Engine(lambda e, b: None)
    CheckpointLoader(load_path=load_path, load_dict={"model": target}, map_location="cpu").attach(engine)
    engine.run([0], max_epochs=1)
    torch.testing.assert_close(target.state_dict(), state)


def planted_files(folder: Path, marker: Path) -> dict[str, Path]:
    """A torch zip file and a raw pickle that would create ``marker`` when unpickled."""
    zipped, raw = folder / "planted.pt", folder / "planted.pkl"
    torch.save({"0.weight": Planted(marker)}, zipped)  # pickling stores the call; nothing runs here
    with open(raw, "wb") as f:
        pickle.dump({"0.weight": Planted(marker)}, f, protocol=2)
    assert not marker.exists()
    return {"zip": zipped, "pickle": raw}


@pytest.mark.parametrize("form", ["zip", "pickle"])
def test_no_loader_runs_code_from_a_weights_file(form, tmp_path, caplog):
    marker = tmp_path / "code_ran"
    path = planted_files(tmp_path, marker)[form]
    with pytest.raises(WeightsError, match="holds pickled Python objects besides tensors"):
        load_weights(path)
    assert not marker.exists()
    for loader, name in (
        (lambda: load_pretrained(tiny_net(), path), "pretrained_ckpt"),
        (lambda: check_weights(path, tiny_net()), "ckpt_file"),
        (lambda: check_weights(path), "ckpt_file"),
    ):
        with pytest.raises(UserError) as e:
            loader()
        assert str(e.value).startswith(f"{name} {path}: holds pickled Python objects besides tensors (io.open)")
        assert "refused unread" in str(e.value)
        assert not marker.exists()
    # as a resume state, and as the previous one too: both refused, nothing ran
    ckpt_dir = tmp_path / "models"
    ckpt_dir.mkdir()
    shutil.copy(path, ckpt_dir / "checkpoint.pt")
    shutil.copy(path, ckpt_dir / "checkpoint.prev.pt")
    with pytest.raises(UserError) as e:
        TinyRun(ckpt_dir).attach()
    assert f"{ckpt_dir / 'checkpoint.pt'} holds pickled Python objects" in str(e.value)
    assert not marker.exists()


# ---- resume state: rotation, damage, validation at attach --------------------------------------------------------


class TinyRun:
    """A small ignite training (a 3-layer network, SGD, cosine schedule) checkpointed by ``TrainingCheckpointer``.

    It keeps its resume states when it ends (``keep``), so that the tests can read and extend them."""

    def __init__(
        self, ckpt_dir: Path, lr: float = 0.1, resume: bool | str = True, width: int = 4, keep: bool = True
    ) -> None:
        torch.manual_seed(0)
        self.network = nn.Sequential(nn.Linear(3, width), nn.BatchNorm1d(width), nn.Linear(width, 1))
        self.optimizer = torch.optim.SGD(self.network.parameters(), lr=lr, momentum=0.9)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=10)
        self.trainer = Engine(self.step)
        self.trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: self.scheduler.step())
        self.epochs_run: list[int] = []
        self.trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: self.epochs_run.append(e.state.epoch))
        self.checkpointer = TrainingCheckpointer(
            str(ckpt_dir),
            {"network": self.network, "optimizer": self.optimizer, "lr_scheduler": self.scheduler},
            self.network,
            resume=resume,
            keep_resume_state=keep,
        )
        self.data = [torch.randn(4, 3, generator=torch.Generator().manual_seed(i)) for i in range(3)]

    def step(self, engine: Engine, batch: torch.Tensor) -> dict:
        self.optimizer.zero_grad()
        loss = (self.network(batch) - 1).pow(2).mean()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach()}

    def attach(self) -> TinyRun:
        self.checkpointer.attach(self.trainer)
        return self

    def run(self, max_epochs: int) -> TinyRun:
        self.trainer.run(self.data, max_epochs=max_epochs)
        return self


def test_final_metrics_are_the_best_validation_of_the_model_file(tmp_path):
    assert TinyRun(tmp_path / "alone").checkpointer.final_metrics() == {}  # no validator: nothing was selected
    validator = Engine(lambda engine, batch: None)
    checkpointer = TrainingCheckpointer(str(tmp_path), {}, nn.Linear(1, 1), validator=validator, key_metric="val_auc")
    assert checkpointer.final_metrics() == {}  # not validated yet
    checkpointer.load_state_dict({"best_metric": 0.8, "best_epoch": 3})  # as a resumed run restores it
    assert checkpointer.final_metrics() == {"best_val_auc": 0.8, "best_epoch": 3.0}


def test_a_finished_run_removes_its_resume_states_and_a_stopped_one_keeps_them(tmp_path):
    stopped = TinyRun(tmp_path / "stopped", keep=False).attach()
    stopped.trainer.add_event_handler(Events.EPOCH_COMPLETED(once=2), lambda e: e.terminate())
    stopped.run(3)
    # stopped before its last epoch (killed, diverged): the states stay, for the rerun that continues it
    assert sorted(p.name for p in (tmp_path / "stopped").iterdir()) == [
        "checkpoint.prev.pt",
        "checkpoint.pt",
        "model.pt",
    ]
    TinyRun(tmp_path / "stopped", keep=False).attach().run(3)  # resumes after epoch 2, then ends: states removed
    assert sorted(p.name for p in (tmp_path / "stopped").iterdir()) == ["model.pt"]
    TinyRun(tmp_path / "kept", keep=True).attach().run(2)
    assert {"checkpoint.pt", "checkpoint.prev.pt", "model.pt"} <= {p.name for p in (tmp_path / "kept").iterdir()}


def saved_epoch(path: Path) -> int:
    trainer = torch.load(path, weights_only=True)["trainer"]
    return int(trainer["iteration"]) // int(trainer["epoch_length"])


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_resume_state_is_rotated_before_each_write(tmp_path):
    TinyRun(tmp_path).attach().run(3)
    assert saved_epoch(tmp_path / "checkpoint.pt") == 3 and saved_epoch(tmp_path / "checkpoint.prev.pt") == 2
    assert previous_path(tmp_path / "checkpoint.pt") == str(tmp_path / "checkpoint.prev.pt")
    assert previous_path("/x/pretrain_simclr_checkpoint.pt") == "/x/pretrain_simclr_checkpoint.prev.pt"
    assert set(os.listdir(tmp_path)) == {"checkpoint.pt", "checkpoint.prev.pt", "model.pt"}  # no temporaries


def test_damaged_latest_state_falls_back_to_the_previous_one(tmp_path, caplog):
    TinyRun(tmp_path).attach().run(3)
    truncate(tmp_path / "checkpoint.pt")
    with caplog.at_level(logging.INFO):
        run = TinyRun(tmp_path).attach()  # read and checked here, before any work
    last, prev = tmp_path / "checkpoint.pt", tmp_path / "checkpoint.prev.pt"
    assert f"resume state {last} is truncated or corrupt" in caplog.text
    assert f"resuming from the previous one, {prev}" in caplog.text
    run.run(3)
    assert run.epochs_run == [3]  # from epoch 2's state
    assert saved_epoch(last) == 3
    assert saved_epoch(prev) == 2  # the damaged file was overwritten, not kept as the previous state
    TinyRun(tmp_path).attach().run(4)
    assert saved_epoch(last) == 4 and saved_epoch(prev) == 3


def test_missing_latest_state_after_an_interrupted_write(tmp_path, caplog):
    TinyRun(tmp_path).attach().run(2)
    os.remove(tmp_path / "checkpoint.pt")  # killed between the rotation and the new write
    with caplog.at_level(logging.WARNING):
        run = TinyRun(tmp_path).attach().run(3)
    assert "checkpoint.pt is missing (a write was interrupted?); resuming from the previous one" in caplog.text
    assert run.epochs_run == [2, 3]


@pytest.mark.parametrize(
    "damage, problem",
    [
        (truncate, "is truncated or corrupt"),
        (
            lambda p: atomic_save(tiny_net().state_dict(), p),
            "lacks network, optimizer, lr_scheduler, trainer, checkpointer",
        ),
        (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
    ],
)
def test_no_usable_resume_state_stops_with_how_to_start_over(damage, problem, tmp_path):
    TinyRun(tmp_path).attach().run(2)
    last, prev = tmp_path / "checkpoint.pt", tmp_path / "checkpoint.prev.pt"
    damage(last)
    truncate(prev)
    with pytest.raises(UserError) as e:
        TinyRun(tmp_path).attach()
    message = str(e.value)
    assert message.startswith(f"cannot resume training: {last} {problem}")
    assert f"; {prev} is truncated or corrupt" in message
    assert "--resume false" in message and f"delete {last} and {prev}" in message and "--ckpt_dir" in message
    TinyRun(tmp_path, resume="false").attach().run(1)  # starting over works, and writes a fresh pair
    assert saved_epoch(last) == 1 and not prev.exists()  # the unrelated previous state is gone


def test_resume_state_of_another_network_is_refused_at_attach(tmp_path):
    TinyRun(tmp_path).attach().run(2)
    with pytest.raises(UserError) as e:
        TinyRun(tmp_path, width=8).attach()
    assert "cannot restore network: 7 shapes differ (0.weight [4, 3] in the file, [8, 3] in the network" in str(e.value)


def test_non_finite_resume_state_is_not_used(tmp_path, caplog):
    TinyRun(tmp_path).attach().run(2)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    state["network"]["0.weight"][0, 0] = float("inf")
    torch.save(state, tmp_path / "checkpoint.pt")  # e.g. written before non-finite weights were refused
    with caplog.at_level(logging.WARNING):
        run = TinyRun(tmp_path).attach().run(3)
    assert "holds NaN or infinite values in 1 tensor (network.0.weight)" in caplog.text
    assert run.epochs_run == [2, 3]


def test_finished_or_longer_run_warns_and_trains_nothing(tmp_path, caplog):
    TinyRun(tmp_path).attach().run(3)
    for max_epochs, wording in ((3, "3 epochs, of max_epochs 3"), (2, "3 epochs, more than max_epochs 2")):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            run = TinyRun(tmp_path).attach().run(max_epochs)
        assert wording in caplog.text and "nothing left to train" in caplog.text
        assert run.epochs_run == []


def test_changed_learning_rate_is_kept_on_resume(tmp_path, caplog):
    first = TinyRun(tmp_path, lr=0.1).attach().run(2)
    lr_at_2 = first.optimizer.param_groups[0]["lr"]
    lrs: list[float] = []
    with caplog.at_level(logging.INFO):
        resumed = TinyRun(tmp_path, lr=0.01).attach()
        # registered after the restore, so it sees the restored optimizer
        resumed.trainer.add_event_handler(Events.STARTED, lambda _: lrs.append(resumed.optimizer.param_groups[0]["lr"]))
        resumed.run(3)
    assert "learning rate changed since" in caplog.text and "(0.1 -> 0.01)" in caplog.text
    assert lrs[0] == pytest.approx(lr_at_2 / 10)  # the same point of the schedule, scaled
    assert resumed.scheduler.base_lrs == [0.01]
    same = TinyRun(tmp_path, lr=0.01).attach().run(4)  # now saved with 0.01: nothing to change
    assert same.epochs_run == [4]


def test_non_finite_weights_are_never_written(tmp_path):
    run = TinyRun(tmp_path).attach()
    run.run(2)
    before = {name: (tmp_path / name).read_bytes() for name in ("checkpoint.pt", "checkpoint.prev.pt", "model.pt")}

    def poison(engine):
        if engine.state.epoch == 3:
            with torch.no_grad():
                run.network[2].weight.fill_(float("nan"))

    run = TinyRun(tmp_path)
    run.trainer.add_event_handler(Events.EPOCH_COMPLETED, poison)  # before the checkpointer's handlers
    run.attach()
    with pytest.raises(UserError) as e:
        run.run(4)
    message = str(e.value)
    assert message.startswith(f"refusing to write {tmp_path / 'checkpoint.pt'}: after epoch 3 the weights hold NaN")
    assert "network.2.weight" in message and "training diverged" in message and "lower --learning_rate" in message
    assert {name: (tmp_path / name).read_bytes() for name in before} == before  # old files intact


def test_non_finite_model_is_refused(tmp_path):
    run = TinyRun(tmp_path).attach()
    with torch.no_grad():
        run.network[0].bias.fill_(float("inf"))
    with pytest.raises(UserError, match=r"refusing to write .*model\.pt: .*No such file existed yet"):
        run.checkpointer._save_best_unconditionally(run.trainer)
    assert not (tmp_path / "model.pt").exists()


def test_full_disk_keeps_the_previous_state(tmp_path, monkeypatch):
    run = TinyRun(tmp_path).attach().run(2)

    def full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(UserError) as e:
        TinyRun(tmp_path).attach().run(3)
    last, prev = tmp_path / "checkpoint.pt", tmp_path / "checkpoint.prev.pt"
    assert str(e.value) == (
        f"cannot write the resume state {last}: the disk is full; the previous model.pt and the resume state from "
        f"epoch 2 ({prev}) are kept. "
        f"Free some space on the disk of {tmp_path}, or pass another --ckpt_dir; then rerun the same command: it "
        "continues after epoch 2"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.prev.pt", "model.pt"]  # no temporary left
    monkeypatch.undo()
    run = TinyRun(tmp_path).attach().run(3)  # resumes from the kept state
    assert run.epochs_run == [3]


# ---- the real command --------------------------------------------------------------------------------------------


def rerun_args(run, tmp_path: Path) -> list[str]:
    """The shared tiny run's settings, its outputs under ``tmp_path`` (the run's own files stay untouched)."""
    return [*run.args, "--output_dir", str(tmp_path / "eval")]


def test_real_run_resumes_from_the_previous_state_when_the_latest_is_truncated(trained_tiny, tmp_path):
    ckpt_dir = copy_models(trained_tiny, tmp_path / "models")
    truncate(ckpt_dir / "checkpoint.pt")
    args = rerun_args(trained_tiny, tmp_path)
    proc = run_bundle(
        "run", "--config_file", TRAIN, "--ckpt_dir", str(ckpt_dir), "--max_epochs", "3", "--keep_resume_state", "true",
        *args,
    )  # fmt: skip
    last, prev = ckpt_dir / "checkpoint.pt", ckpt_dir / "checkpoint.prev.pt"
    assert f"resume state {last} is truncated or corrupt" in proc.stdout
    assert f"resuming from the previous one, {prev}" in proc.stdout
    assert "epoch 1/3:" not in proc.stdout  # epoch 1's state: epochs 2 and 3 trained
    assert "epoch 2/3:" in proc.stdout and "epoch 3/3:" in proc.stdout
    assert saved_epoch(last) == 3 and saved_epoch(prev) == 2  # the damaged file was not kept


def test_real_run_with_no_usable_resume_state_ends_in_one_message(trained_tiny, tmp_path):
    ckpt_dir = copy_models(trained_tiny, tmp_path / "models")
    truncate(ckpt_dir / "checkpoint.pt")
    (ckpt_dir / "checkpoint.prev.pt").write_bytes(os.urandom(2048))
    args = rerun_args(trained_tiny, tmp_path)
    proc = bundle_in_process("run", "--config_file", TRAIN, "--ckpt_dir", str(ckpt_dir), "--max_epochs", "3", *args)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout + proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith(f"cannot resume training: {ckpt_dir / 'checkpoint.pt'} is truncated or corrupt")
    assert "checkpoint.prev.pt is not a PyTorch weights file, or is corrupt" in message
    assert "--resume false" in message
    assert "epoch 1/" not in proc.stdout  # stopped before any work


def test_real_inference_with_a_damaged_model_file_ends_in_one_message(trained_tiny, tmp_path):
    bad = tmp_path / "model.pt"
    shutil.copy(trained_tiny.models / "model.pt", bad)
    truncate(bad)
    (tmp_path / "in").mkdir()
    shutil.copy(next((trained_tiny.data / "images").glob("*.png")), tmp_path / "in")
    proc = bundle_in_process(
        "run",
        "--config_file",
        str(ROOT / "configs" / "inference.json"),
        "--bundle_root",
        str(ROOT),
        "--dataset_dir",
        str(tmp_path / "in"),
        "--output_dir",
        str(tmp_path / "out"),
        "--ckpt_file",
        str(bad),
        "--image_size",
        "32",
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"ckpt_file {bad}: is truncated or corrupt")


# ---- a full or read-only disk under ckpt_dir ---------------------------------------------------------------------


def test_read_only_ckpt_dir_keeps_the_previous_state(tmp_path):
    with small_disk(tmp_path / "models", 1024) as ckpt_dir:
        TinyRun(ckpt_dir).attach().run(2)
        remount(ckpt_dir, "ro")
        with pytest.raises(UserError) as e:
            TinyRun(ckpt_dir).attach().run(3)
        assert str(e.value).startswith(
            f"cannot write the previous resume state {ckpt_dir / 'checkpoint.prev.pt'}: no permission to write there "
            "(the disk is read-only); the previous model.pt and the resume state from epoch 2"
        )
        assert str(e.value).endswith("then rerun the same command: it continues after epoch 2")
        remount(ckpt_dir, "rw")
        assert TinyRun(ckpt_dir).attach().run(3).epochs_run == [3]


def test_real_run_on_a_full_disk_ends_in_one_message_and_resumes(tmp_path):
    """A real training whose second resume state does not fit: one message, the epoch 1 files kept, a rerun on a
    disk with room continues after epoch 1."""
    write_dataset(tmp_path / "data", n_per_class=2)
    args = ["--config_file", str(ROOT / TRAIN), "--bundle_root", str(ROOT), "--dataset_dir", str(tmp_path / "data")]
    args += ["--image_size", "32", "--batch_size", "4", "--num_workers", "0", "--amp", "false"]
    args += ["--multi_label", "false", "--output_dir", str(tmp_path / "eval")]
    with small_disk(tmp_path / "models", 400 * 1024) as ckpt_dir:
        run_bundle("run", *args, "--ckpt_dir", str(ckpt_dir), "--max_epochs", "1", "--keep_resume_state", "true")
        model, state = (ckpt_dir / "model.pt").stat().st_size, (ckpt_dir / "checkpoint.pt").stat().st_size
        used = sum(p.stat().st_size for p in ckpt_dir.iterdir())
        # room for another model file (the next best one fits) but not for another resume state (larger)
        remount(ckpt_dir, f"size={(used + (model + state) // 2) // 1024}k")
        proc = run_bundle("run", *args, "--ckpt_dir", str(ckpt_dir), "--max_epochs", "3", check=False)
        assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "Traceback" not in proc.stdout + proc.stderr
        message = proc.stderr.strip().splitlines()[-1]
        last, prev = ckpt_dir / "checkpoint.pt", ckpt_dir / "checkpoint.prev.pt"
        assert message.startswith(f"cannot write the resume state {last}: the disk is full; the previous model.pt")
        assert f"and the resume state from epoch 1 ({prev}) are kept. Free some space on the disk of {ckpt_dir}" in (
            message
        )
        assert message.endswith("or pass another --ckpt_dir; then rerun the same command: it continues after epoch 1")
        left = sorted(p.name for p in ckpt_dir.iterdir() if not p.name.endswith(".recipe.json") and p.name != "cache")
        assert left == ["checkpoint.prev.pt", "model.pt"]  # no temporary file, no lock file
        load_weights(ckpt_dir / "model.pt")
        assert saved_epoch(prev) == 1

        remount(ckpt_dir, "size=400m")
        proc = run_bundle("run", *args, "--ckpt_dir", str(ckpt_dir), "--max_epochs", "2", "--keep_resume_state", "true")
        assert "epoch 1/" not in proc.stdout and "epoch 2/" in proc.stdout
        assert saved_epoch(last) == 2 and saved_epoch(prev) == 1
