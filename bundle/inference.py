"""Inference on any CXR files: robust loading, per-image outputs and the lung-attention report of an evaluation.

The run itself is MONAI's ``SupervisedEvaluator`` (``configs/inference.json``) with ``bundle.saliency.SaliencyInferer``.
This module adds what is specific to this bundle:

* ``list_inputs``: the images of a folder (every file, so that unsupported ones are reported) or of a datalist;
* ``SafeLoadCXRd``: loading that never raises, so one bad file cannot stop the run or crash a DataLoader worker:
  an unreadable file becomes a small placeholder image with ``status`` = the reason;
* ``InferenceOutputs``: batch postprocessing (probabilities, lung mask, lung attention);
* ``PredictionWriter``: ``predictions.csv`` / ``predictions.json`` and the per-image mask, saliency map and overlay;
* ``LungAttentionReport``: the ``lung_attention`` summary of ``configs/evaluate.json`` and its overlays.
"""

from __future__ import annotations

import csv
import heapq
import json
import logging
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.transforms import MapTransform, Transform

from .overlays import resize_2d, save_overlay
from .readers import NIFTI_SUFFIXES, CXRReadError, read_cxr, read_mask
from .saliency import lung_attention

__all__ = [
    "list_inputs",
    "check_weights",
    "SafeLoadCXRd",
    "InferenceOutputs",
    "attention_and_masks",
    "PredictionWriter",
    "LungAttentionReport",
]

logger = logging.getLogger(__name__)

STATUS_OK = "ok"


def _stem(path: str) -> str:
    """File name without its image suffix (``.nii.gz`` counts as one)."""
    name = os.path.basename(path)
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return os.path.splitext(name)[0] or name


def _output_names(paths: Sequence[str], root: str | None) -> list[str]:
    """A unique, flat output name per input: the path under ``root`` with folders joined by ``__``, no suffix.

    Inputs that differ only by suffix (``a.png``, ``a.dcm``) keep it as ``a_png``, ``a_dcm``.
    """

    def rel_parts(p: str) -> tuple[str, ...]:
        rel = os.path.relpath(p, root) if root else ""
        return Path(os.path.basename(p) if not rel or rel.startswith("..") else rel).parts

    def join(parts: tuple[str, ...], keep_suffix: bool) -> str:
        last = _stem(parts[-1])
        if keep_suffix and last != parts[-1]:
            last = f"{last}_{parts[-1][len(last):].lstrip('.').replace('.', '_')}"
        return "__".join([*parts[:-1], last]) or "image"

    plain = [join(rel_parts(p), False) for p in paths]
    clashes = {n for n in plain if plain.count(n) > 1}
    names, seen = [], set()
    for p, name in zip(paths, plain):
        name = join(rel_parts(p), True) if name in clashes else name
        unique, n = name, 2
        while unique in seen:
            unique, n = f"{name}_{n}", n + 1
        seen.add(unique)
        names.append(unique)
    return names


