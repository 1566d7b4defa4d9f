"""The scale suite's datalist (links, not copies; a picture's repeats kept with its patient) and a toy run of the
whole suite: both checks, a training start with the disk cache, the report."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks.cli import suite_parser
from benchmarks.report import REPORT_KEYS
from benchmarks.scale import build_datalist, run
from bundle.data.datalist import prepare_splits
from bundle.data.leakage import find_overlaps
from tests.conftest import CLASS_NAMES, write_dataset


def test_the_datalist_links_the_images_and_keeps_their_patients(tmp_path):
    write_dataset(tmp_path / "data", n_per_class=2)
    path, rows = build_datalist(tmp_path / "data", 50, tmp_path / "work")
    assert len(rows) == 50 and json.loads(path.read_text())["training"] == rows
    first, repeat = tmp_path / "work" / rows[0]["image"], tmp_path / "work" / rows[8]["image"]
    assert first != repeat and os.path.samefile(first, tmp_path / "data" / "images" / "c0_0.png")
    assert os.path.samefile(first, repeat) and rows[0]["patient"] == rows[8]["patient"]
    assert sum(1 for r in rows if "mask" in r) == 25  # the source's every second image has a mask
    splits = prepare_splits(path, tmp_path / "work", CLASS_NAMES, cache_dir=tmp_path / "cache")
    assert splits["test"] and not find_overlaps(splits)  # repeats stay in their patient's split


@pytest.mark.slow  # starts a real training run (one iteration)
def test_the_suite_runs_tiny(tmp_path):
    write_dataset(tmp_path / "data", n_per_class=3)
    flags = ["--entries", "600", "--image_size", "32", "--batch_size", "4", "--iters", "1", "--num_workers", "0"]
    flags += ["--caches", "disk", "--dataset_dir", str(tmp_path / "data"), "--work", str(tmp_path / "work")]
    report = run(suite_parser("scale").parse_args(flags))
    assert tuple(report) == REPORT_KEYS and report["suite"] == "scale"
    wanted = {"check cold, threads", "check cold, processes", "check cold", "check warm", "first iteration, cache disk"}
    assert set(report["throughput"]) == wanted and all(v > 0 for v in report["throughput"].values())
    assert report["peak_memory_mb"]["disk"] > 0 and "CPU s" in report["details"]["entry check CPU"]
    json.dumps(report)
