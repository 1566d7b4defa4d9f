"""``folders``: Kermany, COVID-19 Radiography Database and COVID-QU-Ex folder layouts."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from bundle.data.datalist import SECTIONS
from bundle.prepare.cli import main
from tests.helpers import run_script

from .fixtures import check_datalist, run, skipped_items, write_garbage, write_image, write_mask

ROOT = Path(__file__).resolve().parents[2]


def kermany(root: Path) -> Path:
    """chest_xray/{train,test}/{NORMAL,PNEUMONIA}/ with Kermany's file names, a broken JPEG and a copy."""
    src = root / "chest_xray"
    for split, patients in (("train", range(0, 8)), ("test", range(8, 11))):
        for p in patients:
            write_image(src / split / "NORMAL" / f"IM-{p:04d}-0001.jpeg", rgb=True)
            write_image(src / split / "NORMAL" / f"NORMAL2-IM-{p:04d}-0001.jpeg", rgb=True)
            write_image(src / split / "PNEUMONIA" / f"person{p}_bacteria_{2 * p}.jpeg", rgb=True)
            write_image(src / split / "PNEUMONIA" / f"person{p}_bacteria_{2 * p + 1}.jpeg", rgb=True)
            write_image(src / split / "PNEUMONIA" / f"person{p + 100}_virus_{p}.jpeg", rgb=True)
    write_garbage(src / "train" / "NORMAL" / "IM-0999-0001.jpeg")
    shutil.copy(src / "train" / "NORMAL" / "IM-0001-0001.jpeg", src / "test" / "NORMAL" / "IM-0555-0001.jpeg")
    (src / ".DS_Store").write_bytes(b"\0\0")
    return src


def covid_radiography(root: Path) -> Path:
    """COVID-19_Radiography_Dataset/<class>/{images,masks}/ with metadata sheets, a broken mask, a stray mask."""
    src = root / "COVID-19_Radiography_Dataset"
    for cls, prefix in (
        ("COVID", "COVID"),
        ("Normal", "Normal"),
        ("Viral Pneumonia", "Viral Pneumonia"),
        ("Lung_Opacity", "Lung_Opacity"),
    ):
        for i in range(1, 6):
            write_image(src / cls / "images" / f"{prefix}-{i}.png")
            write_mask(src / cls / "masks" / f"{prefix}-{i}.png")
        (src / f"{cls}.metadata.xlsx").write_bytes(b"PK\x03\x04")
    write_garbage(src / "COVID" / "masks" / "COVID-2.png")
    write_mask(src / "Normal" / "masks" / "Normal-99.png")
    write_mask(src / "Normal" / "masks" / "Normal-5.png", shape=(30, 30))  # replaces a good mask: wrong size
    (src / "README.md.txt").write_text("COVID-19 Radiography Database")
    return src


def test_kermany_entries_splits_and_summary(tmp_path):
    src = kermany(tmp_path)
    datalist, summary = run(
        "folders", src, tmp_path / "out", "--name-class", "_bacteria_=bacterial_pneumonia", "_virus_=viral_pneumonia"
    )
    sections = check_datalist(tmp_path / "out", datalist)
    assert datalist["class_names"] == ["normal", "bacterial_pneumonia", "viral_pneumonia"]
    assert datalist["multi_label"] is False
    everything = [e for s in SECTIONS for e in datalist[s]]
    by_name = {os.path.basename(e["image"]): e for e in everything}
    assert by_name["person3_bacteria_6.jpeg"]["patient"] == "person3"
    assert by_name["person3_bacteria_6.jpeg"]["label"] == 1
    assert by_name["person103_virus_3.jpeg"]["label_name"] == "viral_pneumonia"
    assert by_name["NORMAL2-IM-0004-0001.jpeg"]["patient"] == "NORMAL2-IM-0004"
    assert by_name["IM-0004-0001.jpeg"]["patient"] == "IM-0004"
    # Both bacteria images of a patient in one section.
    section_of = {os.path.basename(e["image"]): s for s in SECTIONS for e in sections[s]}
    assert section_of["person3_bacteria_6.jpeg"] == section_of["person3_bacteria_7.jpeg"]
    # Source paths outside --out are written absolute.
    assert all(os.path.isabs(e["image"]) for e in everything)

    skipped = skipped_items(summary)
    assert skipped["IM-0999-0001.jpeg"]["kind"] == "unreadable"
    assert "cannot decode" in skipped["IM-0999-0001.jpeg"]["reason"]
    assert "IM-0999-0001.jpeg" not in by_name
    # The exact copy: one kept, and its two patients merged so that they share a section.
    assert summary["duplicates"]["groups"] == 1 and summary["duplicates"]["images_removed"] == 1
    kept = os.path.basename(summary["duplicates"]["details"][0]["kept"])
    assert kept in by_name and len({"IM-0001-0001.jpeg", "IM-0555-0001.jpeg"} & set(by_name)) == 1
    assert summary["images"] == 5 * 11 == len(everything)  # the copy added one, de-duplication removed one
    assert summary["per_class"]["normal"]["total"] == 22
    assert summary["per_split"]["training"]["images"] == len(datalist["training"])
    assert "--class_names \"['normal','bacterial_pneumonia','viral_pneumonia']\"" in summary["train_command"]