def list_inputs(
    dataset_dir: str | os.PathLike,
    datalist: str | os.PathLike | None = None,
    recursive: bool = True,
    max_images: int | None = None,
    exclude: Sequence[str | os.PathLike] = (),
) -> list[dict]:
    """Entries ``{"image", "name"[, "mask"]}`` to run inference on.

    Args:
        dataset_dir: a folder of CXRs (every non-hidden file is listed, so that unsupported ones get a status
            instead of being skipped silently), or a single file. With ``datalist``, the base of relative paths.
        datalist: a datalist JSON (see ``bundle.data``); all its sections, in order, each image once. An entry's
            ``mask`` is its ground-truth lung mask, used for lung attention.
        recursive: list sub-folders too (DICOM exports are often nested).
        max_images: keep only the first ``max_images`` entries (demos, smoke tests).
        exclude: folders never listed, e.g. the run's own output folder when it lies inside ``dataset_dir``
            (a second run would otherwise take the first run's masks and overlays for radiographs).

    Raises:
        SystemExit: nothing to process (missing folder, empty folder or datalist), with the reason.
    """
    dataset_dir = os.fspath(dataset_dir)
    if datalist:
        from .data import SECTIONS, DatalistError, load_datalist

        try:
            sections = load_datalist(datalist, dataset_dir)
        except DatalistError as e:
            raise SystemExit(str(e)) from None
        entries, seen = [], set()
        for section in SECTIONS:
            for e in sections.get(section, []):
                image = e.get("image")
                if not isinstance(image, str) or image in seen:
                    continue
                seen.add(image)
                entry = {"image": image}
                if isinstance(e.get("mask"), str):
                    entry["mask"] = e["mask"]
                entries.append(entry)
        root = dataset_dir
    elif os.path.isfile(dataset_dir):
        entries, root = [{"image": dataset_dir}], os.path.dirname(dataset_dir)
    elif os.path.isdir(dataset_dir):
        pattern = "**/*" if recursive else "*"
        skip = [Path(e).resolve() for e in exclude if e]
        files = sorted(
            str(p) for p in Path(dataset_dir).glob(pattern)
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(dataset_dir).parts)
            and not any(p.resolve().is_relative_to(e) for e in skip)
        )
        entries, root = [{"image": f} for f in files], dataset_dir
    else:
        raise SystemExit(f"dataset_dir {dataset_dir!r}: no such folder or file")
    if max_images is not None:
        entries = entries[: int(max_images)]
    if not entries:
        raise SystemExit(f"nothing to process in {datalist or dataset_dir!r}")
    for entry, name in zip(entries, _output_names([e["image"] for e in entries], root)):
        entry["name"] = name
    return entries


def check_weights(path: str | os.PathLike) -> str:
    """Stop with a clear message (no traceback) when the model file is missing; returns ``path``."""
    if not os.path.isfile(path):
        raise SystemExit(f"model weights not found: {path} (train first, or pass --ckpt_dir <folder with model.pt>)")
    return os.fspath(path)


class SafeLoadCXRd(MapTransform):
    """Load ``image`` (and an optional ground-truth ``mask``) like ``LoadCXRd``, but never raise.

    Adds ``status`` (``"ok"`` or the reason the file could not be used), ``orig_shape`` (rows, cols; 0, 0 on
    failure), ``image_path`` and ``has_mask``. A failed image becomes a 2 x 2 zero placeholder so that the batch
    still collates; the writer reports it instead of writing outputs. An unreadable or mis-sized mask is
    dropped with a warning and the predicted lung mask is used instead.
    """

    def __init__(self, image_key: str = "image", mask_key: str = "mask") -> None:
        super().__init__(keys=[image_key, mask_key], allow_missing_keys=True)
        self.image_key, self.mask_key = image_key, mask_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        path = str(d[self.image_key])
        d["image_path"] = path
        d.setdefault("name", _stem(path))
        try:
            image = read_cxr(path)
            status = STATUS_OK
        except CXRReadError as e:
            image, status = None, e.reason
        except Exception as e:  # a decoder bug must not stop the run: report it for this file
            image, status = None, f"cannot read ({type(e).__name__}: {e})"
        mask = None
        mask_path = d.get(self.mask_key)
        if image is not None and isinstance(mask_path, str):
            try:
                mask = read_mask(mask_path)
                if mask.shape != image.shape:
                    raise CXRReadError(mask_path, f"mask shape {mask.shape} differs from image shape {image.shape}")
            except Exception as e:
                logger.warning("%s: ground-truth mask not used (%s); using the predicted lung mask", path, e)
                mask = None
        if image is None:
            image = np.zeros((2, 2), dtype=np.float32)
            d["orig_shape"] = torch.zeros(2, dtype=torch.long)
        else:
            d["orig_shape"] = torch.tensor(image.shape, dtype=torch.long)
        d["status"] = status
        d["has_mask"] = torch.tensor(1.0 if mask is not None else 0.0)
        d[self.image_key] = torch.from_numpy(image)[None]
        d[self.mask_key] = torch.from_numpy((mask if mask is not None else np.zeros(image.shape, np.uint8)).astype(
            np.float32))[None]
        return d


