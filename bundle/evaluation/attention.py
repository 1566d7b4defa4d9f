"""The lung attention of an evaluation: how much of each saliency map falls inside the lungs, against chance.

The attention is Score-CAM's energy-based pointing game over the lung mask (Wang et al., 2020). A uniform map
scores the lungs' share of the image, so each image also gets that share, the ratio attention / share and a flag
when the ratio is below 1 (the attention falls mostly outside the lungs): above 1 the classifier looks at the
lungs more than chance, below 1 it relies on markers, borders or devices. ``lung_attention``, ``lung_share`` and
``attention_and_masks`` compute the score (inference reports it too); ``LungAttentionReport`` sums it up over an
evaluation.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from ignite.engine import Engine, Events

from ..data.readers import CXRReadError, read_cxr
from ..data.transforms import file_stem
from ..distributed import gather_objects, is_main_process
from ..networks.multitask import class_probabilities
from ..plots import overlay_caption, save_overlay
from ..values import as_bool

__all__ = ["LungAttentionReport", "attention_and_masks", "distribution", "lung_attention", "lung_share"]

logger = logging.getLogger(__name__)

# per-image values published for MetricsSaver (one <name>_raw.csv / _summary.csv each), in this order
DETAILS = ("lung_attention", "lung_share", "lung_attention_ratio", "attention_outside_lungs")
RATIO_BINS, RATIO_MAX = 12, 3.0  # histogram of the ratio over [0, 3] in steps of 0.25; larger ones counted apart


def lung_attention(saliency: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Share of each map's mass inside its mask: ``sum(s * m) / sum(s)`` per image, NaN for an all-zero map.

    This is the energy-based pointing game of Score-CAM (Wang et al., 2020) with the lung mask as the box. A
    uniform map scores ``lung_share(mask)``, the chance level to compare it with.

    Args:
        saliency: (B, 1, H, W) non-negative maps.
        mask: (B, 1, H, W) lung masks (non-zero = lung), on the same grid.
    Returns:
        (B,) float in [0, 1].
    """
    s = saliency.float().clamp(min=0).flatten(1)
    m = (mask > 0).float().flatten(1)
    total = s.sum(1)
    inside = (s * m).sum(1)
    nan = torch.full_like(total, float("nan"))
    return torch.where(total > 0, inside / total.clamp(min=torch.finfo(s.dtype).tiny), nan)


def lung_share(mask: torch.Tensor) -> torch.Tensor:
    """Fraction of each image's pixels inside its mask, (B, 1, H, W) -> (B,): the lung attention of a uniform map."""
    return (mask > 0).float().flatten(1).mean(1)


def attention_and_masks(pred: Mapping[str, torch.Tensor], targets: Any = None) -> dict[str, torch.Tensor]:
    """Lung probability and mask from ``pred["seg"]``, and lung attention of ``pred["saliency"]`` against chance.

    The attention uses the ground-truth mask where ``targets`` has one (``has_mask`` = 1), else the predicted
    mask. Returns the keys it could compute among ``lung_prob``, ``lung_mask`` (B, 1, H, W) and, per image (B,):
    ``lung_attention``, ``lung_share`` (that mask's share of the image, the attention of a uniform map),
    ``lung_attention_ratio`` (attention / share; NaN for an all-zero map or an empty mask),
    ``attention_outside_lungs`` (bool: ratio < 1, less mass inside the lungs than chance; False where the ratio
    is NaN) and ``attention_gt`` (bool: the ground-truth mask was used).
    """
    out: dict[str, torch.Tensor] = {}
    seg = pred.get("seg")
    if seg is not None:
        seg = seg.float()
        out["lung_prob"] = torch.sigmoid(seg) if seg.shape[1] == 1 else torch.softmax(seg, 1)[:, 1:2]
        out["lung_mask"] = (out["lung_prob"] > 0.5).float()
    saliency = pred.get("saliency")
    if saliency is None:
        return out
    mask = out.get("lung_mask")
    gt = torch.zeros(saliency.shape[0], dtype=torch.bool, device=saliency.device)
    if isinstance(targets, Mapping) and "mask" in targets and "has_mask" in targets:
        gt = targets["has_mask"].reshape(-1).to(saliency.device) > 0
        true_mask = targets["mask"].to(saliency.device).float()
        mask = true_mask if mask is None else torch.where(gt.view(-1, 1, 1, 1), true_mask, mask)
    if mask is not None:
        attention, share = lung_attention(saliency, mask), lung_share(mask)
        nan = torch.full_like(attention, float("nan"))
        ratio = torch.where(share > 0, attention / share.clamp(min=torch.finfo(share.dtype).tiny), nan)
        out["lung_attention"] = attention
        out["lung_share"] = share
        out["lung_attention_ratio"] = ratio
        out["attention_outside_lungs"] = ratio < 1  # NaN compares False: undefined is not flagged
        out["attention_gt"] = gt
    return out


