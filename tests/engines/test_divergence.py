"""bundle.engines.divergence: a diverging run stops with one message, and user errors pass ignite untouched."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from ignite.engine import Engine, Events
from monai.handlers import StatsHandler
from torch import nn

from bundle.engines.divergence import DivergenceGuard, loss_value
from bundle.engines.user_errors import UserErrorPassThrough, pass_user_errors
from bundle.errors import DebugUserError, UserError, fail, set_debug
from tests.conftest import run_bundle


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    for key in ("CXR_DEBUG", "MONAI_DEBUG_CONFIG"):
        monkeypatch.delenv(key, raising=False)
    set_debug(False)


def losses_engine() -> Engine:
    """An engine whose iterations return ``{"loss": batch}``: its data is the list of losses."""
    return Engine(lambda engine, loss: {"loss": loss})


def optimizer(lr: float = 0.5) -> torch.optim.Optimizer:
    return torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=lr)


@pytest.mark.parametrize(
    "bad, told",
    [
        (float("nan"), "nan"),
        (torch.tensor(float("inf")), "inf"),
        (torch.tensor([1.0, float("nan")]), "non-finite in 1 of 2 elements"),
    ],
)
def test_non_finite_loss_stops_at_its_iteration(bad, told):
    data = [torch.tensor(1.0)] * 5 + [torch.tensor(2.0), bad, torch.tensor(1.0)]
    engine = losses_engine()
    DivergenceGuard(optimizer(0.5)).attach(engine)
    with pytest.raises(UserError) as e:
        engine.run(data, max_epochs=3)
    message = str(e.value)
    assert message.startswith(f"training diverged at epoch 1, iteration 7/8: the loss is {told}. ")
    assert "The learning rate (now 0.5) is likely too high" in message
    assert "--amp false" not in message
    assert "no epoch had completed: rerun with a lower --learning_rate" in message
    assert engine.state.iteration == 7


def test_message_names_the_epoch_the_resume_state_and_amp():
    data = [torch.tensor(0.3)] * 4 + [torch.tensor(float("nan"))]
    engine = Engine(lambda e, batch: batch)  # a bare tensor as output
    DivergenceGuard(optimizer(1e-2), amp="true").attach(engine)
    with pytest.raises(UserError) as e:
        engine.run(data, max_epochs=2, epoch_length=3)
    message = str(e.value)
    assert message.startswith("training diverged at epoch 2, iteration 2/3: the loss is nan.")
    assert (
        "The learning rate (now 0.01) is likely too high, or mixed precision overflowed float16 (try --amp false, "
        "or --amp_dtype bfloat16 on a GPU with it)" in message
    )
    assert "the files of epoch 1 stay in ckpt_dir: rerun with a lower --learning_rate to resume from them" in message


def test_bfloat16_message_names_precision_not_overflow():
    engine = Engine(lambda e, batch: batch)
    DivergenceGuard(optimizer(1e-2), amp=True, amp_dtype="bfloat16").attach(engine)
    with pytest.raises(UserError) as e:
        engine.run([torch.tensor(float("nan"))], max_epochs=1)
    message = str(e.value)
    assert "mixed precision lost too much precision in bfloat16 (try --amp false)" in message
    assert "float16 overflow" not in message and "overflowed" not in message


def test_amp_strings_and_finite_runs():
    assert DivergenceGuard(amp="false").amp is False and DivergenceGuard(amp="True").amp is True
    with pytest.raises(ValueError, match="amp must be true or false"):
        DivergenceGuard(amp="maybe")
    engine = Engine(lambda e, batch: {"loss": batch, "pred": torch.zeros(2)})
    DivergenceGuard().attach(engine)
    engine.run([torch.tensor(1e30), 3.0, torch.tensor(0.0)], max_epochs=2)  # large but finite: not divergence
    assert engine.state.epoch == 2


def test_loss_value_reads_this_bundles_outputs():
    loss = torch.tensor(0.5)
    assert loss_value({"loss": loss, "pred": 1}) is loss
    assert loss_value([{"loss": loss}, {"loss": loss}]) is loss  # decollated
    assert loss_value(loss) is loss and loss_value(0.25) == 0.25
    assert loss_value(None) is None and loss_value({"pred": 1}) is None and loss_value("x") is None


def test_non_finite_weights_stop_before_validation_runs_on_them():
    network = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    opt = torch.optim.SGD(network.parameters(), lr=0.1)

    def step(engine, batch):
        if engine.state.iteration == 3:  # an overflow in the running statistics while the loss is finite
            network[1].running_var.fill_(float("inf"))
        return {"loss": torch.tensor(1.0)}

    engine = Engine(step)
    engine.network = network  # as MONAI's trainers have it (set after their handlers are attached)
    DivergenceGuard(opt).attach(engine)
    validated = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: validated.append(e.state.epoch))
    with pytest.raises(UserError) as e:
        engine.run([0, 1], max_epochs=3)
    assert str(e.value).startswith(
        "training diverged at epoch 2, iteration 2/2: 1 of the network's 6 parameter and buffer tensors hold NaN or "
        "infinite values (1.running_var), while the loss was still finite."
    )
    assert validated == [1]  # epoch 2 stopped before the later handler


def test_without_a_network_the_optimizer_parameters_are_checked():
    opt = optimizer(3.0)
    engine = Engine(lambda e, b: 1.0)

    @engine.on(Events.ITERATION_COMPLETED)
    def blow_up(e):
        with torch.no_grad():
            opt.param_groups[0]["params"][0].fill_(math.inf)

    DivergenceGuard(opt).attach(engine)
    with pytest.raises(UserError, match=r"1 of the network's 2 .*\(param_groups.0.params.0\).*\(now 3\)"):
        engine.run([0], max_epochs=1)


def with_stats(raise_what: BaseException) -> Engine:
    """An engine with the guard, then MONAI's StatsHandler, whose second iteration raises ``raise_what``."""

    def step(engine, batch):
        if engine.state.iteration == 2:
            raise raise_what
        return {"loss": torch.tensor(1.0)}

    engine = Engine(step)
    DivergenceGuard().attach(engine)
    StatsHandler(name="stats", output_transform=lambda out: out["loss"].item()).attach(engine)
    return engine


