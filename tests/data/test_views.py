"""Two-view datasets: views of one image differ, MICLe pairs are two images of one patient, workers draw their own
augmentations, unlabelled data and plain folders work, and the augmentations are the ones the config lists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader
from monai.transforms import Compose

from bundle.data.datalist import prepare_splits, pretraining_splits
from bundle.data.precision import to_float
from bundle.data.views import TwoViewDataset, patient_groups
from tests.conftest import CLASS_NAMES, ROOT, SHARED_CXR, requires_shared, write_dataset

SIZE = 32


def parse_config(**override) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "pretrain_contrastive.json"))
    parser.update({"bundle_root": str(ROOT), "image_size": SIZE, **override})
    return parser


def make_dataset(data, multi_instance=False, identity_views=False, **override) -> TwoViewDataset:
    parser = parse_config(**override)
    views = Compose([]) if identity_views else Compose(parser.get_parsed_content("train#view_transforms"))
    return TwoViewDataset(
        data, parser.get_parsed_content("train#preprocessing"), views, multi_instance=multi_instance, num_workers=0
    )


@pytest.fixture
def entries(tmp_path: Path) -> list[dict]:
    """16 images, two per patient, plus one image without a patient and one without a label."""
    datalist = write_dataset(tmp_path / "data", n_per_class=4)
    data = json.loads(datalist.read_text())["training"]
    for e in data:
        e["image"] = str(tmp_path / "data" / e["image"])
        e.pop("mask", None)
    data.append({"image": data[0]["image"], "label": 0})
    data.append({"image": data[1]["image"], "patient": "lonely"})
    return data


def test_patient_groups() -> None:
    data = [{"patient": "a"}, {"patient": "b"}, {"patient": "a"}, {}, {"patient": "a"}, {"patient": ""}]
    assert patient_groups(data) == [[2, 4], [], [0, 4], [], [0, 2], []]


def test_two_views_of_one_image_differ(entries) -> None:
    ds = make_dataset(entries)
    for i in range(len(ds)):
        item = ds[i]
        assert item["partner"] == i
        assert item["view1"].shape == item["view2"].shape == (1, SIZE, SIZE)
        assert type(item["view1"]) is torch.Tensor  # no MetaTensor bookkeeping in the views
        assert not torch.allclose(item["view1"], item["view2"]), f"entry {i}: the two views are identical"


def test_micle_pairs_are_two_different_images_of_one_patient(entries) -> None:
    ds = make_dataset(entries, multi_instance=True, identity_views=True)
    seen_partners = set()
    for i in range(len(ds)):
        item = ds[i]
        j = item["partner"]
        if entries[i].get("patient") in (None, "lonely"):
            assert j == i  # nobody to pair with: two views of one image
            continue
        assert j != i and entries[j]["patient"] == entries[i]["patient"]
        assert entries[j]["image"] != entries[i]["image"]
        # the cache holds compact images (cache_dtype): the views are their [0, 1] floats
        assert torch.equal(item["view1"], to_float(ds.cache[i]["image"]))
        assert torch.equal(item["view2"], to_float(ds.cache[j]["image"]))
        assert not torch.equal(item["view1"], item["view2"])
        seen_partners.add((i, j))
    assert len(seen_partners) == 16


def test_without_multi_instance_both_views_come_from_the_same_image(entries) -> None:
    ds = make_dataset(entries, identity_views=True)
    item = ds[2]
    assert item["partner"] == 2 and torch.equal(item["view1"], item["view2"])


def test_dataloader_workers_draw_different_augmentations(entries) -> None:
    same = [{"image": entries[0]["image"]} for _ in range(4)]
    ds = make_dataset(same)
    batches = list(DataLoader(ds, batch_size=1, num_workers=2, shuffle=False))
    firsts = [b["view1"][0] for b in batches]
    for a in range(len(firsts)):
        for b in range(a + 1, len(firsts)):
            assert not torch.allclose(firsts[a], firsts[b]), "two workers repeated the same random augmentation"


def test_unlabelled_entries_get_label_minus_one(entries) -> None:
    ds = make_dataset(entries, identity_views=True)
    assert int(ds[len(entries) - 1]["label"]) == -1 and int(ds[0]["label"]) == 0


def test_horizontal_flip_is_off_by_default_and_on_by_option(entries) -> None:
    still = dict.fromkeys(("affine_prob", "contrast_prob", "hist_shift_prob", "blur_prob", "noise_prob"), 0.0)
    still["crop_min_scale"] = 1.0
    plain = make_dataset(entries[:2], **still)
    image = to_float(plain.cache[0]["image"])
    assert all(torch.allclose(plain[0]["view1"], image, atol=1e-5) for _ in range(5))
    flipped = make_dataset(entries[:2], hflip_prob=1.0, **still)
    assert torch.allclose(flipped[0]["view1"], torch.flip(image, dims=[-1]), atol=1e-5)


def test_config_lists_the_cxr_augmentations() -> None:
    names = [type(t).__name__ for t in parse_config().get_parsed_content("train#view_transforms")]
    assert names == [
        "RandScaleCrop",
        "Resize",
        "RandFlip",
        "RandAffine",
        "RandAdjustContrast",
        "RandHistogramShift",
        "RandGaussianSmooth",
        "RandGaussianNoise",
    ]
    parser = parse_config()
    assert parser["hflip_prob"] == 0.0


def test_plain_folder_and_split_parity(tmp_path: Path) -> None:
    datalist = write_dataset(tmp_path / "data", n_per_class=4)
    folder = pretraining_splits(None, tmp_path, CLASS_NAMES, image_dir=tmp_path / "data" / "images")
    assert len(folder["training"]) == 16 and folder["validation"] == []
    # the same patients as configs/train.json's training split, all of them (no label_fraction)
    ours = pretraining_splits(datalist, tmp_path / "data", CLASS_NAMES, seed=3)
    theirs = prepare_splits(datalist, tmp_path / "data", CLASS_NAMES, seed=3)
    assert [e["image"] for e in ours["training"]] == [e["image"] for e in theirs["training"]]
    assert [e["image"] for e in ours["test"]] == [e["image"] for e in theirs["test"]]
    # labels are optional
    content = json.loads(datalist.read_text())
    for e in content["training"][::2]:
        e.pop("label")
    datalist.write_text(json.dumps(content))
    assert len(pretraining_splits(datalist, tmp_path / "data", CLASS_NAMES)["training"]) > 0
    with pytest.raises(SystemExit, match="image_dir"):  # a user error: one message, no traceback
        pretraining_splits(None, tmp_path, CLASS_NAMES)


def test_bad_entry_is_reported_with_its_file(tmp_path: Path) -> None:
    datalist = write_dataset(tmp_path / "data", n_per_class=2)
    content = json.loads(datalist.read_text())
    content["training"].append({"image": "images/missing.png"})
    datalist.write_text(json.dumps(content))
    with pytest.raises(SystemExit, match="missing.png"):
        pretraining_splits(datalist, tmp_path / "data", CLASS_NAMES)
    with pytest.raises(ValueError, match="empty"):
        TwoViewDataset([], Compose([]), Compose([]))


@requires_shared
def test_cxr_real_has_micle_pairs() -> None:
    splits = pretraining_splits(SHARED_CXR / "datalist.json", SHARED_CXR, CLASS_NAMES)
    train = splits["training"]
    partners = patient_groups(train)
    paired = [i for i, p in enumerate(partners) if p]
    assert len(paired) > 100
    assert all(train[j]["patient"] == train[i]["patient"] for i in paired for j in partners[i])
    train_patients = {e["patient"] for e in train}
    assert not train_patients & {e["patient"] for e in splits["test"]}
