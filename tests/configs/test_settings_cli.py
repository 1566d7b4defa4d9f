"""Wrong settings on the real command line: one message naming the id, the value and what is allowed.

Each case runs ``python -m monai.bundle run`` with the arguments a user would type and asserts a non-zero exit
status, the id in the output, and no traceback; all of them stop in ``initialize``, before a dataset is cached or a
network built. One case and the debug run are real commands; the others run the same command line in this
interpreter (``bundle_in_process``), which saves an interpreter start of ~10 s each.
"""

from __future__ import annotations

import pytest

from tests.helpers import ROOT, bundle_in_process, run_bundle

CASES = {
    "train: ranges, names and spellings": (
        ["configs/train.json"],
        ["--label_fraction", "1.5", "--backbone", "resnet11", "--resume", "perhaps", "--batch_size", "0"],
        [
            "4 setting(s) cannot be used",
            "label_fraction: 1.5 must be a number in (0, 1]",
            "backbone: 'resnet11'",
            "resume: 'perhaps'",
            "batch_size: 0",
        ],
    ),
    "train: an image size the encoder cannot halve five times": (
        ["configs/train.json"],
        ["--image_size", "200"],
        ["image_size: 200 cannot be halved five times by the encoder and decoder", "e.g. 192 or 224"],
    ),
    "train: a missing dataset folder": (
        ["configs/train.json"],
        ["--dataset_dir", "/nonexistent/cxr"],
        ["dataset_dir: '/nonexistent/cxr' no such folder"],
    ),
    "inference: unknown saliency method and layer": (
        ["configs/inference.json"],
        ["--saliency", "gradcam++", "--saliency_layer", "decoder.blocks.0"],
        [
            "saliency: 'gradcam++' must be one of gradcampp, gradcam, occlusion, rollout, attention_gradient, none",
            "saliency_layer: 'decoder.blocks.0'",
        ],
    ),
    "evaluate: unknown saliency method": (
        ["configs/train.json", "configs/evaluate.json"],
        ["--saliency", "grad-cam"],
        ["saliency: 'grad-cam' must be one of"],
    ),
    "contrastive pretraining: unknown method": (
        ["configs/pretrain_contrastive.json"],
        ["--ssl_method", "mae", "--temperature", "0"],
        ["ssl_method: 'mae' must be one of simclr, moco, byol, simsiam", "temperature: 0 must be a number in (0, 10]"],
    ),
    "inpainting pretraining: a mask ratio of 1": (
        ["configs/pretrain_inpainting.json"],
        ["--mask_ratio", "[0.5, 1.0]"],
        ["mask_ratio: [0.5, 1.0] must be a number in (0, 1)"],
    ),
    "pretext pretraining: one jigsaw permutation": (
        ["configs/pretrain_pretext.json"],
        ["--ssl_method", "jigsaw", "--num_permutations", "1"],
        ["num_permutations: 1 must be an integer in [2, 1000]"],
    ),
    "curriculum: zero epochs": (
        ["configs/pretrain_curriculum.json"],
        ["--max_epochs", "0"],
        ["max_epochs: 0 must be an integer >= 1, or null"],
    ),
}


REAL_COMMAND = "train: ranges, names and spellings"  # the real command's stop prints no traceback either


def _config_arg(files: list[str]) -> str:
    paths = [str(ROOT / f) for f in files]
    return paths[0] if len(paths) == 1 else "[" + ",".join(f"'{p}'" for p in paths) + "]"


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_wrong_setting_ends_in_one_message(case, tmp_path):
    files, args, expected = CASES[case]
    command = ["run", "--config_file", _config_arg(files), "--bundle_root", str(ROOT), *args]
    if case == REAL_COMMAND:
        proc = run_bundle(*command, cwd=tmp_path, check=False)
    else:
        proc = bundle_in_process(*command, cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "Traceback" not in output
    for text in expected:
        assert text in output, f"{text!r} not in:\n{output}"


def test_labels_that_do_not_fit_the_class_names(tiny_dataset, tmp_path):
    proc = bundle_in_process(
        "run", "--config_file", str(ROOT / "configs/train.json"), "--bundle_root", str(ROOT),
        "--dataset_dir", str(tiny_dataset), "--class_names", "['normal', 'pneumonia']", "--ckpt_dir", str(tmp_path),
        "--output_dir", str(tmp_path), cwd=tmp_path,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in output
    assert "labels go up to class index 3, but class_names has 2 names ['normal', 'pneumonia']" in output


def test_debug_shows_the_traceback(tmp_path):
    proc = run_bundle(
        "run", "--config_file", str(ROOT / "configs/train.json"), "--bundle_root", str(ROOT),
        "--label_fraction", "0", "--debug", "true", cwd=tmp_path, check=False,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert "Traceback" in output and "DebugUserError" in output and "label_fraction: 0" in output
