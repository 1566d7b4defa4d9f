"""Pretext tasks: rotation labels match the rotation; jigsaw permutations are fixed, distinct and recoverable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from bundle.networks import build_encoder
from bundle.ssl.jigsaw import Jigsaw, hamming_permutations
from bundle.ssl.methods import build_pretext
from bundle.ssl.rotation import ROTATIONS, Rotation, rotate_batch
from tests.conftest import ROOT, write_dataset


def asymmetric(batch: int = 4, size: int = 12) -> torch.Tensor:
    return torch.arange(batch * size * size, dtype=torch.float32).view(batch, 1, size, size)


def test_rotation_labels_match_the_rotation_applied():
    images = asymmetric()
    labels = torch.tensor([0, 1, 2, 3])
    rotated = rotate_batch(images, labels)
    for b, k in enumerate(labels.tolist()):
        assert np.array_equal(rotated[b, 0].numpy(), np.rot90(images[b, 0].numpy(), k))  # k x 90 deg, counter-clockwise
    back = rotate_batch(rotated, (4 - labels) % 4)
    assert torch.equal(back, images)
    assert ROTATIONS == (0, 90, 180, 270)


def test_rotation_task_draws_labels_and_rotates_accordingly():
    torch.manual_seed(0)
    images = asymmetric(16)
    rotated, labels = Rotation.make_task(images)
    assert set(labels.tolist()) == {0, 1, 2, 3}
    for b in range(16):
        assert torch.equal(rotated[b], torch.rot90(images[b], int(labels[b]), dims=(-2, -1)))


def test_rotation_needs_square_images():
    with pytest.raises(ValueError, match="square"):
        rotate_batch(torch.zeros(1, 1, 8, 9), torch.zeros(1, dtype=torch.long))


def test_jigsaw_permutation_set_is_fixed_and_distinct():
    perms = hamming_permutations(30, seed=0)
    hamming_permutations.cache_clear()
    again = hamming_permutations(30, seed=0)
    assert np.array_equal(perms, again) and perms.shape == (30, 9)
    assert all(sorted(p) == list(range(9)) for p in perms.tolist())
    assert len({tuple(p) for p in perms.tolist()}) == 30
    dist = [(perms[i] != perms[j]).sum() for i in range(30) for j in range(i + 1, 30)]
    assert min(dist) >= 6  # farthest-point selection keeps every pair far apart
    assert not np.array_equal(hamming_permutations(30, seed=1), perms)


def test_jigsaw_labels_recover_the_permutation():
    torch.manual_seed(0)
    jigsaw = Jigsaw(build_encoder(), 512, num_permutations=10, tile_fraction=1.0).eval()
    images = torch.rand(6, 1, 30, 30)
    tiles = jigsaw.tiles(images, random_offset=False)
    assert tiles.shape == (6, 9, 1, 10, 10)
    assert torch.equal(tiles[2, 5], images[2, :, 10:20, 20:30])  # reading order: cell 5 = row 1, column 2
    puzzle, labels = jigsaw.make_task(images)
    for b in range(6):
        order = jigsaw.permutations[labels[b]]
        assert torch.equal(puzzle[b], tiles[b, order])  # position j shows tile order[j]
        restored = torch.empty_like(puzzle[b])
        restored[order] = puzzle[b]
        assert torch.equal(restored, tiles[b])


def test_jigsaw_and_rotation_train_and_export_the_encoder_only():
    torch.manual_seed(0)
    for method in (Jigsaw(build_encoder(), 512, num_permutations=10), Rotation(build_encoder(), 512)):
        out = method({"image": torch.rand(3, 1, 36, 36)})
        assert torch.isfinite(out["loss"]) and out["embedding"].shape == (3, 512)
        out["loss"].backward()
        assert {k.split(".")[0] for k in method.export_state()} == {"encoder"}


def test_unknown_pretext_is_named():
    with pytest.raises(ValueError, match="unknown ssl_method 'colour'"):
        build_pretext("colour", build_encoder(), 512)


@pytest.mark.parametrize("pretext", ["rotation", "jigsaw"])
def test_pretext_config_runs_one_epoch(pretext, tmp_path):
    write_dataset(tmp_path / "data", n_per_class=2)
    wf = ConfigWorkflow(
        config_file=str(ROOT / "configs/pretrain_pretext.json"),
        workflow_type="train",
        bundle_root=str(ROOT),
        ssl_method=pretext,
        dataset_dir=str(tmp_path / "data"),
        image_size=32,
        batch_size=4,
        num_workers=0,
        max_epochs=1,
        num_permutations=10,
        probe_interval=0,
        ckpt_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "eval"),
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    weights = torch.load(tmp_path / "models" / f"pretrained_{pretext}.pt", weights_only=True)
    assert weights and all(k.startswith("encoder.") for k in weights)
    assert not (tmp_path / "models" / f"pretrain_{pretext}_checkpoint.pt").exists()  # removed when the run ends
