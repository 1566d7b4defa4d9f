"""Active learning: the app scores unlabelled studies by the lung mask's variance under test-time flips and shifts,
and ``/activelearning/uncertainty`` serves the most uncertain one first. The scores are computed here again, in the
bundle's own environment from ``configs/inference.json`` (not by the app's code), and the order the strategy
serves the studies in, as annotators label them one after another, must follow them.
"""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from bundle.checkpoints import load_weights
from label_app.client import LABEL_PYTHON, HTTPError, LabelServer, copy_app
from tests.conftest import ROOT
from tests.helpers import label_server_env
from tests.label_app.client_driver import drive

pytestmark = pytest.mark.slow  # a real MONAI Label server, and the scoring process it starts

SAMPLE = ROOT / "data" / "sample"
STUDIES = 5


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    padded = torch.nn.functional.pad(x, (abs(dx), abs(dx), abs(dy), abs(dy)))
    h, w = x.shape[-2:]
    return padded[..., abs(dy) - dy : abs(dy) - dy + h, abs(dx) - dx : abs(dx) - dx + w]


def _scores(names: list[str]) -> dict[str, float]:
    """Each study's score: the segmentation view on the study, flipped and shifted by 4 % of its size up, down, left
    and right, maps moved back, variance across the six views, mean over the pixels all of them cover."""
    config = ConfigParser()
    config.read_config(ROOT / "configs" / "inference.json")
    config["bundle_root"] = str(ROOT)
    network = config.get_parsed_content("network_def_seg")
    network.load_state_dict(load_weights(ROOT / "models" / "model.pt"))
    network.eval()
    preprocessing = config.get_parsed_content("preprocessing")
    out = {}
    for name in names:
        x = torch.as_tensor(preprocessing({"image": str(SAMPLE / "images" / f"{name}.png")})["image"])[None]
        s = round(0.04 * x.shape[-1])
        moves = [(-s, 0), (s, 0), (0, -s), (0, s)]
        views = torch.cat([x, x.flip(-1)] + [_shift(x, dy, dx) for dy, dx in moves])
        with torch.no_grad():
            prob = torch.softmax(network(views).float(), 1)[:, 1:2]
        back = [prob[0:1], prob[1:2].flip(-1)] + [
            _shift(prob[i + 2 : i + 3], -dy, -dx) for i, (dy, dx) in enumerate(moves)
        ]
        stack = torch.cat(back)[:, 0, s:-s, s:-s].double()
        out[name] = float(stack.var(0, unbiased=False).mean())
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("activelearning")
    studies = tmp / "studies"
    studies.mkdir()
    names = [m.stem for m in sorted(SAMPLE.glob("masks/*.png"))[:STUDIES]]
    for name in names:
        shutil.copyfile(SAMPLE / "images" / f"{name}.png", studies / f"{name}.png")
    conf = {"bundle_root": str(ROOT)}
    with LabelServer(copy_app(tmp / "app"), studies, tmp / "server.log", conf=conf, env=label_server_env()) as s:
        yield s, names, tmp
    assert "Traceback" not in s.log_tail(10**7), "the server logged a stack trace"


def _scored(server: LabelServer, names: list[str], timeout: float = 180) -> dict[str, float]:
    """The scores the app stored, once its start-up scoring has scored every study (at most ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        objects = server.get("/datastore/", output="all")["objects"]
        scores = {n: objects[n]["image"]["info"].get("lung_uncertainty") for n in names}
        if None not in scores.values():
            return scores
        time.sleep(1)
    raise AssertionError(f"studies not scored within {timeout} s:\n{server.log_tail()}")


def test_uncertainty_serves_the_most_uncertain_study_first(served):
    server, names, tmp = served
    stored = _scored(server, names)
    expected = _scores(names)
    np.testing.assert_allclose([stored[n] for n in names], [expected[n] for n in names], rtol=1e-3, atol=1e-7)
    assert len(set(np.round(list(expected.values()), 7))) == len(names)  # an order to check

    served_order = []
    for _ in names:
        (answer,) = drive(LABEL_PYTHON, server.url, [["next_sample", ["uncertainty", {}], {}]], tmp)
        assert answer["ok"] and "path" not in answer["answer"], answer
        image = answer["answer"]["id"]
        assert answer["answer"]["lung_uncertainty"] == pytest.approx(stored[image])
        served_order.append(image)
        server.save_label(image, SAMPLE / "masks" / f"{image}.png")  # annotated: no longer a candidate
    assert served_order == sorted(names, key=lambda n: -expected[n])
    (done,) = drive(LABEL_PYTHON, server.url, [["next_sample", ["uncertainty", {}], {}]], tmp)
    assert done["ok"] and done["answer"] == {}  # every study labelled


def test_first_and_random_strategies(served):
    server, names, tmp = served
    with pytest.raises(HTTPError) as unknown:
        server.request("POST", "/activelearning/epistemic", body=b"{}", content_type="application/json")
    assert unknown.value.status == 404 and "first" in unknown.value.body and "uncertainty" in unknown.value.body
    for name in names:  # every sample study annotated, as after the test above
        server.save_label(name, SAMPLE / "masks" / f"{name}.png")
    shutil.copyfile(SAMPLE / "images" / f"{names[0]}.png", tmp / "new.png")
    drive(LABEL_PYTHON, server.url, [["upload_image", [str(tmp / "new.png")], {"image_id": "new"}]], tmp)
    first, random = drive(LABEL_PYTHON, server.url, [["next_sample", [s, {}], {}] for s in ("first", "random")], tmp)
    assert first["answer"]["id"] == random["answer"]["id"] == "new"  # the one unlabelled study left