def distribution(values: Sequence[float], bins: int = 10, upper: float = 1.0) -> dict:
    """Mean, std, quartiles and a ``bins``-bin histogram over [0, ``upper``] of the defined (non-NaN) ``values``.

    ``num_images`` counts the defined values; ``above_range`` (only when ``upper`` is not 1) counts those above
    ``upper``, which the histogram leaves out.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    result: dict[str, Any] = {
        "num_images": int(v.size),
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
    counts, edges = np.histogram(v, bins=bins, range=(0.0, upper))
    result["histogram"] = {"bin_edges": [round(float(e), 2) for e in edges], "counts": counts.tolist()}
    if upper != 1.0:
        result["histogram"]["above_range"] = int((v > upper).sum())
    return result


class _Candidate(NamedTuple):
    """An image kept for an overlay: its maps at the network's size, prediction and attention."""

    path: str
    image: np.ndarray  # (H, W) float16, the network's input: drawn only when the source cannot be read again
    saliency: np.ndarray  # (H, W) float16 in [0, 1]
    lungs: np.ndarray | None  # (H, W) float16 predicted lung probability
    k: int  # predicted (top) class
    conf: float
    attention: float
    share: float
    label: Any  # true class index (-1 unknown), or a 0/1 list for multi-label


def _source_image(path: str, fallback: np.ndarray) -> np.ndarray:
    """The radiograph at ``path`` as (rows, cols) in [0, 1], read as the evaluation read it (``read_cxr``); the
    network's input ``fallback`` with a warning when it cannot be read again (moved, or not a file)."""
    try:
        return read_cxr(path)
    except CXRReadError as e:
        logger.warning("overlay of %s drawn at the network's input size: %s", path, e.reason)
        return fallback.astype(np.float32)