def attention_and_masks(pred: Mapping[str, torch.Tensor], targets: Any = None) -> dict[str, torch.Tensor]:
    """Lung probability and mask from ``pred["seg"]``, and lung attention of ``pred["saliency"]``.

    The attention uses the ground-truth mask where ``targets`` has one (``has_mask`` = 1), else the predicted
    mask. Returns the keys it could compute among ``lung_prob``, ``lung_mask`` (B, 1, H, W),
    ``lung_attention`` (B,) and ``attention_gt`` (B,) bool.
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
        out["lung_attention"] = lung_attention(saliency, mask)
        out["attention_gt"] = gt
    return out


class InferenceOutputs(Transform):
    """Batch postprocessing of the inference evaluator (``decollate=False``).

    Adds ``prob`` (B, K): softmax, or sigmoid for multi-label; plus ``attention_and_masks``' keys.
    """

    def __init__(self, multi_label: bool = False) -> None:
        self.multi_label = multi_label

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        d = dict(data)
        logits = d["pred"]["class"].float()
        d["prob"] = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, 1)
        d.update(attention_and_masks(d["pred"], d.get("label")))
        return d


def _float(v: Any) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v


def _save_nifti_like(array: np.ndarray, reference: str, path: str) -> None:
    """Write ``array`` (rows, cols) to NIfTI on the grid and affine of the NIfTI image ``reference``.

    ``bundle.readers`` reads NIfTI as data.T (x = column, y = row); writing array.T in the reference's own
    shape and affine puts the output on top of the input in any NIfTI viewer.
    """
    import nibabel as nib

    ref = nib.load(reference)
    data = np.ascontiguousarray(array.T).reshape(ref.shape)
    img = nib.Nifti1Image(data, ref.affine)
    img.set_qform(ref.affine, code=1)
    img.set_sform(ref.affine, code=1)
    nib.save(img, path)


class PredictionWriter:
    """Ignite handler writing everything ``configs/inference.json`` promises into ``output_dir``.

    * ``predictions.csv`` (appended batch by batch, so a partial run keeps its rows) and ``predictions.json``:
      one row per input with ``image``, ``status``, ``predicted``, ``prob_<class>``, ``lung_attention``,
      ``attention_mask`` (``predicted`` or ``ground_truth``), ``saliency_class`` and the written files;
    * ``masks/<name>_lung.png`` (0/255) or ``.nii.gz`` for NIfTI input, at the input's own size;
    * ``saliency/<name>_saliency.npy`` (float32 in [0, 1]) or ``.nii.gz``, at the input's own size;
    * ``overlays/<name>_overlay.png``: radiograph, heat map, lung contour, prediction (longest side <= 1024).

    Rows whose status is not ``ok`` get no files. Call ``finish()`` after the run (the config's ``finalize``).
    """

    def __init__(
        self,
        output_dir: str,
        class_names: Sequence[str],
        multi_label: bool = False,
        write_masks: bool = True,
        write_saliency: bool = True,
        write_overlays: bool = True,
        overlay_size: int = 1024,
        saliency_method: str = "",
    ) -> None:
        self.output_dir, self.class_names, self.multi_label = output_dir, list(class_names), multi_label
        self.write_masks, self.write_saliency, self.write_overlays = write_masks, write_saliency, write_overlays
        self.overlay_size, self.saliency_method = overlay_size, saliency_method
        self.csv_path = os.path.join(output_dir, "predictions.csv")
        self.json_path = os.path.join(output_dir, "predictions.json")
        self.fields = (
            ["image", "status", "predicted"]
            + [f"prob_{c}" for c in self.class_names]
            + ["lung_attention", "attention_mask", "saliency_class", "lung_mask_file", "saliency_file", "overlay_file"]
        )
        self.rows: list[dict] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._write_batch)
        engine.add_event_handler(Events.COMPLETED, self._write_json)

    def _start(self, engine: Engine) -> None:
        self.rows = []
        os.makedirs(self.output_dir, exist_ok=True)
        with open(self.csv_path, "w", newline="") as f:
            csv.DictWriter(f, self.fields).writeheader()

    def _predicted(self, prob: np.ndarray) -> str:
        if self.multi_label:
            return ";".join(c for c, p in zip(self.class_names, prob) if p > 0.5)
        return self.class_names[int(prob.argmax())]

    def _write_batch(self, engine: Engine) -> None:
        batch, out = engine.state.batch, engine.state.output
        prob = out["prob"].detach().float().cpu().numpy()
        lung_prob = out["lung_prob"].detach().float().cpu().numpy() if "lung_prob" in out else None
        pred = out["pred"]
        saliency = pred["saliency"].detach().float().cpu().numpy() if "saliency" in pred else None
        sal_class = pred["saliency_class"].detach().cpu().numpy() if "saliency_class" in pred else None
        attention = out["lung_attention"].detach().cpu().numpy() if "lung_attention" in out else None
        attention_gt = out["attention_gt"].detach().cpu().numpy() if "attention_gt" in out else None
        rows = []
        for i, path in enumerate(batch["image_path"]):
            row: dict[str, Any] = dict.fromkeys(self.fields, None)
            row.update(image=path, status=batch["status"][i])
            if row["status"] == STATUS_OK:
                row["predicted"] = self._predicted(prob[i])
                row.update({f"prob_{c}": float(p) for c, p in zip(self.class_names, prob[i])})
                if attention is not None:
                    row["lung_attention"] = _float(attention[i])
                    row["attention_mask"] = "ground_truth" if attention_gt[i] else "predicted"
                if sal_class is not None:
                    row["saliency_class"] = self.class_names[int(sal_class[i])]
                try:
                    self._write_files(
                        row, batch["name"][i], tuple(int(s) for s in batch["orig_shape"][i]),
                        None if lung_prob is None else lung_prob[i, 0],
                        None if saliency is None else saliency[i, 0], prob[i],
                    )
                except Exception as e:  # e.g. disk full or an unwritable folder: report it for this image
                    row["status"] = f"cannot write outputs ({type(e).__name__}: {e})"
            rows.append(row)
        self.rows.extend(rows)
        with open(self.csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, self.fields)
            writer.writerows([{k: "" if v is None else v for k, v in r.items()} for r in rows])

    def _save_map(self, array: np.ndarray, folder: str, stem: str, source: str, nifti: bool) -> str:
        """Write a per-image map into ``output_dir/folder``: NIfTI beside NIfTI input (its affine), else PNG for
        uint8 masks and .npy for float maps; returns the file path."""
        os.makedirs(os.path.join(self.output_dir, folder), exist_ok=True)
        if nifti:
            f = os.path.join(self.output_dir, folder, f"{stem}.nii.gz")
            _save_nifti_like(array if array.dtype != np.uint8 else (array > 0).astype(np.uint8), source, f)
        elif array.dtype == np.uint8:
            from PIL import Image

            f = os.path.join(self.output_dir, folder, f"{stem}.png")
            Image.fromarray(array).save(f)
        else:
            f = os.path.join(self.output_dir, folder, f"{stem}.npy")
            np.save(f, array)
        return f

    def _write_files(
        self,
        row: dict,
        name: str,
        shape: tuple[int, int],
        lung_prob: np.ndarray | None,
        saliency: np.ndarray | None,
        prob: np.ndarray,
    ) -> None:
        path = row["image"]
        nifti = path.lower().endswith(NIFTI_SUFFIXES)
        mask = None
        if lung_prob is not None:
            # probabilities are resized, then thresholded: a smoother border than resizing a binary mask
            mask = (resize_2d(lung_prob, shape) > 0.5).astype(np.uint8)
            if self.write_masks:
                row["lung_mask_file"] = self._save_map(mask * 255, "masks", f"{name}_lung", path, nifti)
        sal = None
        if saliency is not None:
            sal = np.clip(resize_2d(saliency, shape), 0, 1).astype(np.float32)
            if self.write_saliency:
                row["saliency_file"] = self._save_map(sal, "saliency", f"{name}_saliency", path, nifti)
        if self.write_overlays:
            k = int(prob.argmax())
            text = f"{self.class_names[k]} {prob[k]:.2f}"
            if row.get("lung_attention") is not None:
                text += f"\nlung attention {row['lung_attention']:.2f}"
            f = os.path.join(self.output_dir, "overlays", f"{name}_overlay.png")
            row["overlay_file"] = save_overlay(f, read_cxr(path), sal, mask, text, max_size=self.overlay_size)

    def _write_json(self, engine: Engine) -> None:
        with open(self.json_path, "w") as f:
            json.dump(self.rows, f, indent=1)

    @property
    def failures(self) -> list[dict]:
        """Rows whose status is not ``ok``."""
        return [r for r in self.rows if r["status"] != STATUS_OK]

    def finish(self) -> dict[str, int]:
        """Print a summary; stop with exit status 1 (``SystemExit``) when any input failed.

        Returns ``{"images", "ok", "failed"}`` when nothing failed.
        """
        failed = self.failures
        summary = {"images": len(self.rows), "ok": len(self.rows) - len(failed), "failed": len(failed)}
        method = f", saliency {self.saliency_method}" if self.saliency_method else ""
        print(f"inference: {summary['images']} images, {summary['ok']} ok, {summary['failed']} failed{method}")
        print(f"predictions: {os.path.abspath(self.csv_path)}")
        if self.write_overlays and summary["ok"]:
            print(f"overlays: {os.path.abspath(os.path.join(self.output_dir, 'overlays'))}")
        if failed:
            for r in failed[:10]:
                print(f"  failed: {r['image']}: {r['status']}")
            if len(failed) > 10:
                print(f"  ... and {len(failed) - 10} more")
            raise SystemExit(
                f"{len(failed)} of {len(self.rows)} images failed; see the status column of {self.csv_path}"
            )
        return summary


class LungAttentionReport:
    """Ignite handler for an evaluator run with ``SaliencyInferer``: the test split's lung attention.

    ``summary`` (pass it to ``EvaluationReport(extra_metrics=[...])``) returns ``{"lung_attention": {...}}``:
    mean, std, quartiles, a 10-bin histogram over [0, 1], per-class means (by predicted class) and how many
    images used a ground-truth mask. With ``n_overlays`` > 0 it also writes overlays of the N most and N least
    confident images to ``output_dir/overlays`` (at the model's input size).
    """

    def __init__(
        self, output_dir: str, class_names: Sequence[str], n_overlays: int = 0, saliency_method: str = ""
    ) -> None:
        self.output_dir, self.class_names, self.n_overlays = output_dir, list(class_names), int(n_overlays)
        self.saliency_method = saliency_method
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
        engine.add_event_handler(Events.COMPLETED, self._write_overlays)

    def _collect(self, engine: Engine) -> None:
        out = engine.state.output
        pred = out.get("pred", {})
        if not isinstance(pred, Mapping) or "saliency" not in pred:
            return
        found = attention_and_masks(pred, out.get("label"))
        if "lung_attention" not in found:
            return
        att = found["lung_attention"].cpu().numpy()
        prob = out["prob"] if "prob" in out else torch.softmax(pred["class"].float(), 1)
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
            item = (str(paths[i]), images[i, 0].astype(np.float16), saliency[i, 0].astype(np.float16),
                    None if masks is None else masks[i, 0].astype(np.uint8), k, conf, float(att[i]))
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
        folder = os.path.join(self.output_dir, "overlays")
        for tag, heap in (("most_confident", self._most), ("least_confident", self._least)):
            for rank, (_, _, item) in enumerate(sorted(heap, reverse=True), 1):
                path, image, sal, mask, k, conf, att = item
                text = f"{self.class_names[k]} {conf:.2f}" + ("" if math.isnan(att) else f"\nlung attention {att:.2f}")
                save_overlay(
                    os.path.join(folder, f"{tag}_{rank:02d}_{_stem(path)}.png"),
                    image.astype(np.float32), sal.astype(np.float32), mask, text,
                )
        logger.info("overlays of the %d most and least confident images: %s", self.n_overlays, folder)

    def summary(self, report: Any = None) -> dict:
        """``{"lung_attention": {...}}`` for metrics.json; ``{}`` when no saliency was computed."""
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
            result.update({q: float(np.quantile(v, p)) for q, p in
                           (("min", 0), ("q25", 0.25), ("median", 0.5), ("q75", 0.75), ("max", 1))})
        result["histogram"] = {"bin_edges": [round(float(e), 2) for e in edges], "counts": counts.tolist()}
        result["per_predicted_class_mean"] = {
            c: (float(v[classes == k].mean()) if (classes == k).any() else None) for k, c in enumerate(self.class_names)
        }
        if v.size:
            logger.info("lung attention: mean %.3f, median %.3f over %d images", result["mean"], result["median"],
                        v.size)
        return {"lung_attention": result}
