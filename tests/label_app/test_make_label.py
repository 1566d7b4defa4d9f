"""``make label``: the command a user types serves the embedded sample on 127.0.0.1 (after ``make label-env``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from label_app.client import LabelServer, copy_app, free_port
from tests.conftest import ROOT
from tests.helpers import label_server_env

pytestmark = pytest.mark.slow  # `make label` starts a real MONAI Label server

SAMPLE_IMAGES = len(list((ROOT / "data" / "sample" / "images").glob("*.png")))
SAMPLE_MASKS = len(list((ROOT / "data" / "sample" / "masks").glob("*.png")))


def test_make_label_serves_the_sample(tmp_path: Path):
    app, studies, port = copy_app(tmp_path / "app"), tmp_path / "studies", free_port()
    make = [
        "make",
        "-s",
        "-C",
        str(ROOT),
        "label",
        f"LABEL_APP={app}",
        f"LABEL_STUDIES={studies}",
        f"LABEL_PORT={port}",
    ]
    log = tmp_path / "make.log"
    with LabelServer(app, studies, log, port=port, command=make, timeout=300, env=label_server_env()) as server:
        assert set(server.get("/info/")["models"]) == {"lung_segmentation", "classification"}
        stats = server.get("/datastore/", output="stats")
        # every sample PNG, plus one picture also as DICOM and as JPEG; the sample's masks as final labels
        assert stats["total"] == SAMPLE_IMAGES + 2 and stats["completed"] == SAMPLE_MASKS
        dicom = next(p.stem for p in studies.glob("dicom_*.dcm"))
        for model in ("lung_segmentation", "classification"):
            result = server.infer_json(model, dicom)
            assert result["weights"] == "models/model.pt"  # named, never a server path
    assert server.proc.poll() is not None  # stopped by its PID, make and server both
