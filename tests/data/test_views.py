"""Batched views on the training device: the same augmentations as MONAI's per-image chain with the same settings
(parameters and outputs agree in distribution, and a wrong setting is caught), independent per sample, seeded, the
same from compact uint8 images, made by SSLPrepareBatch, and a short real pretraining run."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import set_track_meta
from monai.transforms import Compose

from bundle.data.precision import compact, to_float
from bundle.data.views import BatchViews
from bundle.engines.pretraining import SSLPrepareBatch
from tests.conftest import ROOT, sample_workflow, synthetic_cxr
from tests.data.reference_views import monai_chain

SIZE = 32
N = 300  # views per distribution: the KS statistic of two equal distributions stays below 0.1 (p ~ 0.1)
KS_TOL = 0.16  # two-sample KS critical value at alpha = 0.001 for 300 + 300 samples
# every random transform off, the crop keeping the whole image: one transform at a time is switched on
STILL = dict.fromkeys(("hflip_prob", "affine_prob", "contrast_prob", "hist_shift_prob", "blur_prob", "noise_prob"), 0.0)
STILL["crop_min_scale"] = 1.0


pytestmark = pytest.mark.usefixtures("one_thread")  # thousands of tiny tensor ops (tests/conftest.py)


def parse(**override) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "pretrain_contrastive.json"))
    parser.update({"bundle_root": str(ROOT), "image_size": SIZE, **override})
    return parser


def chains(seed: int = 0, **override) -> tuple[Compose, BatchViews]:
    """The config's batched views (``train#views``) and MONAI's per-image chain with their settings."""
    views = parse(**override).get_parsed_content("train#views")
    views.set_random_state(seed + 1)
    return monai_chain(views, seed), views


def image(seed: int = 0) -> torch.Tensor:
    """A (1, S, S) radiograph-like float image, brighter on the right so that a flip shows."""
    pixels, _ = synthetic_cxr(SIZE, SIZE, seed=seed)
    ramp = torch.linspace(0.6, 1.0, SIZE).view(1, 1, SIZE)
    return torch.as_tensor(pixels, dtype=torch.float32).div(255).unsqueeze(0) * ramp


def ks(a, b) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical distribution functions."""
    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    grid = np.concatenate([a, b])
    return float(np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b)).max())