class LungAttentionReport:
    """Ignite handler for an evaluator run with ``SaliencyInferer``: the test split's lung attention against chance.

    At EPOCH_COMPLETED it puts the per-image values, each (N, 1), into ``engine.state.metric_details``:
    ``lung_attention`` (NaN for an all-zero map), ``lung_share`` (the share of the image inside the mask the
    attention used, i.e. the attention of a uniform map), ``lung_attention_ratio`` (attention / share, NaN where
    undefined) and ``attention_outside_lungs`` (1 where the ratio is below 1, 0 where not, NaN where undefined), so
    that a ``MetricsSaver`` attached after it writes them with the image paths (``<name>_raw.csv``,
    ``<name>_summary.csv``). ``summary`` (pass it to ``EvaluationReport(extra_metrics=[...])``) returns
    ``{"lung_attention": {...}}``: mean, std, quartiles, a 10-bin histogram over [0, 1], per-class means (by
    predicted class), how many images used a ground-truth mask, the same distribution of the lung share and of the
    ratio, and the flagged images overall, per true class (when labels exist) and per predicted class. With
    ``n_overlays`` > 0 it also writes overlays of the N most and N least confident images to
    ``output_dir/overlays``: the source radiograph read again at COMPLETED (longest side 512 to 1024 px) under the
    saliency and predicted lung contour resized onto it (the images were resized, not cropped, to the network's
    size), with the true and predicted class, the probability and the lung attention against its chance level.
    Only those 2N candidates are kept in memory, at the network's size.
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
        self.shares: list[float] = []
        self.ratios: list[float] = []
        self.classes: list[int] = []
        self.labels: list[Any] = []  # class index (-1 unknown), or a 0/1 list (-1 unknown) for multi-label
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

    @property
    def flags(self) -> list[float]:
        """Per image: 1.0 where the attention is below the lung share, 0.0 where not, NaN where the ratio is NaN."""
        return [float("nan") if math.isnan(r) else float(r < 1) for r in self.ratios]

    def _publish(self, engine: Engine) -> None:
        self._gather()
        if not self.values:
            return
        if not hasattr(engine.state, "metric_details"):  # MONAI's engines have it; a plain ignite Engine may not
            engine.state.metric_details = {}
        for name, values in zip(DETAILS, (self.values, self.shares, self.ratios, self.flags)):
            engine.state.metric_details[name] = torch.tensor(values, dtype=torch.float64).reshape(-1, 1)

    def _gather(self) -> None:
        """Under DDP: every rank's values in rank order (MetricsSaver gathers the image paths in that order)."""
        lists = (self.values, self.shares, self.ratios, self.classes, self.labels, self.gt)
        parts = gather_objects(lists)
        if len(parts) > 1:
            merged = [[x for part in parts for x in part[i]] for i in range(len(lists))]
            self.values, self.shares, self.ratios, self.classes, self.labels, self.gt = merged

    def _gather_overlays(self) -> None:
        """Under DDP: the most and least confident images of the whole split, from every rank's candidates."""
        parts = gather_objects((self._most, self._least))
        if len(parts) > 1:
            # -order breaks ties by rank first, then by the image's order on that rank
            self._most, self._least = (
                heapq.nlargest(self.n_overlays, [(e[0], (-r, e[1]), e[2]) for r, p in enumerate(parts) for e in p[i]])
                for i in range(2)
            )

    @staticmethod
    def _true_labels(target: Any, n: int) -> list[Any]:
        """The batch's true labels as plain Python values; -1 (unknown) where the target has none."""
        label = target.get("label") if isinstance(target, Mapping) else target
        if not isinstance(label, torch.Tensor) or label.shape[:1] != (n,):
            return [-1] * n
        return label.detach().cpu().tolist()

    def _collect(self, engine: Engine) -> None:
        out = engine.state.output
        pred = out.get("pred", {})
        if not isinstance(pred, Mapping) or "saliency" not in pred:
            return
        found = attention_and_masks(pred, out.get("label"))
        if "lung_attention" not in found:
            return
        att = found["lung_attention"].cpu().numpy()
        share = found["lung_share"].cpu().numpy()
        ratio = found["lung_attention_ratio"].cpu().numpy()
        prob = out["prob"] if "prob" in out else class_probabilities(pred["class"], self.multi_label)
        prob = prob.detach().float().cpu().numpy()
        self.values.extend(att.tolist())
        self.shares.extend(share.tolist())
        self.ratios.extend(ratio.tolist())
        self.classes.extend(prob.argmax(1).tolist())
        self.labels.extend(self._true_labels(out.get("label"), len(att)))
        self.gt.extend(found["attention_gt"].cpu().numpy().tolist())
        if self.n_overlays <= 0:
            return
        batch = engine.state.batch if isinstance(engine.state.batch, Mapping) else {}
        paths = batch.get("image_path") or [f"image_{self._order + i}" for i in range(len(att))]
        images = out["image"].detach().float().cpu().numpy()
        saliency = pred["saliency"].detach().float().cpu().numpy()
        # the lung probability rather than the 0/1 mask: its contour stays smooth when enlarged onto the source
        lungs = found["lung_prob"].float().cpu().numpy() if "lung_prob" in found else None
        labels = self.labels[-len(att) :]
        for i in range(len(att)):
            k = int(prob[i].argmax())
            conf = float(prob[i, k])
            # the network-size image is kept only in case the source cannot be read again at COMPLETED
            item = _Candidate(
                str(paths[i]),
                images[i, 0].astype(np.float16),
                saliency[i, 0].astype(np.float16),
                None if lungs is None else lungs[i, 0].astype(np.float16),
                k,
                conf,
                float(att[i]),
                float(share[i]),
                labels[i],
            )
            self._order += 1
            for heap, key in ((self._most, conf), (self._least, -conf)):
                entry = (key, -self._order, item)  # ties: the earlier image wins
                if len(heap) < self.n_overlays:
                    heapq.heappush(heap, entry)
                elif entry > heap[0]:
                    heapq.heapreplace(heap, entry)

    def _true_class(self, label: Any) -> str | None:
        """The true class of a candidate for its caption: the class name, the multi-label findings joined by
        ``", "`` (``"no finding"`` when none), or None when unknown."""
        if isinstance(label, (list, tuple)):
            if any(v == -1 for v in label):
                return None
            return ", ".join(c for c, v in zip(self.class_names, label) if v == 1) or "no finding"
        return self.class_names[int(label)] if 0 <= int(label) < len(self.class_names) else None

    def _write_overlays(self, engine: Engine) -> None:
        if self.n_overlays <= 0:
            return
        self._gather_overlays()
        if not is_main_process():
            return
        folder = os.path.join(self.output_dir, "overlays")
        label = f"saliency ({self.saliency_method})" if self.saliency_method else "saliency"
        for tag, heap in (("most_confident", self._most), ("least_confident", self._least)):
            for rank, (_, _, c) in enumerate(sorted(heap, reverse=True), 1):
                truth = self._true_class(c.label)
                text = overlay_caption(self.class_names[c.k], c.conf, c.attention, c.share, truth, not self.multi_label)
                save_overlay(
                    os.path.join(folder, f"{tag}_{rank:02d}_{file_stem(c.path)}.png"),
                    _source_image(c.path, c.image),
                    c.saliency.astype(np.float32),
                    None if c.lungs is None else c.lungs.astype(np.float32),
                    text,
                    saliency_label=label,
                )
        logger.info("overlays of the %d most and least confident images: %s", self.n_overlays, folder)

    def _true_class_members(self) -> np.ndarray | None:
        """(N, K) bool: image i has true class k (several per image for multi-label); None without any label."""
        n, k = len(self.labels), len(self.class_names)
        members = np.zeros((n, k), dtype=bool)
        for i, label in enumerate(self.labels):
            if isinstance(label, (list, tuple)):
                members[i, : len(label)] = np.asarray(label[:k], dtype=np.float64) == 1
            elif 0 <= int(label) < k:
                members[i, int(label)] = True
        return members if members.any() else None

    def _flag_shares(self, members: np.ndarray, flags: np.ndarray) -> dict:
        """Per class: the images with a defined ratio, how many are flagged, and that share (None without images)."""
        defined = ~np.isnan(flags)
        result = {}
        for k, c in enumerate(self.class_names):
            images = members[:, k] & defined
            flagged = int((flags[images] == 1).sum())
            n = int(images.sum())
            result[c] = {"images": n, "flagged": flagged, "share": flagged / n if n else None}
        return result

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
        result = {
            "method": self.saliency_method or None,
            "num_undefined": int((~valid).sum()),  # all-zero saliency maps: no share to measure
            "ground_truth_masks": int(np.asarray(self.gt)[valid].sum()),
            **distribution(v),
        }
        result["per_predicted_class_mean"] = {
            c: (float(v[classes == k].mean()) if (classes == k).any() else None) for k, c in enumerate(self.class_names)
        }
        # the chance level: the share is the attention of a uniform map (images whose attention is defined)
        result["lung_share"] = distribution(np.asarray(self.shares, dtype=np.float64)[valid])
        result["lung_attention_ratio"] = distribution(self.ratios, RATIO_BINS, RATIO_MAX)
        flags = np.asarray(self.flags, dtype=np.float64)
        defined = ~np.isnan(flags)
        flagged = int((flags[defined] == 1).sum())
        predicted = np.zeros((len(self.classes), len(self.class_names)), dtype=bool)
        predicted[np.arange(len(self.classes)), np.asarray(self.classes, dtype=int)] = True
        members = self._true_class_members()
        result["attention_outside_lungs"] = {
            "definition": "lung_attention_ratio < 1: less of the map inside the lungs than a uniform map",
            "images": int(defined.sum()),
            "flagged": flagged,
            "share": flagged / int(defined.sum()) if defined.any() else None,
            "per_true_class": None if members is None else self._flag_shares(members, flags),
            "per_predicted_class": self._flag_shares(predicted, flags),
        }
        if v.size:
            logger.info(
                "lung attention: mean %.3f, median %.3f over %d images; lung share (chance) mean %.3f; ratio mean "
                "%.2f; attention mostly outside the lungs in %d of %d images",
                result["mean"],
                result["median"],
                v.size,
                result["lung_share"]["mean"],
                result["lung_attention_ratio"]["mean"],
                flagged,
                int(defined.sum()),
            )
        return {"lung_attention": result}
