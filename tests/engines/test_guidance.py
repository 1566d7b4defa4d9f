"""The lung-guidance warm-up on a real ignite engine: off for the warm-up epochs, on after, and after a resume."""

from __future__ import annotations

from ignite.engine import Engine

from bundle.engines.guidance import SANITY_ADVICE, LungGuidanceWarmup
from bundle.losses import MultiTaskLoss


def run(loss: MultiTaskLoss, warmup: int, epochs: int, start_epoch: int = 0) -> list[tuple[int, bool]]:
    seen = []
    engine = Engine(lambda e, batch: seen.append((e.state.epoch, loss.guidance_active)))
    LungGuidanceWarmup(loss, warmup).attach(engine)
    if start_epoch:  # a resumed run: ignite starts from the stored epoch
        engine.state.epoch, engine.state.iteration, engine.state.max_epochs = start_epoch, start_epoch, epochs
        engine.state.epoch_length = 1
    engine.run([0], max_epochs=epochs)
    return seen


def test_the_term_is_off_during_the_warm_up_then_on():
    loss = MultiTaskLoss(w_lung_guidance=1.0)
    assert run(loss, warmup=2, epochs=4) == [(1, False), (2, False), (3, True), (4, True)]


def test_a_resumed_run_keeps_the_schedule():
    loss = MultiTaskLoss(w_lung_guidance=1.0)
    loss.guidance_active = False
    assert run(loss, warmup=2, epochs=4, start_epoch=2) == [(3, True), (4, True)]


def test_without_lung_guidance_nothing_changes():
    loss = MultiTaskLoss()
    assert run(loss, warmup=3, epochs=2) == [(1, True), (2, True)]


def test_the_state_is_logged_once_when_it_is_first_seen_and_at_the_switch(caplog):
    loss = MultiTaskLoss(w_lung_guidance=1.0)
    with caplog.at_level("INFO", logger="bundle.engines.guidance"):
        run(loss, warmup=1, epochs=3)
        run(MultiTaskLoss(w_lung_guidance=1.0), warmup=1, epochs=3, start_epoch=2)  # resumed after the warm-up
    messages = [r.getMessage() for r in caplog.records]
    on = ["lung guidance (w_lung_guidance 1): on", SANITY_ADVICE]  # the maps it trains need the sanity check
    assert messages == ["lung guidance (w_lung_guidance 1): off until epoch 2 (warm-up)", *on, *on]


def test_a_run_that_ends_within_the_warm_up_says_it_is_unguided(caplog):
    with caplog.at_level("INFO", logger="bundle.engines.guidance"):
        assert run(MultiTaskLoss(w_lung_guidance=1.0), warmup=2, epochs=2) == [(1, False), (2, False)]
        run(MultiTaskLoss(), warmup=2, epochs=1)  # unguided: nothing to say
    assert [r.getMessage() for r in caplog.records] == [
        "lung guidance (w_lung_guidance 1): off in this run: its 2 epoch(s) end within the warm-up "
        "(lung_guidance_warmup 2; lower it to guide)"
    ]
