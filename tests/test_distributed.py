"""bundle.distributed on one process, and on two CPU processes (gloo): gathered losses, MoCo's queue, handlers.

The two-process checks start real processes (``torch.multiprocessing``) that join one gloo process group, and
compare what they compute with one process holding the whole global batch.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from monai.handlers import StatsHandler
from torch import nn

from bundle import distributed
from bundle.engines.progress import IterationProgress
from bundle.errors import UserError
from bundle.networks.placement import wrap
from bundle.ssl.losses import nt_xent_loss
from bundle.ssl.moco import MoCoV2

WORLD = 2
B, D = 4, 8  # per-rank batch and embedding size of the loss checks


def test_alone_everything_is_rank_zero_of_one():
    net = nn.Linear(2, 2)
    assert distributed.rank() == 0 and distributed.world_size() == 1 and distributed.is_main_process()
    assert not distributed.is_distributed()
    assert distributed.rank_seed(7) == 7
    assert wrap(net, "cpu", sync_batch_norm=True) is net  # alone: no wrapper, no conversion
    x = torch.randn(3, 2)
    assert distributed.gather(x) is x and distributed.gather_no_grad(x) is x
    assert distributed.gather_objects({"a": 1}) == [{"a": 1}]
    handlers = [StatsHandler(iteration_log=False), IterationProgress(bar=False)]
    assert distributed.for_this_rank(handlers) == handlers and distributed.for_this_rank(None) is None


def test_unwrap_reaches_the_module_inside_wrappers():
    net = nn.Linear(2, 2)
    assert distributed.unwrap(nn.DataParallel(net)) is net
    assert distributed.unwrap(net) is net


def test_setup_without_torchrun_says_how_to_start(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UserError, match="runs under torchrun .*nproc_per_node"):
        distributed.setup()


def _global_batch() -> tuple[torch.Tensor, torch.Tensor, nn.Linear]:
    """The same (W * B, D) embedding inputs and projection on every process (seeded)."""
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(WORLD * B, D, generator=g), torch.randn(WORLD * B, D, generator=g)
    proj = nn.Linear(D, D)
    with torch.no_grad():
        proj.weight.copy_(torch.randn(D, D, generator=g))
        proj.bias.copy_(torch.randn(D, generator=g))
    return x1, x2, proj


def _single_process_reference() -> tuple[float, torch.Tensor]:
    """NT-Xent on the whole global batch in one process, and the projection's weight gradient."""
    x1, x2, proj = _global_batch()
    loss = nt_xent_loss(proj(x1), proj(x2), temperature=0.2)
    loss.backward()
    return float(loss.detach()), proj.weight.grad.clone()


def _worker(rank: int, port: int, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(100 + rank)  # ranks draw differently, as under rank_seed
        out: dict = {}
        # 1. SimCLR: each rank scores its views against the gathered global batch; DDP averages the gradients
        x1, x2, proj = _global_batch()
        ddp = wrap(proj, "cpu")
        mine = slice(rank * B, (rank + 1) * B)
        loss = nt_xent_loss(ddp(x1[mine]), ddp(x2[mine]), temperature=0.2)
        loss.backward()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        out["loss"] = float(mean) / WORLD
        out["grad"] = distributed.unwrap(ddp).weight.grad.clone()
        # 2. MoCo: shuffling BN gives each rank its own keys back, and every rank's keys join one queue
        torch.manual_seed(0)
        moco = MoCoV2(backbone="resnet10", queue_size=64, proj_dim=16)
        images = torch.rand(WORLD * 2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
        mine2 = slice(rank * 2, (rank + 1) * 2)
        moco.momentum_encoder.eval()  # batch-independent keys: the shuffled keys must equal the plain ones
        shuffled, everyone = moco.shuffled_keys(images[mine2])
        out["shuffle_error"] = float((shuffled - moco.keys(images[mine2])).abs().max())
        out["all_keys_error"] = float((everyone - moco.keys(images)).abs().max())
        moco.momentum_encoder.train()
        moco.train()
        moco({"view1": images[mine2], "view2": images[mine2]})
        moco.on_step_end(None)
        out["queue"] = moco.queue.clone()
        out["queue_ptr"] = int(moco.queue_ptr)
        # 3. writers stay on rank 0 only
        handlers = [StatsHandler(iteration_log=False), IterationProgress(bar=False), object()]
        out["handlers"] = len(distributed.for_this_rank(handlers))
        out["objects"] = distributed.gather_objects(f"rank{rank}")
        out["seed"] = distributed.rank_seed(10)
        results[rank] = out
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks() -> dict:
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(_free_port(), results), nprocs=WORLD, join=True)
        return dict(results)


@pytest.mark.slow  # two processes in one gloo group
def test_simclr_loss_with_gathered_negatives_equals_the_global_batch_loss(two_ranks):
    loss, grad = _single_process_reference()
    for rank in range(WORLD):
        assert two_ranks[rank]["loss"] == pytest.approx(loss, abs=1e-5)
        torch.testing.assert_close(two_ranks[rank]["grad"], grad, atol=1e-5, rtol=1e-5)


def test_local_negatives_alone_would_give_another_loss():
    """The check above can fail: without the gathered negatives the per-rank losses differ from the global one."""
    x1, x2, proj = _global_batch()
    with torch.no_grad():
        full = float(nt_xent_loss(proj(x1), proj(x2), temperature=0.2))
        local = sum(float(nt_xent_loss(proj(x1[s]), proj(x2[s]), 0.2)) for s in (slice(0, B), slice(B, 2 * B))) / 2
    assert abs(local - full) > 1e-3


@pytest.mark.slow  # two processes in one gloo group
def test_moco_shuffling_bn_returns_each_rank_its_own_keys(two_ranks):
    for rank in range(WORLD):
        assert two_ranks[rank]["shuffle_error"] < 1e-5
        assert two_ranks[rank]["all_keys_error"] < 1e-5


@pytest.mark.slow  # two processes in one gloo group
def test_moco_ranks_keep_one_queue_of_every_ranks_keys(two_ranks):
    torch.testing.assert_close(two_ranks[0]["queue"], two_ranks[1]["queue"])
    assert two_ranks[0]["queue_ptr"] == two_ranks[1]["queue_ptr"] == WORLD * 2  # both ranks' keys enqueued


@pytest.mark.slow  # two processes in one gloo group
def test_writers_run_on_rank_zero_only(two_ranks):
    assert two_ranks[0]["handlers"] == 3 and two_ranks[1]["handlers"] == 1
    assert two_ranks[0]["objects"] == two_ranks[1]["objects"] == ["rank0", "rank1"]
    assert [two_ranks[r]["seed"] for r in range(WORLD)] == [10, 11]
