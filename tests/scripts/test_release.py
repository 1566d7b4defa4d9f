"""scripts/release.py: the zip holds what a bundle carries, and the unzipped copy runs on its own from any folder.

Every bundle command runs in a subprocess from a fresh folder with ``PYTHONPATH=<unzipped bundle root>`` (as the
model zoo's ci/unit_tests/utils.py does), and each asserts that ``bundle`` was imported from the unzipped copy.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from scripts.release import (
    BUNDLE_NAME,
    LARGE_FILE_LIMIT,
    ZIP_DATE_TIME,
    ReleaseError,
    build_release,
    large_files,
    release_members,
    release_version,
)
from tests.conftest import ROOT
from tests.helpers import launch, run_script

MODEL = ROOT / "models" / "model.pt"
pytestmark = [
    pytest.mark.skipif(
        not MODEL.is_file(), reason=f"{MODEL} is absent: the release ships the weights (train them or `make weights`)"
    ),
    pytest.mark.slow,  # builds the zip and runs its workflows from the unzipped copy, each a process
]

# `python -m monai.bundle <args>`, printing at exit the file `bundle` was imported from
MONAI_BUNDLE = (
    "import atexit, runpy, sys; "
    "atexit.register(lambda: print('BUNDLE_FILE=' + str(getattr(sys.modules.get('bundle'), '__file__', None)))); "
    "runpy.run_module('monai.bundle', run_name='__main__', alter_sys=True)"
)
SEG_META_OVERRIDE = ["--_meta_#network_data_format#outputs#pred#num_channels", "2"]
VIEWS = {"network_def": (1, 4), "network_def_seg": (1, 2, 224, 224)}

# the eager network (shipped weights) against the TorchScript export, on the same input
COMPARE = """
import json, sys
import torch
import bundle
from monai.bundle import ConfigParser
from monai.data import load_net_with_metadata

