"""``nih``: NIH ChestX-ray14 Data_Entry_2017.csv, images_00N/images/, official lists, boxes."""

from __future__ import annotations

import os

from bundle.data.datalist import SECTIONS

from .fixtures import check_datalist, run, skipped_items, write_garbage, write_image

HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
FINDINGS = [
    "No Finding",
    "Cardiomegaly|Emphysema",
    "Effusion",
    "Atelectasis|Effusion|Infiltration",
    "Hernia",
    "Mass|Nodule",
    "Pneumothorax",
    "No Finding",
]


def nih(root):
    """The Kaggle layout: Data_Entry_2017.csv (trailing comma in the header), images_001/images/*.png..."""
    src = root / "nih-chest-xrays"
    rows, test = [HEADER], []
    for p in range(1, 13):
        for follow_up in range(2):
            name = f"{p:08d}_{follow_up:03d}.png"
            folder = "images_001" if p <= 6 else "images_002"
            write_image(src / folder / "images" / name)
            view = "LL" if (p, follow_up) == (3, 1) else ("AP" if follow_up else "PA")
            rows.append(
                f"{name},{FINDINGS[(p + follow_up) % len(FINDINGS)]},{follow_up},{p},58,M,{view},"
                "2682,2749,0.143,0.143,"
            )
            if p > 9:
                test.append(name)
    rows.append("00009999_000.png,Mass,0,9999,40,F,PA,2500,2048,0.168,0.168,")  # no such image
    write_garbage(src / "images_002" / "images" / "00000013_000.png")
    write_image(src / "images_002" / "images" / "00000014_000.png")  # an image the CSV does not list
    rows.append("00000013_000.png,No Finding,0,13,40,F,PA,2500,2048,0.168,0.168,")
    (src / "Data_Entry_2017.csv").write_text("\n".join(rows) + "\n")
    (src / "README_CHESTXRAY.pdf").write_bytes(b"%PDF-1.4")
    (src / "test_list.txt").write_text("\n".join(test) + "\n")
    (src / "train_val_list.txt").write_text("\n".join(r.split(",")[0] for r in rows[1:] if r.split(",")[0] not in test))
    (src / "BBox_List_2017.csv").write_text(
        "Image Index,Finding Label,Bbox [x,y,w,h],,,\n" "00000001_000.png,Cardiomegaly,225.08,547.02,86.78,79.18\n"
    )
    return src


def test_nih_multilabel(tmp_path):
    src = nih(tmp_path)
    datalist, summary = run("nih", src, tmp_path / "out")
    check_datalist(tmp_path / "out", datalist)
    assert datalist["multi_label"] is True and len(datalist["class_names"]) == 14
    assert datalist["class_names"][:3] == ["atelectasis", "cardiomegaly", "effusion"]
    entries = {os.path.basename(e["image"]): e for s in SECTIONS for e in datalist[s]}
    assert len(entries) == 23
    e = entries["00000001_000.png"]
    names = datalist["class_names"]
    assert [names[i] for i, v in enumerate(e["label"]) if v] == ["cardiomegaly", "emphysema"]
    assert e["patient"] == "1" and e["view"] == "PA" and e["boxes"] == [[225.08, 547.02, 86.78, 79.18]]
    assert not any(entries["00000008_000.png"]["label"])  # "No Finding": all zeros
    skipped = skipped_items(summary)
    assert "00009999_000.png" in skipped["Data_Entry_2017.csv line 26"]["reason"]
    assert skipped["Data_Entry_2017.csv line 26"]["kind"] == "missing_file"
    assert skipped["00000013_000.png"]["kind"] == "unreadable"
    assert skipped["Data_Entry_2017.csv line 7"]["kind"] == "filtered"  # lateral
    assert skipped["00000014_000.png"]["kind"] == "no_label"
    assert not any("LOG" in s["item"] or s["item"].endswith(".csv") for s in summary["skipped"])
    assert summary["per_class"]["(no positive class)"]["total"] > 0


def test_nih_official_test_and_findings(tmp_path):
    src = nih(tmp_path)
    datalist, _ = run("nih", src, tmp_path / "out", "--official-test", "--findings", "Effusion", "Cardiomegaly")
    check_datalist(tmp_path / "out", datalist)
    assert datalist["class_names"] == ["effusion", "cardiomegaly"]
    assert {e["patient"] for e in datalist["test"]} == {"10", "11", "12"}
