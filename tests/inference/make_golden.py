"""Write ``golden_outputs.json``: what the shipped ``models/model.pt`` gives on a fixed set of real images.

The set is the first three images of each class in ``data/sample/datalist.json`` (real radiographs, CC BY, always
present). Per image: the class probabilities, the predicted lung mask at the image's own size as a SHA-256 of its
uint8 0/1 pixels with its pixel count, the lung attention and share, and the saliency map's SHA-256 and sum.
``test_golden.py`` checks them. Regenerate, from the repository root, after a change that is meant to move them
(new weights, another preprocessing), with::

    .venv/bin/python -m tests.inference.make_golden

``--stdout`` prints the values instead of writing the file (the test's fresh-process run).

Pinned for determinism: the CPU, Grad-CAM++ (configs/inference.json's default), and one torch thread. The thread
count matters: a lung attention summed over 224 x 224 pixels with two threads differs from one thread's in its
last bit (6e-8 measured); probabilities, masks and maps are the same bits with one or two threads.
``torch.use_deterministic_algorithms(True)`` changes no bit on the CPU (measured), so it is not set.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch

from bundle.inference.predictor import Predictor, load_model

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("golden_outputs.json")
WEIGHTS = ROOT / "models" / "model.pt"
COMMAND = ".venv/bin/python -m tests.inference.make_golden"
PER_CLASS = 3
THREADS = 1


def golden_images() -> list[str]:
    """The first ``PER_CLASS`` images of each class of the sample's datalist, as paths relative to the root."""
    sample = ROOT / "data" / "sample"
    entries = json.loads((sample / "datalist.json").read_text())["training"]
    chosen: dict[int, list[str]] = {}
    for e in entries:
        chosen.setdefault(int(e["label"]), [])
        if len(chosen[e["label"]]) < PER_CLASS:
            chosen[e["label"]].append((sample / e["image"]).relative_to(ROOT).as_posix())
    return [path for label in sorted(chosen) for path in chosen[label]]


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@contextmanager
def pinned_threads(threads: int = THREADS) -> Iterator[None]:
    """``threads`` torch threads inside the block (the sums of lung attention depend on them), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def golden_values(model: Predictor, images: list[str]) -> dict[str, dict[str, Any]]:
    """The checked values of ``model`` on ``images`` (paths relative to the root), per image."""
    with pinned_threads():
        result = model.predict([str(ROOT / p) for p in images])
    values = {}
    for i, path in enumerate(images):
        mask, saliency = result.masks[i], result.saliency[i]
        values[path] = {
            "probabilities": [float(p) for p in result.probabilities[i]],
            "predicted": result.predicted[i],
            "shape": list(mask.shape),
            "lung_mask_sha256": sha256(mask),
            "lung_mask_pixels": int(mask.sum()),
            "lung_attention": float(result.lung_attention[i]),
            "lung_share": float(result.lung_share[i]),
            "saliency_class": result.saliency_class[i],
            "saliency_sha256": sha256(saliency),
            "saliency_sum": float(saliency.astype(np.float64).sum()),
        }
    return values


def golden() -> dict[str, Any]:
    """The whole reference: how it was made, and the values of every golden image."""
    model = load_model(WEIGHTS, device="cpu")
    return {
        "regenerate": COMMAND,
        "weights": WEIGHTS.relative_to(ROOT).as_posix(),
        "weights_sha256": hashlib.sha256(WEIGHTS.read_bytes()).hexdigest(),
        "pinned": {"device": "cpu", "saliency": model.saliency, "torch_threads": THREADS},
        "made_with": {"torch": torch.__version__, "monai": monai.__version__, "numpy": np.__version__},
        "images": golden_values(model, golden_images()),
    }


def main(argv: list[str]) -> None:
    reference = golden()
    text = json.dumps(reference, indent=4) + "\n"  # indent 4: the layout .ci/format_json.py checks
    if "--stdout" in argv:
        sys.stdout.write(text)
        return
    GOLDEN.write_text(text)
    print(f"wrote {GOLDEN.relative_to(ROOT)}: {len(reference['images'])} images")


if __name__ == "__main__":
    main(sys.argv[1:])
