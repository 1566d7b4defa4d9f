"""The shared steps: duplicates, cache names, classes, progress, label-file errors."""

from __future__ import annotations

import io
import os

import pytest

from bundle.prepare.cache import CacheSpec, plan_cache_paths, target_size
from bundle.prepare.cli import main
from bundle.prepare.dedup import PatientGroups, resolve_duplicates
from bundle.prepare.files import read_csv
from bundle.prepare.labels import assign_classes, class_key, parse_mapping
from bundle.prepare.parallel import Progress, parallel_map
from bundle.prepare.records import PrepareError
from bundle.prepare.splits import assign_splits

from .fixtures import run, write_image


def test_duplicates_with_conflicting_labels_are_all_left_out():
    entries = [
        {"image": "/d/a.png", "label": 0, "patient": "p1"},
        {"image": "/d/b.png", "label": 1, "patient": "p2"},
        {"image": "/d/c.png", "label": 1, "patient": "p3"},
        {"image": "/d/d.png", "label": 1, "patient": "p3", "mask": "/d/m.png"},
        {"image": "/d/e.png", "label": 0, "patient": "p2"},
    ]
    sha = {"/d/a.png": "x", "/d/b.png": "x", "/d/c.png": "y", "/d/d.png": "y", "/d/e.png": "z"}
    kept, skipped, report, groups = resolve_duplicates(entries, sha)
    assert [e["image"] for e in kept] == ["/d/d.png", "/d/e.png"]  # the copy with a mask is kept
    assert {s.kind for s in skipped} == {"duplicate_conflict", "duplicate"}
    assert report["groups"] == 2 and report["groups_with_conflicting_labels"] == 1
    assert groups.find("p1") == groups.find("p2")  # p2's other image stays with p1's


def test_patient_groups_and_official_split():
    groups = PatientGroups()
    assert groups.union("b", "a") and not groups.union("a", "b") and groups.find("b") == "a"
    entries = [{"image": f"/x/{i}.png", "label": i % 2, "patient": f"p{i // 2}"} for i in range(20)]
    entries[0]["_official"] = "test"
    sections, notes = assign_splits(entries, lambda e: e["patient"], 0.2, 0.5, seed=1, official_test=True)
    assert {e["image"] for e in sections["test"]} == {"/x/0.png", "/x/1.png"} and notes
    with pytest.raises(ValueError):
        assign_splits(entries[1:], lambda e: e["patient"], 0.2, 0.2, seed=1, official_test=True)


def test_cache_names_and_sizes(tmp_path):
    spec = CacheSpec(str(tmp_path / "c"), size=64)
    paths = plan_cache_paths(
        ["/s/a/x.dcm", "/s/a/x.png", "/s/b/y.nii.gz", "/s/c/1.2.840.5", "/elsewhere/z.jpg"], "/s", spec
    )
    assert paths["/s/a/x.dcm"].endswith(os.path.join("a", "x.dcm.png"))
    assert paths["/s/a/x.png"].endswith(os.path.join("a", "x.png.png"))
    assert paths["/s/b/y.nii.gz"].endswith(os.path.join("b", "y.png"))
    assert paths["/s/c/1.2.840.5"].endswith(os.path.join("c", "1.2.840.5.png"))
    assert paths["/elsewhere/z.jpg"].endswith(os.path.join("external", "z.png"))
    assert target_size((100, 50), spec) == (64, 64)
    assert target_size((100, 50), CacheSpec("c", 64, keep_aspect=True)) == (32, 64)
    with pytest.raises(ValueError):
        CacheSpec("c", bits=12)


def test_classes_mapping_and_errors():
    assert class_key(" Viral Pneumonia ") == "viral_pneumonia" and class_key("COVID-19") == "covid_19"
    entries = [{"image": f"{i}", "_class": c} for i, c in enumerate(["Normal", "Lung_Opacity", "COVID", "Normal"])]
    kept, names, skipped = assign_classes(entries, None, parse_mapping(["Lung_Opacity=pneumonia"], "--class-map"))
    assert names == ["normal", "covid", "pneumonia"] and len(kept) == 4 and not skipped
    with pytest.raises(PrepareError):
        parse_mapping(["no-equals"], "--class-map")
    with pytest.raises(PrepareError):
        assign_classes([{"image": "a", "_class": "x"}], ["x", "x"])


def test_progress_and_parallel_map():
    stream = io.StringIO()
    assert parallel_map(abs, [-1, -2, 3], 2, "numbers", stream) == [1, 2, 3]
    assert stream.getvalue().strip().startswith("numbers: 3/3 (100.0%)")
    p = Progress("x", 0, io.StringIO())
    p.close()


def test_wrong_csv_header_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "labels.csv").write_text("patient,img\n1,a.png\n")
    with pytest.raises(PrepareError, match="'patientId'"):
        list(read_csv(tmp_path / "labels.csv", ["patientId"]))
    (tmp_path / "stage_2_train_images").mkdir()
    (tmp_path / "stage_2_train_labels.csv").write_text("id,Target\n")
    (tmp_path / "stage_2_detailed_class_info.csv").write_text("patientId,class\n")
    assert main(["rsna-pneumonia", "--src", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "not in the header" in capsys.readouterr().err


def test_no_decode_and_relative_paths(tmp_path):
    src = tmp_path / "d"
    for cls in ("normal", "covid"):
        for i in range(4):
            write_image(src / cls / f"{i}.png")
    datalist, summary = run(
        "folders",
        src,
        tmp_path / "out",
        "--no-decode",
        "--paths",
        "relative",
        "--seed",
        "3",
        "--val-fraction",
        "0.25",
        "--test-fraction",
        "0.25",
    )
    assert all(not os.path.isabs(e["image"]) for e in datalist["training"])
    assert summary["options"]["seed"] == 3 and summary["per_split"]["test"]["images"] == 2
