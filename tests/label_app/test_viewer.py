"""The viewer MONAI Label serves (OHIF 3.10 at ``/ohif/``) shows the bundle's lung SEG over its radiograph.

An Orthanc archive on 127.0.0.1 holds a DX radiograph of the embedded sample. The app's server reads it over
DICOMweb (``--studies <url>``), runs the lung segmentation and the classification and stores their SEG and
findings SR in the study; OHIF reads the study through the server's proxy. A headless
Chromium opens the study and loads the SEG as an annotator does; the screenshot (its path is printed) must show
the radiograph with OHIF's colour for segment 1 on the lungs the SEG holds and nowhere else.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import numpy as np
import pydicom
import pytest

from bundle.data.readers import read_cxr
from bundle.inference.dicom_seg import read_lung_seg
from bundle.inference.dicom_source import radiograph_to_dicom
from label_app.client import LabelServer, copy_app
from label_app.pacs import upload
from tests.conftest import ROOT
from tests.helpers import label_server_env
from tests.label_app.viewer import CHROMIUM, Browser, Page, show_seg, thumbnails, wait_for_overlay

pytestmark = pytest.mark.slow  # an archive, a MONAI Label server and a browser, all real

SAMPLE = "hannover_0a7faa2a"  # a sample radiograph with a lung mask in data/sample/masks


@pytest.fixture(scope="module", autouse=True)
def chromium() -> None:
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} missing: `make system-packages` installs Chromium"
    pytest.fail(message, pytrace=False) if os.environ.get("CI") else pytest.skip(message)


@pytest.fixture(scope="module")
def source(orthanc, tmp_path_factory) -> pydicom.Dataset:
    """The sample radiograph as a DX study in the archive."""
    pixels = np.round(read_cxr(ROOT / "data" / "sample" / "images" / f"{SAMPLE}.png") * 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("dx") / "dx.dcm"
    dx = radiograph_to_dicom(pixels, path, patient_id="hannover:sample", patient_name="Sample^Radiograph")
    assert upload(orthanc.url, [path])["stored"] == 1
    return dx


@pytest.fixture(scope="module")
def label_server(orthanc, source, tmp_path_factory) -> Iterator[LabelServer]:
    """The app's server with the archive as its studies: ``--studies <DICOMweb URL>``."""
    tmp = tmp_path_factory.mktemp("label")
    env = label_server_env({"MONAI_LABEL_DICOMWEB_CACHE_PATH": str(tmp / "cache")})
    conf = {"bundle_root": str(ROOT)}
    with LabelServer(copy_app(tmp / "app"), orthanc.dicomweb, tmp / "server.log", conf=conf, env=env) as server:
        yield server


@pytest.fixture(scope="module")
def study(label_server, source) -> dict:
    """The app's SEG of the radiograph and its findings SR, both stored in the study by the server; the
    radiograph's pixels and the SEG's mask."""
    series = str(source.SeriesInstanceUID)
    body, _ = label_server.infer("lung_segmentation", series, "image", params={"dicom_seg": True})
    mask, referenced = read_lung_seg(pydicom.dcmread(io.BytesIO(body)))
    assert referenced == source.SOPInstanceUID
    label_server.infer("classification", series, "json", params={"dicom_sr": True})
    return {"uid": str(source.StudyInstanceUID), "image": source.pixel_array, "mask": mask > 0}


@pytest.fixture(scope="module")
def page(label_server, study, tmp_path_factory) -> Iterator[Page]:
    """The study open in OHIF in a headless Chromium, its SEG loaded as an annotator loads it."""
    tmp = tmp_path_factory.mktemp("browser")
    with Browser(log=tmp / "chromium.log", width=1280, height=800) as browser:
        page = browser.open(f"{label_server.url}/ohif/viewer?StudyInstanceUIDs={study['uid']}")
        show_seg(page)
        yield page


def test_ohif_lists_the_radiograph_its_seg_and_its_report(page):
    series = thumbnails(page)
    assert any(s.startswith("DX|") for s in series), series
    assert any(s.startswith("SEG|") for s in series), series
    assert any(s.startswith("SR|") for s in series), series


def test_ohif_shows_the_lung_seg_over_the_radiograph(page, study, tmp_path_factory):
    shot = tmp_path_factory.mktemp("screenshot") / "viewer_seg.png"
    found, rect = wait_for_overlay(page, study["image"], study["mask"], shot)
    print(f"screenshot: {shot}; image at {[round(v) for v in rect]}; {found}")
    assert found.correlation > 0.9, f"the radiograph is not drawn ({shot}): {found}\n{page.problems()}"
    assert found.inside > 0.9, f"the lungs are not in the segment's colour ({shot}): {found}\n{page.problems()}"
    assert found.outside < 0.05, f"the segment's colour spills outside the lungs ({shot}): {found}"
