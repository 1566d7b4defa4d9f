"""Seeded evaluator outputs for the evaluation tests, and an ignite Engine that replays them.

Shared by ``test_report.py`` and ``make_metrics_fixture.py``; the latter imports this module against the
pre-change ``bundle`` package, so it must only use what both versions have (``MultiTaskOutputs``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine

from bundle.engines.multitask import MultiTaskOutputs

ROOT = Path(__file__).resolve().parents[2]
N_IMAGES, BATCH_SIZE, SIZE = 23, 5, 8  # 23 = 4 full batches and a short one

CASES: dict[str, dict[str, Any]] = {
    # the last class never occurs in the labels, so its AUC is undefined (NaN)
    "single_label": {"class_names": ["normal", "bacterial", "viral", "covid19"], "multi_label": False, "seed": 0},
    "multi_label": {"class_names": ["pneumonia", "infection", "covid19"], "multi_label": True, "seed": 1},
}


def make_batches(class_names: Sequence[str], multi_label: bool, seed: int) -> list[dict[str, Any]]:
    """Batches as a data loader would give them, plus the network's raw outputs (``logits``, ``seg``, ``saliency``).

    Every third image has no ground-truth mask (NaN Dice; lung attention from the predicted mask) and image 4 has
    an all-zero saliency map (undefined lung attention).
    """
    g = torch.Generator().manual_seed(seed)
    c = len(class_names)
    if multi_label:
        label = (torch.rand(N_IMAGES, c, generator=g) > 0.5).float()
        signal = label
    else:
        label = torch.randint(0, c - 1, (N_IMAGES,), generator=g)
        signal = torch.nn.functional.one_hot(label, c).float()
    logits = 1.5 * torch.randn(N_IMAGES, c, generator=g) + 1.5 * signal  # informative but imperfect
    seg = torch.randn(N_IMAGES, 2, SIZE, SIZE, generator=g)
    mask = (torch.rand(N_IMAGES, 1, SIZE, SIZE, generator=g) > 0.5).float()
    has_mask = (torch.arange(N_IMAGES) % 3 != 0).long()
    saliency = torch.rand(N_IMAGES, 1, SIZE, SIZE, generator=g)
    saliency[4] = 0
    image = torch.rand(N_IMAGES, 1, SIZE, SIZE, generator=g)
    batches = []
    for start in range(0, N_IMAGES, BATCH_SIZE):
        s = slice(start, start + BATCH_SIZE)
        batches.append(
            {
                "image": image[s],
                "label": label[s],
                "mask": mask[s],
                "has_mask": has_mask[s],
                "image_path": [f"images/img_{i:02d}.png" for i in range(N_IMAGES)][s],
                "logits": logits[s],
                "seg": seg[s],
                "saliency": saliency[s],
            }
        )
    return batches


def prob_batches(prob: Sequence[Sequence[float]], label: Sequence[Any], multi_label: bool = False) -> list[dict]:
    """One batch whose logits give back the class probabilities ``prob`` (N, C); no image has a mask."""
    p = torch.as_tensor(prob, dtype=torch.float64)
    logits = torch.logit(p) if multi_label else torch.log(p)  # sigmoid / softmax undo these
    n = p.shape[0]
    return [
        {
            "image": torch.zeros(n, 1, SIZE, SIZE),
            "label": torch.as_tensor(label, dtype=torch.float32 if multi_label else torch.long),
            "mask": torch.zeros(n, 1, SIZE, SIZE),
            "has_mask": torch.zeros(n, dtype=torch.long),
            "image_path": [f"images/img_{i:02d}.png" for i in range(n)],
            "logits": logits.float(),
            "seg": torch.zeros(n, 2, SIZE, SIZE),
        }
    ]


def run_engine(
    batches: Iterable[Mapping[str, Any]],
    num_classes: int,
    multi_label: bool,
    metrics: Mapping[str, Any] | None = None,
    handlers: Sequence[Any] = (),
) -> Engine:
    """Replay ``batches`` through an ignite Engine whose output is what ``SupervisedEvaluator`` gives.

    As in ``SupervisedEvaluator``, the output is ``{"image", "label", "pred"}`` after ``MultiTaskOutputs``, and the
    metrics are attached before the handlers (so they complete first at EPOCH_COMPLETED).
    """
    postprocessing = MultiTaskOutputs(num_classes, multi_label)

    def step(engine: Engine, batch: Mapping[str, Any]) -> dict[str, Any]:
        target = {k: batch[k] for k in ("label", "mask", "has_mask")}
        pred = {k: batch[v] for k, v in (("class", "logits"), ("seg", "seg"), ("saliency", "saliency")) if v in batch}
        return postprocessing({"image": batch["image"], "label": target, "pred": pred})

    engine = Engine(step)
    for name, metric in (metrics or {}).items():
        metric.attach(engine, name)
    for handler in handlers:
        handler.attach(engine)
    engine.run(list(batches))
    return engine


def evaluate_as_configured(
    batches: Iterable[Mapping[str, Any]],
    class_names: Sequence[str],
    multi_label: bool,
    output_dir: str | os.PathLike,
    patients: Mapping[str, str | None] | None = None,
    **ids: Any,
) -> Engine:
    """Replay ``batches`` with the metrics and handlers that configs/evaluate.json gives the test evaluator.

    The handlers are the config's own (``validate#handlers`` entries that name an id, in its order); its checkpoint
    loader and log handler are left out. The report's ``patients`` (image path -> patient id; default: none, as
    the config would read them from a datalist) and other config ``ids`` (e.g. ``n_bootstrap``) may be given.
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs/train.json"), str(ROOT / "configs/evaluate.json")])
    parser.update(
        {
            "bundle_root": str(ROOT),
            "output_dir": str(output_dir),
            "class_names": list(class_names),
            "multi_label": multi_label,
        }
    )
    parser["n_overlays"] = 0  # overlays do not enter metrics.json
    parser.update(ids)
    parser["evaluation_report#patients"] = dict(patients or {})  # the config reads them from the test split
    parser.parse()
    metrics = {
        **parser.get_parsed_content("validate#key_metric"),
        **parser.get_parsed_content("validate#additional_metrics"),
    }
    handlers = [
        parser.get_parsed_content(h[1:]) for h in parser["validate#handlers"] if isinstance(h, str) and h[:1] == "@"
    ]
    return run_engine(batches, len(class_names), multi_label, metrics, handlers)