def test_user_error_inside_a_run_passes_without_a_traceback(caplog):
    try:
        fail("ckpt_dir /x: cannot be written")
    except UserError as e:
        error = e
    engine = with_stats(error)
    with caplog.at_level(logging.INFO), pytest.raises(UserError) as e:
        engine.run([0, 1, 2], max_epochs=1)
    assert e.value is error
    assert "Traceback" not in caplog.text and "Exception: " not in caplog.text  # StatsHandler never saw it


def test_debug_user_error_passes_too(caplog):
    engine = with_stats(DebugUserError("ckpt_dir /x: cannot be written"))
    with caplog.at_level(logging.INFO), pytest.raises(DebugUserError):
        engine.run([0, 1, 2], max_epochs=1)
    assert "Traceback" not in caplog.text  # Python prints it, with its cause, when the run ends


def test_bugs_keep_their_traceback_once(caplog):
    engine = with_stats(ZeroDivisionError("a bug"))
    with caplog.at_level(logging.INFO), pytest.raises(ZeroDivisionError):
        engine.run([0, 1, 2], max_epochs=1)
    assert caplog.text.count("Traceback") == 1 and "Exception: a bug" in caplog.text


def test_pass_through_is_installed_once():
    engine = Engine(lambda e, b: None)
    UserErrorPassThrough().attach(engine)
    DivergenceGuard().attach(engine)
    handlers = [h for h, *_ in engine._event_handlers[Events.EXCEPTION_RAISED]]
    assert handlers.count(pass_user_errors) == 1


@pytest.mark.slow  # two trainings: one until it diverges, one that resumes from its files
def test_real_training_that_diverges_stops_in_one_message_and_keeps_finite_files(tiny_dataset, tmp_path):
    # AdamW at the highest learning rate the settings allow, with full weight decay: the weights grow about
    # tenfold per step, the loss by ~100x, and the BatchNorm running variances overflow in epoch 2 (the cosine
    # schedule has halved the learning rate to 5 by then)
    ckpt_dir = tmp_path / "models"
    args = ["run", "--config_file", "configs/train.json", "--dataset_dir", str(tiny_dataset)]
    args += ["--ckpt_dir", str(ckpt_dir), "--output_dir", str(tmp_path / "eval"), "--image_size", "64"]
    args += ["--batch_size", "4", "--num_workers", "0", "--show_progress", "false", "--weight_decay", "1"]
    proc = run_bundle(*args, "--learning_rate", "10", "--max_epochs", "2", check=False)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("training diverged at epoch 2, iteration ")
    assert "learning rate (now 5) is likely too high" in message and "the files of epoch 1 stay" in message, message
    assert "epoch 1/" in proc.stdout
    model = ckpt_dir / "model.pt"
    if model.exists():  # from epoch 1, before the divergence
        state = torch.load(model, weights_only=True)
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    # the advice works: a lower learning rate resumes from epoch 1
    resumed = run_bundle(*args, "--learning_rate", "0.001", "--max_epochs", "2")
    assert "learning rate changed since" in resumed.stdout and "(10 -> 0.001)" in resumed.stdout
    assert "epoch 1/" not in resumed.stdout and "epoch 2/" in resumed.stdout
