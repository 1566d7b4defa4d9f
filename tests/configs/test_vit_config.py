"""``--backbone vit_s16`` through MONAI's runner on the real collection: group-masked pretraining feeds fine-tuning,
which evaluates, explains and exports (from a folder outside the bundle, given --bundle_root)."""

from __future__ import annotations

import json
import re

import pytest
import torch

from tests.conftest import ROOT, SHARED_CXR, requires_shared, run_bundle

pytestmark = [requires_shared, pytest.mark.slow]  # five runs of the ViT chain, each a process
SIZE = "32"  # a 2 x 2 patch grid: the chain, not the accuracy, is under test here


def configs(*names: str) -> str:
    return "[" + ",".join(f"'{ROOT / 'configs' / n}.json'" for n in names) + "]"


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """GMML pretraining (1 epoch) -> fine-tuning from it (1 epoch) on 48 real images; returns (folder, logs)."""
    tmp = tmp_path_factory.mktemp("vit")
    entries = json.loads((SHARED_CXR / "datalist.json").read_text())["training"]
    with_masks = [e for e in entries if "mask" in e]
    picked = [e for c in range(4) for e in [e for e in entries if e["label"] == c and "mask" not in e][:8]]
    picked += [e for c in range(4) for e in [e for e in with_masks if e["label"] == c][:4]]
    (tmp / "datalist.json").write_text(json.dumps({"training": picked}))
    common = ["--bundle_root", str(ROOT), "--dataset_dir", str(SHARED_CXR), "--datalist", str(tmp / "datalist.json")]
    common += ["--backbone", "vit_s16", "--image_size", SIZE, "--num_workers", "0", "--show_progress", "false"]
    pretrain = run_bundle(
        "run",
        "--config_file",
        configs("pretrain_inpainting"),
        "--ssl_method",
        "group_masked",
        "--max_epochs",
        "1",
        "--batch_size",
        "8",
        "--probe_interval",
        "0",
        "--ckpt_dir",
        str(tmp / "pretrain"),
        "--output_dir",
        str(tmp / "pretrain"),
        *common,
        cwd=tmp,
    )
    train = run_bundle(
        "run",
        "--config_file",
        configs("train"),
        "--max_epochs",
        "1",
        "--batch_size",
        "8",
        "--resume",
        "false",
        "--pretrained_ckpt",
        str(tmp / "pretrain" / "pretrained_group_masked.pt"),
        "--ckpt_dir",
        str(tmp / "train"),
        "--output_dir",
        str(tmp / "train"),
        *common,
        cwd=tmp,
    )
    return tmp, common, pretrain.stdout + pretrain.stderr, train.stdout + train.stderr


def test_group_masked_weights_reach_every_encoder_and_decoder_key(chain):
    tmp, _, _, log = chain
    weights = torch.load(tmp / "pretrain" / "pretrained_group_masked.pt", weights_only=True)
    assert weights["encoder.vit.patch_embedding.position_embeddings"].shape == (1, 196, 384)
    matched = re.search(r"decoder (\d+)/(\d+), encoder (\d+)/(\d+)", log)
    assert matched, log[-3000:]
    dec, dec_all, enc, enc_all = map(int, matched.groups())
    assert dec == dec_all > 0 and enc == enc_all > 100  # all 12 blocks and the UNETR decoder
    assert (tmp / "train" / "model.pt").is_file()


def test_evaluates_and_explains(chain):
    tmp, common, _, _ = chain
    run_bundle(
        "run",
        "--config_file",
        configs("train", "evaluate"),
        "--ckpt_dir",
        str(tmp / "train"),
        "--output_dir",
        str(tmp / "eval"),
        *common,
        cwd=tmp,
    )
    metrics = json.loads((tmp / "eval" / "metrics.json").read_text())
    assert metrics["num_images"] > 0 and 0 <= metrics["auc_macro"] <= 1 and 0 <= metrics["dice_lung"] <= 1
    images = tmp / "images"
    images.mkdir()
    for e in json.loads((tmp / "datalist.json").read_text())["training"][:2]:
        (images / e["image"].split("/")[-1]).write_bytes((SHARED_CXR / e["image"]).read_bytes())
    # inference reads no datalist and shows no progress bar: those ids are not its own
    given = dict(zip(common[::2], common[1::2]))
    inference = [a for k, v in given.items() if k not in ("--datalist", "--show_progress") for a in (k, v)]
    run_bundle(
        "run",
        "--config_file",
        configs("inference"),
        "--ckpt_dir",
        str(tmp / "train"),
        "--output_dir",
        str(tmp / "inference"),
        "--saliency",
        "gradcampp",
        *inference,
        "--dataset_dir",
        str(images),
        cwd=tmp,
    )
    rows = json.loads((tmp / "inference" / "predictions.json").read_text())
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert all(0 <= r["lung_attention"] <= 1 and (tmp / "inference" / r["saliency_file"]).is_file() for r in rows)
    assert len(list((tmp / "inference" / "saliency").iterdir())) == 2


def test_exports_through_the_runner(chain):
    tmp, _, _, _ = chain
    ts = tmp / "classifier.ts"
    run_bundle(
        "ckpt_export",
        "network_def",
        "--filepath",
        str(ts),
        "--ckpt_file",
        str(tmp / "train" / "model.pt"),
        "--meta_file",
        str(ROOT / "configs" / "metadata.json"),
        "--config_file",
        str(ROOT / "configs" / "inference.json"),
        "--bundle_root",
        str(ROOT),
        "--backbone",
        "vit_s16",
        "--image_size",
        SIZE,
        cwd=tmp,
    )
    exported = torch.jit.load(str(ts))
    assert exported(torch.rand(2, 1, 32, 32)).shape == (2, 4)
