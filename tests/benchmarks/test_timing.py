"""benchmarks.timing, memory and report: the timer stops an engine after the timed iterations, peaks are measured
per phase, and every suite's report has the same keys and print format."""

from __future__ import annotations

import io

import pytest
import torch
from ignite.engine import Engine

from benchmarks.memory import peak_memory_mb, reset_peak
from benchmarks.report import REPORT_KEYS, make_report, print_report
from benchmarks.timing import IterationTimer, time_loop


def test_iteration_timer_stops_the_engine():
    """Warm-up iterations are not timed, the timed ones are, and the engine stops right after them."""
    engine = Engine(lambda engine, batch: None)
    timer = IterationTimer(torch.device("cpu"), warmup=2, iters=3, items=len)
    timer.attach(engine)
    engine.run([[0, 1, 2]] * 10, max_epochs=1)
    assert engine.state.iteration == 5 and len(timer.timed) == 3
    assert timer.throughput() > 0 and all(n == 3 for _, n in timer.timed)


def test_iteration_timer_reports_a_short_run():
    engine = Engine(lambda engine, batch: None)
    timer = IterationTimer(torch.device("cpu"), warmup=2, iters=3, items=len)
    timer.attach(engine)
    engine.run([[0]] * 4, max_epochs=1)
    with pytest.raises(RuntimeError, match="only 4 iterations ran"):
        timer.throughput()


def test_time_loop_times_the_iterations_after_the_warm_up():
    calls = []
    timer = time_loop(calls.append, torch.device("cpu"), warmup=2, iters=3, items_per_step=4)
    assert calls == [0, 1, 2, 3, 4] and [n for _, n in timer.timed] == [4, 4, 4] and timer.median_seconds() >= 0


def test_a_new_peak_starts_below_an_earlier_one():
    cpu = torch.device("cpu")
    if not reset_peak(cpu):
        pytest.skip("this kernel does not let a process reset its peak RSS")
    block = torch.ones(64 * 2**20, dtype=torch.uint8)  # 64 MiB touched
    high = peak_memory_mb(cpu)
    del block
    reset_peak(cpu)
    assert 0 < peak_memory_mb(cpu) < high - 32


def test_a_report_has_the_same_keys_and_layout_for_every_suite():
    report = make_report(
        "s", "a title", "images/s", {"a": 2, "b": 4}, "ratio", 0.5, "half", {"a": 10.04}, {"device": "cpu"}, {"k": 1.5}
    )
    assert tuple(report) == REPORT_KEYS and report["throughput"] == {"a": 2.0, "b": 4.0}
    assert report["peak_memory_mb"] == {"a": 10.0}
    out = io.StringIO()
    print_report(report, file=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "== s: a title" and lines[1].split(":", 1)[1].strip() == "device cpu"
    assert any(line.split(":")[0].strip() == "ratio" and "0.500  half" in line for line in lines)