def test_covid_radiography_masks(tmp_path):
    src = covid_radiography(tmp_path)
    datalist, summary = run("folders", src, tmp_path / "out", "--classes", "Normal", "COVID", "Viral Pneumonia")
    check_datalist(tmp_path / "out", datalist)
    assert datalist["class_names"] == ["normal", "covid", "viral_pneumonia"]
    everything = {os.path.basename(e["image"]): e for s in SECTIONS for e in datalist[s]}
    assert len(everything) == 15
    assert everything["COVID-1.png"]["mask"].endswith(os.path.join("COVID", "masks", "COVID-1.png"))
    assert "mask" not in everything["COVID-2.png"]  # its mask is broken: image kept without it
    assert "mask" not in everything["Normal-5.png"]  # mask of another size
    assert summary["images_with_masks"] == 13
    skipped = skipped_items(summary)
    assert skipped["COVID-2.png"]["kind"] == "bad_mask" and "kept without a mask" in skipped["COVID-2.png"]["reason"]
    assert "differs from image shape" in skipped["Normal-5.png"]["reason"]
    assert skipped["Normal-99.png"]["kind"] == "unpaired_mask"
    assert skipped["Lung_Opacity-3.png"]["kind"] == "filtered"
    assert any("xlsx" in n for n in summary["notes"])


def test_covid_qu_ex_lung_masks_and_official_test(tmp_path):
    src = tmp_path / "COVID-QU-Ex Dataset"
    lung = src / "Lung Segmentation Data" / "Lung Segmentation Data"
    for split in ("Train", "Val", "Test"):
        for cls, prefix in (("COVID-19", "covid_"), ("Non-COVID", "non_COVID ("), ("Normal", "Normal (")):
            for i in range(1, 4):
                name = f"{prefix}{i}{')' if '(' in prefix else ''}_{split}.png"
                write_image(lung / split / cls / "images" / name)
                write_mask(lung / split / cls / "lung masks" / name)
    infection = src / "Infection Segmentation Data" / "Infection Segmentation Data" / "Train" / "COVID-19"
    shutil.copytree(lung / "Train" / "COVID-19" / "images", infection / "images")
    shutil.copytree(lung / "Train" / "COVID-19" / "lung masks", infection / "lung masks")
    write_mask(infection / "infection masks" / "covid_1_Train.png")
    datalist, summary = run("folders", src, tmp_path / "out", "--official-test", "--val-fraction", "0.2")
    check_datalist(tmp_path / "out", datalist)
    assert datalist["class_names"] == ["normal", "covid_19", "non_covid"]
    assert all("_Test" in e["image"] for e in datalist["test"]) and len(datalist["test"]) == 9
    assert all("mask" in e for s in SECTIONS for e in datalist[s])
    # The infection-segmentation subset repeats the same files: exact duplicates, one copy kept.
    assert summary["duplicates"]["groups"] == 3
    assert summary["images"] == 27
    assert any("infection" in n for n in summary["notes"])