def view_stats(views: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-view statistics of (N, 1, S, S) views: mean, spread, right-minus-left brightness, sharpness, corner."""
    v = views[:, 0].double()
    half = v.shape[-1] // 2
    return {
        "mean": v.mean((1, 2)).numpy(),
        "std": v.std((1, 2)).numpy(),
        "right_minus_left": (v[..., half:].mean((1, 2)) - v[..., :half].mean((1, 2))).numpy(),
        "sharpness": (
            (v[:, 1:] - v[:, :-1]).abs().mean((1, 2)) + (v[..., 1:] - v[..., :-1]).abs().mean((1, 2))
        ).numpy(),
        "corner": v[:, :3, :3].mean((1, 2)).numpy(),  # zeros brought in by a rotation
    }


PARAMS = ("size", "corner", "flip", "affine", "angle", "scale", "contrast", "gamma", "shift", "points", "control")
PARAMS += ("blur", "sigma", "noise", "noise_std")


def monai_views(chain: Compose, img: torch.Tensor, n: int = N) -> tuple[torch.Tensor, dict[str, list]]:
    """``n`` views of ``img`` by the per-image chain, and the parameters each one drew."""
    crop, _, flip, affine, contrast, shift, blur, noise = chain.transforms
    out, params = [], {k: [] for k in PARAMS}
    set_track_meta(False)
    try:
        for _ in range(n):
            out.append(torch.as_tensor(chain(img)))
            params["size"].append(crop._size)
            params["corner"].append([s.start for s in crop._slices])
            params["flip"].append(flip._do_transform)
            params["affine"].append(affine._do_transform)
            if affine._do_transform:
                params["angle"].append(affine.rand_affine_grid.rotate_params[0])
                scale = list(affine.rand_affine_grid.scale_params)
                params["scale"].append(scale + [1.0] * (2 - len(scale)))  # MONAI leaves unlisted axes unscaled
            params["contrast"].append(contrast._do_transform)
            if contrast._do_transform:
                params["gamma"].append(contrast.gamma_value)
            params["shift"].append(shift._do_transform)
            if shift._do_transform:
                params["points"].append(len(shift.reference_control_points))
                params["control"].append(float(np.mean(shift.floating_control_points[1:-1])))
            params["blur"].append(blur._do_transform)
            if blur._do_transform:
                params["sigma"].append([blur.x, blur.y])
            params["noise"].append(noise._do_transform)
            if noise._do_transform:
                params["noise_std"].append(float(np.std(noise.noise)))
    finally:
        set_track_meta(True)
    return torch.stack(out), params


@functools.lru_cache(maxsize=None)
def reference(settings: tuple) -> dict[str, np.ndarray]:
    """Statistics of ``N`` views of ``image()`` by the MONAI chain with ``settings`` (computed once per module)."""
    chain, _ = chains(**dict(settings))
    return view_stats(monai_views(chain, image())[0])


def batched(**settings) -> dict[str, np.ndarray]:
    """Statistics of one batch of ``N`` copies of ``image()`` by the batched views with ``settings``."""
    _, views = chains(**settings)
    out = views(image().unsqueeze(0).expand(N, -1, -1, -1))
    assert out.shape == (N, 1, SIZE, SIZE) and out.dtype == torch.float32
    return view_stats(out)


def batch_params(views: BatchViews, n: int = N) -> dict[str, list]:
    """The same parameters, as the batched views draw them for a batch of ``n``."""
    p = views.sample(n, SIZE, SIZE)
    steps = p.points - 1
    inner = torch.arange(p.control.shape[1]).unsqueeze(0)
    inner = (inner >= 1) & (inner < steps.unsqueeze(1))
    control = (p.control * inner).sum(1) / inner.sum(1)
    return {
        "size": p.crop[:, 2:].tolist(),
        "corner": p.crop[:, :2].tolist(),
        "flip": p.flip.tolist(),
        "affine": p.affine.tolist(),
        "angle": p.angle[p.affine].tolist(),
        "scale": p.scale[p.affine].tolist(),
        "contrast": p.contrast.tolist(),
        "gamma": p.gamma[p.contrast].tolist(),
        "shift": p.shift.tolist(),
        "points": p.points[p.shift].tolist(),
        "control": control[p.shift].tolist(),
        "blur": p.blur.tolist(),
        "sigma": p.sigma[p.blur].tolist(),
        "noise": p.noise.tolist(),
        "noise_std": p.noise_std[p.noise].tolist(),
    }


def param_gaps(ours: dict[str, list], theirs: dict[str, list]) -> dict[str, float]:
    """KS statistic of every drawn parameter (per axis where there are two), and of every yes/no draw."""
    gaps = {}
    for key in ours:
        a, b = np.asarray(ours[key], float), np.asarray(theirs[key], float)
        if a.ndim == 2:
            for axis in range(a.shape[1]):
                gaps[f"{key}[{axis}]"] = ks(a[:, axis], b[:, axis])
        else:
            gaps[key] = ks(a, b)
    return gaps


def test_parameters_are_drawn_from_monai_distributions():
    # every transform on often, the flip included, so that each parameter has a few hundred draws
    settings = dict(hflip_prob=0.5, affine_prob=0.9, contrast_prob=0.9, hist_shift_prob=0.9, blur_prob=0.9)
    chain, views = chains(**settings, noise_prob=0.9)
    _, theirs = monai_views(chain, image(), n=N)
    ours = batch_params(views, n=N)
    gaps = param_gaps(ours, theirs)
    assert max(gaps.values()) < KS_TOL, gaps
    # MONAI's single scale_range scales the height only
    assert np.allclose(np.asarray(theirs["scale"])[:, 1], 1.0) and np.allclose(np.asarray(ours["scale"])[:, 1], 1.0)
    assert np.ptp(np.asarray(ours["scale"])[:, 0]) > 0.15
    # a scale range twice too wide, a flip never applied, a crop twice as deep: each is caught
    for wrong, key in (
        (dict(scale_range=0.2), "scale[0]"),
        (dict(hflip_prob=0.0), "flip"),
        (dict(crop_min_scale=0.25), "size[0]"),
        (dict(gamma_range=[0.7, 2.0]), "gamma"),
    ):
        _, bad = chains(**{**settings, **wrong}, noise_prob=0.9)
        assert param_gaps(batch_params(bad, n=N), theirs)[key] > KS_TOL, wrong


TRANSFORMS = {
    "crop": dict(crop_min_scale=0.5),
    "flip": dict(hflip_prob=0.5),
    "affine": dict(affine_prob=1.0),
    "contrast": dict(contrast_prob=1.0),
    "hist_shift": dict(hist_shift_prob=1.0),
    "blur": dict(blur_prob=1.0),
    "noise": dict(noise_prob=1.0),
    "chain": {},  # the config's defaults, every transform at its own probability
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_views_agree_in_distribution_with_the_monai_chain(name):
    settings = TRANSFORMS[name] if name == "chain" else {**STILL, **TRANSFORMS[name]}
    a, b = batched(**settings), reference(tuple(sorted(settings.items())))
    gaps = {k: ks(a[k], b[k]) for k in a}
    assert max(gaps.values()) < KS_TOL, gaps


@pytest.mark.parametrize(
    "right, wrong, stat",
    [
        (dict(hflip_prob=0.5), dict(hflip_prob=0.0), "right_minus_left"),  # a flip never applied
        (dict(crop_min_scale=0.5), dict(crop_min_scale=1.0), "sharpness"),  # no zoom
        (dict(affine_prob=1.0), dict(affine_prob=1.0, rotate_range=0.5), "corner"),
        (dict(blur_prob=1.0), dict(blur_prob=1.0, blur_sigma=[0.1, 2.0]), "sharpness"),
        (dict(noise_prob=1.0), dict(noise_prob=1.0, noise_std=0.04), "sharpness"),
    ],
)
def test_a_wrong_setting_is_detected(right, wrong, stat):
    """The same comparison fails when the batched views are built with a wrong setting."""
    theirs = reference(tuple(sorted({**STILL, **right}.items())))
    assert ks(batched(**{**STILL, **right})[stat], theirs[stat]) < KS_TOL
    assert ks(batched(**{**STILL, **wrong})[stat], theirs[stat]) > KS_TOL


def test_every_view_of_a_batch_is_its_own():
    _, views = chains(hflip_prob=0.5)
    batch = image().unsqueeze(0).expand(8, -1, -1, -1)
    out = views(batch)
    flat = out.flatten(1)
    assert all(not torch.allclose(flat[i], flat[j]) for i in range(8) for j in range(i + 1, 8))
    p = views.sample(64, SIZE, SIZE)
    assert len(set(p.angle.tolist())) == 64 and len(set(p.gamma.tolist())) == 64
    assert 0 < int(p.flip.sum()) < 64 and 0 < int(p.affine.sum()) < 64  # each sample tosses its own coins
    assert len({tuple(c) for c in p.crop.tolist()}) > 32


def test_seeded_views_repeat_and_restart():
    _, first = chains()
    _, second = chains()
    batch = torch.stack([image(s) for s in range(4)])
    a1, a2 = first(batch), first(batch)
    assert torch.equal(a1, second(batch)) and torch.equal(a2, second(batch))
    assert not torch.equal(a1, a2)
    state = first.state_dict()
    after = first(batch)
    first.load_state_dict(state)
    assert torch.equal(first(batch), after)  # continues where the saved stream was
    first.set_random_state()
    assert torch.equal(first(batch), a1)  # restarts from the seed
    assert not torch.equal(first.set_random_state(seed=123)(batch), a1)


def test_uint8_images_give_the_views_of_their_float_values():
    _, views = chains()
    batch = torch.stack([image(s) for s in range(6)])
    stored = compact(batch, "uint8")
    as_uint8 = views(stored)
    views.set_random_state()
    as_float = views(to_float(stored))
    assert as_uint8.dtype == torch.float32 and torch.allclose(as_uint8, as_float, atol=1e-6)
    views.set_random_state()
    assert (views(batch) - as_uint8).abs().mean() < 1 / 255  # the rounding of the cache, no more


def test_prepare_batch_makes_the_views_on_the_device():
    _, views = chains()
    images = compact(torch.stack([image(s) for s in range(4)]), "uint8")
    batch = {"image1": images, "image2": images.flip(-1), "label": torch.zeros(4), "index": torch.arange(4)}
    prepared, target = SSLPrepareBatch(keys=["view1", "view2"], views=views)(batch, device="cpu")
    assert target is None and set(prepared) == {"view1", "view2"}
    assert prepared["view1"].shape == prepared["view2"].shape == (4, 1, SIZE, SIZE)
    assert prepared["view1"].dtype == torch.float32 and not torch.allclose(prepared["view1"], prepared["view2"])
    assert set(SSLPrepareBatch(views=views)(batch)[0]) == {"view1", "view2", "label", "index"}
    # a batch that already holds views passes through
    ready = {"view1": torch.ones(2, 1, 4, 4), "view2": torch.zeros(2, 1, 4, 4)}
    assert torch.equal(SSLPrepareBatch(views=views)(ready)[0]["view1"], ready["view1"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_views_on_cuda_match_the_cpu_views_for_the_same_parameters():
    _, views = chains()
    batch = torch.stack([image(s) for s in range(8)])
    params = views.sample(8, SIZE, SIZE)
    on_cpu = views.apply(batch, params)
    moved = type(params)(**{k: v.cuda() for k, v in params.as_dict().items()})
    on_gpu = views.apply(compact(batch).cuda(), moved)
    assert on_gpu.device.type == "cuda" and (on_gpu.cpu() - on_cpu).abs().max() < 0.05
    assert views(batch.cuda()).device.type == "cuda"


def test_config_pretrains_with_the_views_made_on_the_device(tmp_path: Path):
    """One epoch at 64 px on eight sample images: the loader carries images, the trainer makes the views."""
    wf = sample_workflow("pretrain_contrastive", tmp_path)
    dataset = wf.parser.get_parsed_content("train#dataset")
    assert {"image1", "image2"} <= set(dataset[0]) and "view1" not in dataset[0]
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 1 and trainer.state.iteration == len(wf.parser.get_parsed_content("train#dataloader"))
    assert np.isfinite(trainer.state.output["loss"].item())
    assert (tmp_path / "models" / "pretrained_simclr.pt").is_file()
    wf.finalize()