root, net_id, ts_file = sys.argv[1:4]
parser = ConfigParser()
parser.read_config(f"{root}/configs/inference.json")
parser["bundle_root"] = root
net = parser.get_parsed_content(net_id)
net.load_state_dict(torch.load(f"{root}/models/model.pt", weights_only=True))
ts, meta, _ = load_net_with_metadata(ts_file, map_location="cpu")
net.eval()
ts.eval()
x = torch.rand(1, 1, 224, 224, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    eager, scripted = net(x), ts(x)
result = {"shape": list(eager.shape), "ts_shape": list(scripted.shape), "version": meta.get("version"),
          "max_diff": (eager - scripted).abs().max().item(), "bundle": bundle.__file__}
print("RESULT=" + json.dumps(result))
"""

# monai.bundle.load of the unzipped bundle (found locally, so nothing is downloaded): both views, shipped weights
LOAD = """
import json, sys
import torch
import bundle
from monai.bundle import load

bundle_dir, name = sys.argv[1:3]
kwargs = dict(name=name, bundle_dir=bundle_dir, source="github", workflow_type="inference", device="cpu")
cls = load(**kwargs).eval()
seg = load(**kwargs, net_override={"_target_": "bundle.networks.MultiTaskSegmenter"}).eval()
weights = torch.load(f"{bundle_dir}/{name}/models/model.pt", weights_only=True)
x = torch.rand(1, 1, 224, 224)
with torch.no_grad():
    out_cls, out_seg = cls(x), seg(x)
result = {
    "cls": list(out_cls.shape), "seg": list(out_seg.shape), "dtype": str(out_cls.dtype),
    "cls_weights": all(torch.equal(cls.state_dict()[k].to(v.dtype), v) for k, v in weights.items()),
    "seg_weights": all(torch.equal(seg.state_dict()[k].to(v.dtype), v) for k, v in weights.items()),
    "bundle": bundle.__file__,
}
print("RESULT=" + json.dumps(result))
"""


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> dict[str, Path]:
    """The release zip, its unzipped bundle root, a fresh working folder and a folder of three sample PNGs."""
    dist = tmp_path_factory.mktemp("dist")
    zip_path = build_release(ROOT, dist)
    unzipped = tmp_path_factory.mktemp("unzipped")
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(unzipped)
    images = tmp_path_factory.mktemp("images")
    for png in sorted((ROOT / "data" / "sample" / "images").glob("*.png"))[:3]:
        shutil.copy(png, images / png.name)
    return {
        "zip": zip_path,
        "parent": unzipped,
        "root": unzipped / BUNDLE_NAME,
        "cwd": tmp_path_factory.mktemp("cwd"),
        "images": images,
    }


def run_unzipped(release: dict[str, Path], *args: str, timeout: int = 600) -> str:
    """Run ``python <args>`` from the fresh folder with PYTHONPATH=<unzipped root>; returns stdout + stderr."""
    proc = launch(
        [sys.executable, *args], cwd=release["cwd"], env={"PYTHONPATH": str(release["root"])}, timeout=timeout
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{args[:3]} exited {proc.returncode}:\n{output[-6000:]}"
    return output


def marker(output: str, key: str) -> str:
    """The value of the last ``KEY=value`` line of a subprocess's output."""
    lines = [line for line in output.splitlines() if line.startswith(f"{key}=")]
    assert lines, f"no {key}= line in:\n{output[-3000:]}"
    return lines[-1].split("=", 1)[1]


def result(output: str) -> dict:
    return json.loads(marker(output, "RESULT"))


def assert_from_unzipped(release: dict[str, Path], origin: str) -> None:
    assert Path(origin) == release["root"] / "bundle" / "__init__.py", f"bundle imported from {origin}, not the unzip"


def test_zip_holds_what_a_bundle_carries(release):
    with zipfile.ZipFile(release["zip"]) as zf:
        infos = zf.infolist()
        shipped_model = zf.read(f"{BUNDLE_NAME}/models/model.pt")
    names = [i.filename for i in infos]
    assert release["zip"].name == f"{BUNDLE_NAME}_v{release_version(ROOT)}.zip"
    assert all(n.startswith(f"{BUNDLE_NAME}/") for n in names)
    rel = {n.split("/", 1)[1] for n in names}
    for required in (
        "configs/inference.json",
        "configs/train.json",
        "configs/evaluate.json",
        "configs/inference_trt.json",
        "configs/metadata.json",
        "configs/logging.conf",
        "models/model.pt",
        "LICENSE",
        "docs/README.md",
        "bundle/__init__.py",
        "scripts/__init__.py",
        "scripts/prepare_dataset.py",
        "label_app/main.py",
        "label_app/lib/infers.py",
        "label_app/constraints.txt",
    ):
        assert required in rel, required
    for left_out in ("Makefile", "requirements.txt", "requirements-dev.txt", "pyproject.toml", "setup.cfg"):
        assert left_out not in rel, left_out
    for prefix in ("tests/", ".ci/", "data/", "runs/", "dist/", "benchmarks/", ".git"):
        assert not any(r.startswith(prefix) for r in rel), prefix
    for script in ("label_server.py", "demo.sh", "release.py"):
        assert f"scripts/{script}" not in rel, script
    assert not any("__pycache__" in r or r.endswith(".pyc") for r in rel)
    # the zoo's compress_bundle: fixed timestamps, sorted entries, no directory entries
    assert names == sorted(names)
    assert all(i.date_time == ZIP_DATE_TIME and not i.is_dir() for i in infos)
    expected = [arc for _, arc in release_members(ROOT)]
    if large_files(ROOT):
        expected = sorted(expected + [f"{BUNDLE_NAME}/large_files.yml"])
    assert names == expected
    assert shipped_model == MODEL.read_bytes()
    assert ("large_files.yml" in rel) == bool(large_files(ROOT, LARGE_FILE_LIMIT))


def test_label_app_runtime_files_are_not_shipped():
    from scripts.release import _shipped

    assert _shipped(Path("label_app/lib/trainers.py")) and _shipped(Path("label_app/studies.py"))
    for runtime in ("label_app/model/model.pt", "label_app/logs/app.log", "label_app/bin/run.sh"):
        assert not _shipped(Path(runtime)), runtime


def test_the_installed_package_is_bundle_alone():
    """pyproject.toml installs ``bundle`` only: benchmarks/, scripts/ and label_app/, packages of the development
    tree run from the repository root, stay out of what pip installs."""
    import tomllib

    from setuptools import find_packages

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    installed = find_packages(ROOT, include=include)
    assert "bundle" in installed and all(p == "bundle" or p.startswith("bundle.") for p in installed)
    assert {"benchmarks", "scripts", "label_app"} <= set(find_packages(ROOT))  # packages all the same


def test_zip_is_deterministic(release, tmp_path):
    again = build_release(ROOT, tmp_path)
    assert again.read_bytes() == release["zip"].read_bytes()


def test_large_files_are_listed_not_zipped(tmp_path):
    """With a 1 MiB limit the weights become a large file: out of the zip, in large_files.yml with their md5."""
    zip_path = build_release(ROOT, tmp_path, large_file_url_base="https://host/files/", large_file_limit=2**20)
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        listing = zf.read(f"{BUNDLE_NAME}/large_files.yml").decode()
    assert f"{BUNDLE_NAME}/models/model.pt" not in names
    md5 = hashlib.md5(MODEL.read_bytes(), usedforsecurity=False).hexdigest()
    entry = (
        f'- path: "models/model.pt"\n  url: "https://host/files/models/model.pt"\n'
        f'  hash_val: "{md5}"\n  hash_type: "md5"\n'
    )
    assert listing.startswith("large_files:\n") and entry in listing


def test_refuses_a_version_missing_from_the_changelog(tmp_path):
    meta = json.loads((ROOT / "configs" / "metadata.json").read_text())
    meta["version"] = "99.0.0"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ReleaseError, match="99.0.0 .* missing from its 'changelog'"):
        build_release(tmp_path, tmp_path / "dist")
    proc = run_script("release.py", "--bundle_root", str(tmp_path), timeout=120)
    assert proc.returncode == 1 and "release: version 99.0.0" in proc.stderr and "changelog" in proc.stderr
    assert not (tmp_path / "dist").exists()