def test_cache_resized_resumable(tmp_path):
    src = covid_radiography(tmp_path)
    out, cache = tmp_path / "out", tmp_path / "out" / "cache"
    datalist, summary = run("folders", src, out, "--cache-dir", str(cache), "--cache-size", "16", "--workers", "2")
    check_datalist(out, datalist)
    assert summary["cache"]["written"] > 0 and summary["cache"]["reused"] == 0
    entry = next(e for s in SECTIONS for e in datalist[s] if e["image"].endswith("COVID-1.png"))
    assert entry["image"] == os.path.join("cache", "COVID", "images", "COVID-1.png")  # relative: under --out
    assert entry["source_path"] == os.path.join("COVID", "images", "COVID-1.png")
    assert entry["orig_size"] == [20, 24]
    img = np.asarray(Image.open(out / entry["image"]))
    mask = np.asarray(Image.open(out / entry["mask"]))
    assert img.shape == mask.shape == (16, 16) and img.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1}
    # A second run reuses every file; a stale cache file (other source bytes) is rewritten.
    stamp = (out / entry["image"]).stat().st_mtime_ns
    write_image(src / "COVID" / "images" / "COVID-3.png")
    _, again = run("folders", src, out, "--cache-dir", str(cache), "--cache-size", "16")
    assert again["cache"]["written"] == 1 and again["cache"]["reused"] == summary["cache"]["written"] - 1
    assert (out / entry["image"]).stat().st_mtime_ns == stamp
    # Other settings: rewritten at the new size, 16 bits, aspect kept.
    dl16, _ = run(
        "folders",
        src,
        out,
        "--cache-dir",
        str(cache),
        "--cache-size",
        "12",
        "--cache-bits",
        "16",
        "--cache-keep-aspect",
    )
    entry = next(e for s in SECTIONS for e in dl16[s] if e["image"].endswith("COVID-1.png"))
    arr = np.asarray(Image.open(out / entry["image"]))
    assert arr.shape == (12, 10) and arr.dtype == np.uint16
    assert not list(cache.rglob("*.tmp*"))


def test_no_class_folder_and_bad_options(tmp_path, capsys):
    src = tmp_path / "flat"
    write_image(src / "a.png")
    write_image(src / "train" / "b.png")
    write_image(src / "normal" / "c.png")
    write_image(src / "normal" / "d.png")
    write_image(src / "sick" / "e.png")
    datalist, summary = run("folders", src, tmp_path / "out", "--val-fraction", "0", "--test-fraction", "0")
    assert {s["kind"] for s in summary["skipped"]} == {"no_class"} and len(summary["skipped"]) == 2
    assert len(datalist["training"]) == 3
    assert main(["folders", "--src", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["folders", "--src", str(src), "--out", str(tmp_path / "o"), "--classes", "covid"]) == 2
    assert "no image of class" in capsys.readouterr().err


def test_output_inside_source_is_not_scanned(tmp_path):
    src = covid_radiography(tmp_path)
    out = src / "prepared"
    first, _ = run("folders", src, out, "--cache-dir", str(src / "cache"), "--cache-size", "16")
    again, summary = run("folders", src, out, "--cache-dir", str(src / "cache"), "--cache-size", "16")
    assert first == again and summary["cache"]["written"] == 0
    assert summary["duplicates"]["groups"] == 0


def test_nothing_usable_writes_summary(tmp_path, capsys):
    src = tmp_path / "broken"
    write_garbage(src / "normal" / "x.png")
    assert main(["folders", "--src", str(src), "--out", str(tmp_path / "out"), "--workers", "1"]) == 2
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["skipped"][0]["kind"] == "unreadable"
    assert not (tmp_path / "out" / "datalist.json").exists()
    assert "no usable image" in capsys.readouterr().err


def test_script_runs_from_repo_root(tmp_path):
    src = tmp_path / "data"
    for cls in ("normal", "pneumonia"):
        for i in range(3):
            write_image(src / cls / f"{cls}{i}.png")
    args = ["folders", "--src", src, "--out", tmp_path / "out", "--workers", "1", "--no-decode"]
    proc = run_script("prepare_dataset.py", *map(str, args), cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "train with:" in proc.stdout
    assert json.loads((tmp_path / "out" / "datalist.json").read_text())["class_names"] == ["normal", "pneumonia"]


def test_known_classes_take_the_shipped_model_order(tmp_path, capsys):
    """Folders sorted by name would put covid19 before viral_pneumonia and swap them for the shipped model."""
    from bundle.prepare.labels import MODEL_CLASSES

    src = tmp_path / "src"
    for cls in sorted(MODEL_CLASSES):
        for i in range(4):
            write_image(src / cls / f"{cls}-{i}.png")
    datalist, summary = run("folders", src, tmp_path / "out")
    assert datalist["class_names"] == list(MODEL_CLASSES)
    assert "the shipped model's classes, in its order" in capsys.readouterr().out
    datalist, summary = run("folders", src, tmp_path / "out2", "--classes", *sorted(MODEL_CLASSES))
    assert datalist["class_names"] == sorted(MODEL_CLASSES)  # the user's order is kept, and told
    assert "prepare again with --classes normal,bacterial_pneumonia,viral_pneumonia,covid19" in summary["model_classes"]
