"""The lung attention of an evaluation: how much of each saliency map falls inside the lungs, over the test split."""

from __future__ import annotations

import heapq
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from ..data.transforms import file_stem
from ..distributed import gather_objects, is_main_process
from ..networks.multitask import class_probabilities
from ..plots import save_overlay
from ..saliency import attention_and_masks
from ..settings import as_bool

__all__ = ["LungAttentionReport"]

logger = logging.getLogger(__name__)


class LungAttentionReport:
    """Ignite handler for an evaluator run with ``SaliencyInferer``: the test split's lung attention.

    At EPOCH_COMPLETED it puts the per-image values, (N, 1) with NaN for an all-zero map, into
    ``engine.state.metric_details["lung_attention"]``, so that a ``MetricsSaver`` attached after it writes them
    with the image paths (``lung_attention_raw.csv``, ``lung_attention_summary.csv``). ``summary`` (pass it to
    ``EvaluationReport(extra_metrics=[...])``) returns ``{"lung_attention": {...}}``: mean, std, quartiles, a
    10-bin histogram over [0, 1], per-class means (by predicted class) and how many images used a ground-truth
    mask. With ``n_overlays`` > 0 it also writes overlays of the N most and N least confident images to
    ``output_dir/overlays`` (at the model's input size).
    """

    detail_name = "lung_attention"

    def __init__(
        self,
        output_dir: str,
        class_names: Sequence[str],
        n_overlays: int = 0,
        saliency_method: str = "",
        multi_label: bool = False,
    ) -> None:
        self.output_dir, self.class_names, self.n_overlays = output_dir, list(class_names), int(n_overlays)
        self.saliency_method, self.multi_label = saliency_method, as_bool(multi_label, "multi_label")
        self._reset()

    def _reset(self, engine: Engine | None = None) -> None:
        self.values: list[float] = []
        self.classes: list[int] = []
        self.gt: list[bool] = []
        self._most: list[tuple] = []  # min-heap of the most confident: (confidence, order, payload)
        self._least: list[tuple] = []  # min-heap of (-confidence, ...): the least confident
        self._order = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        # MetricsSaver writes at EPOCH_COMPLETED (before COMPLETED): publish there, from a handler attached before it
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._publish)
        engine.add_event_handler(Events.COMPLETED, self._write_overlays)

    def _publish(self, engine: Engine) -> None:
        self._gather()
        if not self.values:
            return
        if not hasattr(engine.state, "metric_details"):  # MONAI's engines have it; a plain ignite Engine may not
            engine.state.metric_details = {}
        engine.state.metric_details[self.detail_name] = torch.tensor(self.values, dtype=torch.float64).reshape(-1, 1)

    def _gather(self) -> None:
        """Under DDP: every rank's values in rank order (MetricsSaver gathers the image paths in that order)."""
        parts = gather_objects((self.values, self.classes, self.gt))
        if len(parts) > 1:
            self.values, self.classes, self.gt = ([x for part in parts for x in part[i]] for i in range(3))

    def _gather_overlays(self) -> None:
        """Under DDP: the most and least confident images of the whole split, from every rank's candidates."""
        parts = gather_objects((self._most, self._least))
        if len(parts) > 1:
            # -order breaks ties by rank first, then by the image's order on that rank
            self._most, self._least = (
                heapq.nlargest(self.n_overlays, [(e[0], (-r, e[1]), e[2]) for r, p in enumerate(parts) for e in p[i]])
                for i in range(2)
            )

    def _collect(self, engine: Engine) -> None:
        out = engine.state.output
        pred = out.get("pred", {})
        if not isinstance(pred, Mapping) or "saliency" not in pred:
            return
        found = attention_and_masks(pred, out.get("label"))
        if "lung_attention" not in found:
            return
        att = found["lung_attention"].cpu().numpy()
        prob = out["prob"] if "prob" in out else class_probabilities(pred["class"], self.multi_label)
        prob = prob.detach().float().cpu().numpy()
        self.values.extend(att.tolist())
        self.classes.extend(prob.argmax(1).tolist())
        self.gt.extend(found["attention_gt"].cpu().numpy().tolist())
        if self.n_overlays <= 0:
            return
        batch = engine.state.batch if isinstance(engine.state.batch, Mapping) else {}
        paths = batch.get("image_path") or [f"image_{self._order + i}" for i in range(len(att))]
        images = out["image"].detach().float().cpu().numpy()
        saliency = pred["saliency"].detach().float().cpu().numpy()
        masks = found["lung_mask"].cpu().numpy() if "lung_mask" in found else None
        for i in range(len(att)):
            k = int(prob[i].argmax())
            conf = float(prob[i, k])
            item = (
                str(paths[i]),
                images[i, 0].astype(np.float16),
                saliency[i, 0].astype(np.float16),
                None if masks is None else masks[i, 0].astype(np.uint8),
                k,
                conf,
                float(att[i]),
            )
            self._order += 1
            for heap, key in ((self._most, conf), (self._least, -conf)):
                entry = (key, -self._order, item)  # ties: the earlier image wins
                if len(heap) < self.n_overlays:
                    heapq.heappush(heap, entry)
                elif entry > heap[0]:
                    heapq.heapreplace(heap, entry)

    def _write_overlays(self, engine: Engine) -> None:
        if self.n_overlays <= 0:
            return
        self._gather_overlays()
        if not is_main_process():
            return
        folder = os.path.join(self.output_dir, "overlays")
        for tag, heap in (("most_confident", self._most), ("least_confident", self._least)):
            for rank, (_, _, item) in enumerate(sorted(heap, reverse=True), 1):
                path, image, sal, mask, k, conf, att = item
                text = f"{self.class_names[k]} {conf:.2f}" + ("" if math.isnan(att) else f"\nlung attention {att:.2f}")
                save_overlay(
                    os.path.join(folder, f"{tag}_{rank:02d}_{file_stem(path)}.png"),
                    image.astype(np.float32),
                    sal.astype(np.float32),
                    mask,
                    text,
                )
        logger.info("overlays of the %d most and least confident images: %s", self.n_overlays, folder)

    def summary(self, report: Any = None) -> dict:
        """``{"lung_attention": {...}}`` for metrics.json; ``{}`` when no saliency was computed.

        Computed here rather than read back from MetricsSaver's summary CSV: that one is rounded to 4 decimals and
        has neither the histogram nor the per-class means.
        """
        if not self.values:
            return {}
        values = np.asarray(self.values, dtype=np.float64)
        valid = ~np.isnan(values)
        v = values[valid]
        classes = np.asarray(self.classes)[valid]
        counts, edges = np.histogram(v, bins=10, range=(0.0, 1.0))
        result = {
            "method": self.saliency_method or None,
            "num_images": int(v.size),
            "num_undefined": int((~valid).sum()),  # all-zero saliency maps: no share to measure
            "ground_truth_masks": int(np.asarray(self.gt)[valid].sum()),
            "mean": float(v.mean()) if v.size else float("nan"),
            "std": float(v.std()) if v.size else float("nan"),
        }
        if v.size:
            result.update(
                {
                    q: float(np.quantile(v, p))
                    for q, p in (("min", 0), ("q25", 0.25), ("median", 0.5), ("q75", 0.75), ("max", 1))
                }
            )
        result["histogram"] = {"bin_edges": [round(float(e), 2) for e in edges], "counts": counts.tolist()}
        result["per_predicted_class_mean"] = {
            c: (float(v[classes == k].mean()) if (classes == k).any() else None) for k, c in enumerate(self.class_names)
        }
        if v.size:
            logger.info(
                "lung attention: mean %.3f, median %.3f over %d images", result["mean"], result["median"], v.size
            )
        return {"lung_attention": result}