def test_inference_from_another_folder(release):
    """(a) monai.bundle run of the unzipped inference.json writes a prediction for every image."""
    root, pred = release["root"], release["cwd"] / "pred"
    args = ["--config_file", f"{root}/configs/inference.json", "--meta_file", f"{root}/configs/metadata.json"]
    args += ["--bundle_root", str(root), "--dataset_dir", str(release["images"]), "--output_dir", str(pred)]
    args += ["--saliency", "gradcampp", "--num_workers", "0"]  # at the weights' 224 px, from their recipe
    output = run_unzipped(release, "-c", MONAI_BUNDLE, "run", *args)
    assert_from_unzipped(release, marker(output, "BUNDLE_FILE"))
    images = sorted(str(p) for p in release["images"].glob("*.png"))
    with open(pred / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["image"] for r in rows) == images
    assert all(r["status"] == "ok" and r["predicted"] for r in rows), rows
    assert all(Path(r["saliency_file"]).is_file() and Path(r["lung_mask_file"]).is_file() for r in rows)
    assert sorted(r["image"] for r in json.loads((pred / "predictions.json").read_text())) == images
    assert f"inference: {len(images)} images, {len(images)} ok, 0 failed" in output


def test_monai_bundle_load(release):
    """(b) monai.bundle.load of the local bundle builds network_def (and the seg view) with the shipped weights."""
    res = result(run_unzipped(release, "-c", LOAD, str(release["parent"]), BUNDLE_NAME))
    assert_from_unzipped(release, res["bundle"])
    assert res["cls"] == [1, 4] and res["seg"] == [1, 2, 224, 224] and res["dtype"] == "torch.float32"
    assert res["cls_weights"] and res["seg_weights"]


@pytest.mark.parametrize("net_id", list(VIEWS))
def test_verify_net_in_out_and_ckpt_export(release, net_id):
    """(c) verify_net_in_out and ckpt_export of each view; the TorchScript module matches the eager network."""
    root = release["root"]
    common = ["--net_id", net_id, "--meta_file", f"{root}/configs/metadata.json"]
    common += ["--config_file", f"{root}/configs/inference.json", "--bundle_root", str(root)]
    # verify_net_in_out compares every view with network_data_format.outputs.pred (the 4 class logits)
    extra = SEG_META_OVERRIDE if net_id == "network_def_seg" else []
    output = run_unzipped(release, "-c", MONAI_BUNDLE, "verify_net_in_out", *common, *extra)
    assert "data shape of network is verified with no error" in output
    assert_from_unzipped(release, marker(output, "BUNDLE_FILE"))

    ts_file = release["cwd"] / f"{net_id}.ts"
    args = ["--filepath", str(ts_file), "--ckpt_file", f"{root}/models/model.pt"]
    output = run_unzipped(release, "-c", MONAI_BUNDLE, "ckpt_export", *common, *args)
    assert ts_file.is_file() and f"exported to file: {ts_file}" in output
    assert_from_unzipped(release, marker(output, "BUNDLE_FILE"))

    res = result(run_unzipped(release, "-c", COMPARE, str(root), net_id, str(ts_file)))
    assert_from_unzipped(release, res["bundle"])
    assert res["shape"] == res["ts_shape"] == list(VIEWS[net_id])
    assert res["max_diff"] < 1e-4, res
    assert res["version"] == release_version(ROOT)
