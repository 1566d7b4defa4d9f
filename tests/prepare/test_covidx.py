"""``covidx``: COVIDx CXR label files and train/val/test folders."""

from __future__ import annotations

import os

from bundle.data.datalist import SECTIONS

from .fixtures import check_datalist, run, skipped_items, write_garbage, write_image


def covidx(root):
    """COVIDx CXR-4 style: train.txt / val.txt / test.txt, images in train/ val/ test/."""
    src = root / "covidx-cxr"
    lines = {"train": [], "val": [], "test": []}
    n = 0
    for split, count in (("train", 12), ("val", 3), ("test", 4)):
        for _ in range(count):
            n += 1
            patient = f"{n // 2}"  # two images per patient
            label = "positive" if n % 3 else "negative"
            source = "rsna" if n % 2 else "sirm"
            name = f"{'5fa0e2c1' if split == 'train' else 'a7b1'}-{n:04d}.png"
            write_image(src / split / name)
            lines[split].append(f"{patient} {name} {label} {source}")
    # A file name with spaces, as some sources have.
    write_image(src / "train" / "COVID-19 (12).png")
    lines["train"].append("9001 COVID-19 (12).png positive cohen")
    # A row naming a missing image, a broken image, a short line.
    lines["train"].append("9002 missing-image.png negative rsna")
    write_garbage(src / "train" / "broken-0001.png")
    lines["train"].append("9003 broken-0001.png negative rsna")
    lines["train"].append("9004 only-two-fields")
    write_image(src / "test" / "not-in-any-list.png")
    for split, rows in lines.items():
        (src / f"{split}.txt").write_text("\n".join(rows) + "\n\n")
    return src


def test_covidx_entries_and_skipped(tmp_path):
    src = covidx(tmp_path)
    datalist, summary = run("covidx", src, tmp_path / "out")
    check_datalist(tmp_path / "out", datalist)
    assert datalist["class_names"] == ["negative", "positive"]
    entries = {os.path.basename(e["image"]): e for s in SECTIONS for e in datalist[s]}
    assert len(entries) == 20
    spaced = entries["COVID-19 (12).png"]
    assert spaced["patient"] == "9001" and spaced["source"] == "cohen" and spaced["label"] == 1
    skipped = skipped_items(summary)
    assert skipped["train.txt line 14"]["kind"] == "missing_file"
    assert "missing-image.png" in skipped["train.txt line 14"]["reason"]
    assert skipped["broken-0001.png"]["kind"] == "unreadable"
    assert skipped["train.txt line 16"]["kind"] == "bad_row"
    assert skipped["not-in-any-list.png"]["reason"] == "not listed in test.txt, train.txt, val.txt"
    assert summary["skipped_by_kind"] == {"bad_row": 1, "missing_file": 1, "no_label": 1, "unreadable": 1}


def test_covidx_official_test(tmp_path):
    src = covidx(tmp_path)
    # Patient 8 is in test.txt; an image of theirs listed in train.txt must follow them into test.
    write_image(src / "train" / "patient8-later.png")
    with open(src / "train.txt", "a") as f:
        f.write("8 patient8-later.png positive sirm\n")
    datalist, summary = run("covidx", src, tmp_path / "out", "--official-test", "--val-fraction", "0.2")
    check_datalist(tmp_path / "out", datalist)
    names = {os.path.basename(e["image"]) for e in datalist["test"]}
    assert names == {f"a7b1-{n:04d}.png" for n in range(16, 20)} | {"patient8-later.png"}
    assert any("moved to test" in n for n in summary["notes"])
    assert datalist["validation"]
