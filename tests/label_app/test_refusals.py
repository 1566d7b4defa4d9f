"""The MONAI Label app refuses what it cannot use, with a 4xx and a ``detail`` naming what is wrong, before any
work, and no answer carries a server path. Driven with MONAI Label's own client (``client_driver.py``, run in the
MONAI Label environment) against one real server for the module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from label_app.client import LABEL_PYTHON, HTTPError, LabelServer, copy_app
from tests.conftest import ROOT
from tests.helpers import label_server_env
from tests.label_app.client_driver import drive

pytestmark = pytest.mark.slow  # a real MONAI Label server in its own environment

SAMPLE = ROOT / "data" / "sample"
ANSWERS: list = []  # every answer the module got, scanned for server paths at the end
# an absolute path: a slash that starts a token (not the // of a URL, not a relative a/b)
ABSOLUTE = re.compile(r"(?<![\w.:/-])/[\w.-]+/")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("refusals")
    studies = tmp / "studies"
    studies.mkdir()
    masks = sorted(SAMPLE.glob("masks/*.png"))[:2]
    for mask in masks:
        shutil.copyfile(SAMPLE / "images" / mask.name, studies / mask.name)
    (tmp / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n not a picture")
    Image.fromarray(np.ones((7, 9), np.uint8)).save(tmp / "small_mask.png")
    (tmp / "server_tmp").mkdir()  # the server's temporary folder
    return {
        "tmp": tmp,
        "studies": studies,
        "mask": masks[0],
        "garbage": tmp / "garbage.png",
        "server_tmp": tmp / "server_tmp",
    }


@pytest.fixture(scope="module")
def server(files):
    tmp = files["tmp"]
    conf = {"bundle_root": str(ROOT)}
    server_tmp = files["server_tmp"]
    # an earlier server's upload folder (a process id above Linux's maximum) and a running one's (this test's)
    (server_tmp / "cxr-infer-4194305-gone").mkdir()
    (server_tmp / f"cxr-infer-{os.getpid()}-running").mkdir()
    env = label_server_env({"TMPDIR": str(server_tmp)})
    with LabelServer(copy_app(tmp / "app"), files["studies"], tmp / "server.log", conf=conf, env=env) as s:
        yield s
    assert "Traceback" not in s.log_tail(10**7), "the server logged a stack trace"


def test_a_start_removes_the_upload_folders_of_stopped_servers_only(server, files):
    folders = sorted(p.name for p in files["server_tmp"].glob("cxr-infer-*"))
    assert f"cxr-infer-{os.getpid()}-running" in folders and "cxr-infer-4194305-gone" not in folders, folders
    assert len(folders) == 2, folders  # and the server's own


def _drive(server: LabelServer, files, *calls) -> list[dict]:
    answers = drive(LABEL_PYTHON, server.url, [list(c) for c in calls], files["tmp"])
    ANSWERS.extend(answers)
    return answers


def _refused(answer: dict, status: int, *words: str) -> None:
    assert not answer["ok"] and answer["status"] == status, answer
    detail = json.loads(answer["answer"])["detail"]
    assert all(w in detail for w in words), detail


def test_garbage_upload_is_refused_and_not_stored(server, files):
    study = str(SAMPLE / "images" / files["mask"].name)
    bad, good, listing = _drive(
        server,
        files,
        ("upload_image", [str(files["garbage"])], {"image_id": "garbage"}),
        ("upload_image", [study], {"image_id": "uploaded"}),
        ("datastore", [], {}),
    )
    _refused(bad, 422, "garbage", "cannot decode", "not stored")
    assert good["ok"] and good["answer"]["image"] == "uploaded"
    assert "uploaded" in listing["answer"]["objects"] and "garbage" not in listing["answer"]["objects"]


def test_garbage_label_is_refused_and_a_good_one_stored(server, files):
    image = files["mask"].stem
    garbage, small, good = _drive(
        server,
        files,
        ("save_label", [image, str(files["garbage"])], {"tag": "final"}),
        ("save_label", [image, str(files["tmp"] / "small_mask.png")], {"tag": "final"}),
        ("save_label", [image, str(files["mask"])], {"tag": "final"}),
    )
    _refused(garbage, 422, image, "cannot decode")
    _refused(small, 422, image, "mask shape (7, 9) differs")
    assert good["ok"] and good["answer"]["label"] == image
    with pytest.raises(HTTPError) as unknown:
        server.save_label("no_such_study", files["mask"])
    assert unknown.value.status == 404 and "no_such_study" in unknown.value.body
    ANSWERS.append(unknown.value.body)


def test_training_an_unknown_model_or_with_bad_options_is_refused(server, files):
    unknown, bad, extra = _drive(
        server,
        files,
        ("train_start", ["no_such_model", {}], {}),
        ("train_start", ["lung_segmentation", {"max_epochs": 0, "val_split": 2}], {}),
        ("train_start", ["lung_segmentation", {"train_ds": "/etc/passwd"}], {}),
    )
    _refused(unknown, 404, "no_such_model", "lung_segmentation")
    _refused(bad, 422, "max_epochs=0", "val_split=2", "an integer >= 1")
    _refused(extra, 422, "unknown option 'train_ds'", "max_epochs")
    with pytest.raises(HTTPError):  # nothing was started
        server.get("/train/", check_if_running="true")


def test_strategies(server, files):
    unknown, first, info = _drive(
        server,
        files,
        ("next_sample", ["no_such_strategy", {}], {}),
        ("next_sample", ["first", {}], {}),
        ("info", [], {}),
    )
    _refused(unknown, 404, "no_such_strategy", "first", "random", "uncertainty")
    assert first["ok"] and first["answer"]["id"] and "path" not in first["answer"]
    assert set(info["answer"]["strategies"]) == {"first", "random", "uncertainty"}
    assert list(info["answer"]["scoring"]) == ["lung_uncertainty"]


def test_infer_takes_datastore_ids_only(server, files):
    image = files["mask"].stem
    study_path = str(files["studies"] / files["mask"].name)
    ok, in_params, as_image, unknown = _drive(
        server,
        files,
        ("infer", ["lung_segmentation", image, {}], {}),
        ("infer", ["lung_segmentation", image, {"image": study_path}], {}),
        ("infer", ["classification", "/etc/hostname", {}], {}),
        ("infer", ["lung_segmentation", "no_such_study", {}], {}),
    )
    assert ok["ok"] and ok["answer"]["params"]["weights"] == "models/model.pt"
    _refused(in_params, 400, "not an id of the datastore", files["mask"].name)
    _refused(as_image, 400, "hostname")
    _refused(unknown, 404, "no_such_study")


def test_non_json_params_is_a_422(server):
    boundary = uuid.uuid4().hex
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n\r\n{{not json\r\n--{boundary}--\r\n'
    image = server.get("/datastore/", output="all")["objects"]
    with pytest.raises(HTTPError) as error:
        server.request(
            "POST",
            "/infer/lung_segmentation",
            {"image": sorted(image)[0]},
            body.encode(),
            f"multipart/form-data; boundary={boundary}",
        )
    assert error.value.status == 422 and "params is not JSON" in error.value.body
    ANSWERS.append(error.value.body)
    ANSWERS.append(image)


def test_no_answer_carries_a_server_path(server, files):
    ANSWERS.extend(_drive(server, files, ("info", [], {}), ("datastore", [], {})))
    train = server.get("/datastore/", output="train")
    assert {d["image"] for d in train} == {files["mask"].name}  # the study with a final label, by file name
    ANSWERS.extend([train, server.get("/datastore/image/info", image=files["mask"].stem)])
    assert len(ANSWERS) >= 15
    text = json.dumps(ANSWERS)
    for root in (str(files["tmp"]), str(ROOT), str(server.app)):
        assert root not in text
    assert not ABSOLUTE.findall(text), ABSOLUTE.findall(text)[:5]
