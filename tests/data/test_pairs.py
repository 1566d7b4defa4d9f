"""Image pairs of two-view pretraining: MICLe pairs are two images of one patient, other pairs one image twice,
the images stay as cached, unlabelled data and plain folders work; the config's views of a pair differ and follow
its settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import list_data_collate
from monai.transforms import Compose

from bundle.data.datalist import prepare_splits, pretraining_splits
from bundle.data.pairs import TwoViewDataset, patient_groups
from bundle.data.precision import to_float
from bundle.data.views import RULES
from bundle.engines.pretraining import SSLPrepareBatch
from tests.conftest import CLASS_NAMES, ROOT, SHARED_CXR, requires_shared, write_dataset

SIZE = 32


def parse_config(**override) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "pretrain_contrastive.json"))
    parser.update({"bundle_root": str(ROOT), "image_size": SIZE, **override})
    return parser


def make_dataset(data, multi_instance=False, **override) -> TwoViewDataset:
    parser = parse_config(**override)
    return TwoViewDataset(data, parser.get_parsed_content("train#preprocessing"), multi_instance, num_workers=0)


def config_views(items: list[dict], **override) -> dict[str, torch.Tensor]:
    """The config's views (``train#views``, made by ``SSLPrepareBatch``) of a collated list of dataset items."""
    parser = parse_config(**override)
    prepare = SSLPrepareBatch(keys=["view1", "view2"], views=parser.get_parsed_content("train#views"))
    return prepare(list_data_collate(items), device="cpu")[0]


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


def test_the_two_views_of_one_image_differ(entries) -> None:
    ds = make_dataset(entries)
    items = [ds[i] for i in range(len(ds))]
    assert all(it["partner"] == i and torch.equal(it["image1"], it["image2"]) for i, it in enumerate(items))
    views = config_views(items)
    assert views["view1"].shape == views["view2"].shape == (len(ds), 1, SIZE, SIZE)
    for i in range(len(ds)):
        assert not torch.allclose(views["view1"][i], views["view2"][i]), f"entry {i}: the two views are identical"


def test_micle_pairs_are_two_different_images_of_one_patient(entries) -> None:
    ds = make_dataset(entries, multi_instance=True)
    seen_partners = set()
    for i in range(len(ds)):
        item = ds[i]
        j = item["partner"]
        if entries[i].get("patient") in (None, "lonely"):
            assert j == i  # nobody to pair with: two views of one image
            continue
        assert j != i and entries[j]["patient"] == entries[i]["patient"]
        assert entries[j]["image"] != entries[i]["image"]
        # the images as cached (compact integers: cache_dtype), for the views to be made on the device
        assert item["image1"].dtype == torch.uint8
        assert torch.equal(item["image1"], torch.as_tensor(ds.cache[i]["image"]))
        assert torch.equal(item["image2"], torch.as_tensor(ds.cache[j]["image"]))
        assert not torch.equal(item["image1"], item["image2"])
        seen_partners.add((i, j))
    assert len(seen_partners) == 16


def test_without_multi_instance_both_images_are_the_same(entries) -> None:
    item = make_dataset(entries)[2]
    assert item["partner"] == 2 and torch.equal(item["image1"], item["image2"])


def test_unlabelled_entries_get_label_minus_one(entries) -> None:
    ds = make_dataset(entries)
    assert int(ds[len(entries) - 1]["label"]) == -1 and int(ds[0]["label"]) == 0


def test_horizontal_flip_is_off_by_default_and_on_by_option(entries) -> None:
    still = dict.fromkeys(("affine_prob", "contrast_prob", "hist_shift_prob", "blur_prob", "noise_prob"), 0.0)
    still["crop_min_scale"] = 1.0
    ds = make_dataset(entries[:2])
    items = [ds[0]] * 5
    image = to_float(ds.cache[0]["image"])
    assert all(torch.allclose(v, image, atol=1e-5) for v in config_views(items, **still)["view1"])
    flipped = config_views(items, hflip_prob=1.0, **still)["view1"]
    assert all(torch.allclose(v, torch.flip(image, dims=[-1]), atol=1e-5) for v in flipped)


def test_config_views_read_every_view_setting() -> None:
    parser = parse_config()
    assert parser["hflip_prob"] == 0.0
    views = parser["train#views"]
    assert views["_target_"] == "bundle.data.views.BatchViews"
    for name in RULES:  # every setting of the views reaches them
        assert views[name] == f"@{name}", name


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
        TwoViewDataset([], Compose([]))


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
