"""``--w_lung_guidance`` through configs/train.json as users run it (in process): the network gives its class maps,
the loss guides them after the warm-up, and the settings check refuses what cannot be guided."""

from __future__ import annotations

import logging

import pytest

from bundle.losses import MultiTaskLoss
from bundle.settings import check
from tests.conftest import sample_workflow

IMAGES = 24  # enough of the embedded sample for every split to hold images


def test_lung_guided_training_switches_the_term_on_after_the_warm_up(tmp_path, one_thread, caplog):
    wf = sample_workflow("train", tmp_path, images=IMAGES, w_lung_guidance=0.5, lung_guidance_warmup=1, max_epochs=2)
    network, loss = wf.parser.get_parsed_content("network"), wf.parser.get_parsed_content("loss")
    assert network.class_maps is True and isinstance(loss, MultiTaskLoss) and loss.w_lung_guidance == 0.5
    seen = []
    real = loss.lung_guidance

    def recorded(*args):
        value = real(*args)
        seen.append((wf.parser.get_parsed_content("train#trainer").state.epoch, value.detach().item()))
        return value

    loss.lung_guidance = recorded
    with caplog.at_level(logging.INFO, logger="bundle.engines.guidance"):
        wf.run()
    wf.finalize()
    assert seen and {epoch for epoch, _ in seen} == {2}  # off in the warm-up epoch, on in the second
    assert all(0 <= share <= 1 for _, share in seen)
    messages = [r.getMessage() for r in caplog.records]
    assert any("off until epoch 2 (warm-up)" in m for m in messages) and any(m.endswith(": on") for m in messages)
    assert any("scripts/saliency_check.py" in m for m in messages)  # the maps it trains need the sanity check
    assert (tmp_path / "models" / "model.pt").is_file()


@pytest.mark.parametrize("changes", [{}, {"lungs_only": True}, {"backbone": "vit_s16"}])
def test_the_default_training_is_unguided(tmp_path, changes):
    # guided 224 px maps failed the saliency sanity check (docs/README.md): guidance is asked for, never implied
    wf = sample_workflow("train", tmp_path, images=IMAGES, **changes)
    assert wf.parser.get_parsed_content("network").class_maps is False
    assert wf.parser.get_parsed_content("loss").w_lung_guidance == 0
    check(wf.parser.get_parsed_content("settings"), "train")  # and the settings pass


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"lungs_only": True}, "w_lung_guidance: lungs_only already hides everything outside the lungs"),
        (
            {"backbone": "vit_s16", "vit_pool": "token"},
            "reading the class token has no map to guide; use vit_pool mean",
        ),
    ],
)
def test_what_cannot_be_guided_stops_before_any_work(tmp_path, changes, message):
    wf = sample_workflow("train", tmp_path, images=IMAGES)
    settings = {**wf.parser.get_parsed_content("settings"), "w_lung_guidance": 1.0, **changes}
    with pytest.raises(SystemExit, match=message):
        check(settings, "train")
    check({**settings, "w_lung_guidance": 0.0}, "train")  # without lung guidance the same settings pass
