"""What an inference run writes: ``predictions.csv`` / ``.json``, ``summary.json`` and per-image masks, maps, overlays."""

from __future__ import annotations

import csv
import gzip
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from ignite.engine import Engine, Events

from ..atomic import atomic_write, atomic_write_json, make_folder, write_failed
from ..data.readers import NIFTI_SUFFIXES, read_cxr
from ..data.transforms import STATUS_OK
from ..evaluation.attention import RATIO_BINS, RATIO_MAX, distribution
from ..plots import overlay_caption, save_overlay
from ..values import Rule, as_bool, boolean, choice, described, existing_file, integer, optional
from .dicom_outputs import DICOM_COLUMNS, DICOM_MODES, DicomOutputError, DicomOutputs, overlay_pixels
from .outputs import lung_mask_at, predicted_class, saliency_at

__all__ = ["PredictionWriter"]


def _float(v: Any) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v


def _nan_to_none(value: Any) -> Any:
    """``value`` with every float NaN replaced by None, so that the JSON is standard (``null``, not ``NaN``)."""
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def _save_nifti_like(array: np.ndarray, reference: str, path: str, kept: str | None = None) -> None:
    """Write ``array`` (rows, cols) to NIfTI (``.nii.gz``) on the grid and affine of the NIfTI image ``reference``.

    ``bundle.readers`` reads NIfTI as data.T (x = column, y = row); writing array.T in the reference's own
    shape and affine puts the output on top of the input in any NIfTI viewer. The bytes go through
    ``atomic_write``, as every other output does.
    """
    import nibabel as nib

    ref = nib.load(reference)
    data = np.ascontiguousarray(array.T).reshape(ref.shape)
    img = nib.Nifti1Image(data, ref.affine)
    img.set_qform(ref.affine, code=1)
    img.set_sform(ref.affine, code=1)
    with atomic_write(path, what="the map", kept=kept) as f:
        f.write(gzip.compress(img.to_bytes(), compresslevel=6))


class PredictionWriter:
    """Ignite handler writing everything ``configs/inference.json`` promises into ``output_dir``.

    * ``predictions.csv`` (appended batch by batch, so a partial run keeps its rows) and ``predictions.json``:
      one row per input with ``image``, ``status``, ``predicted``, ``prob_<class>``, ``lung_attention`` (share of
      the saliency inside the lung mask), ``lung_share`` (share of the image inside that mask: what a uniform map
      scores), ``lung_attention_ratio`` (attention / share), ``attention_outside_lungs`` (ratio < 1),
      ``attention_mask`` (``predicted`` or ``ground_truth``), ``saliency_class`` and the written files;
    * ``summary.json``: image counts, the distributions of attention, share and ratio over the run, and the share
      of images flagged ``attention_outside_lungs`` overall and per predicted class (``predictions.json`` stays a
      plain list of rows for its readers);
    * ``masks/<name>_lung.png`` (0/255) or ``.nii.gz`` for NIfTI input, at the input's own size;
    * ``saliency/<name>_saliency.npy`` (float32 in [0, 1]) or ``.nii.gz``, at the input's own size;
    * ``overlays/<name>_overlay.png``: radiograph (longest side 512 to 1024 px), heat map with its colour bar, lung
      contour, and above it the prediction and the lung attention against its chance level (as evaluation's);
    * ``dicom/<name>_seg.dcm``, ``_sr.dcm``, ``_saliency.dcm``: the lung SEG, the findings SR and the overlay as
      a Secondary Capture, for DICOM inputs (``dicom_outputs`` "auto") or every input ("always": a non-DICOM
      input gets ``_source.dcm``, a DX image of its pixels, to reference), in columns ``seg_file``, ``sr_file``,
      ``saliency_dicom_file`` (``bundle.inference.dicom_outputs``).

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
        dicom_outputs: str = "auto",
        dicom_saliency: bool = True,
        dicom_identity: str | None = None,
        inputs: Sequence[dict] = (),
        algorithm: Sequence[str] | None = None,
    ) -> None:
        """``inputs``: the run's entries (``list_inputs``), whose datalist ``patient`` identifies a converted
        input's DICOM source; ``algorithm``: the model's (name, version) in the DICOM objects."""
        self.output_dir, self.class_names = output_dir, list(class_names)
        self.multi_label = as_bool(multi_label, "multi_label")
        self.write_masks = as_bool(write_masks, "write_masks")
        self.write_saliency = as_bool(write_saliency, "write_saliency")
        self.write_overlays = as_bool(write_overlays, "write_overlays")
        self.overlay_size, self.saliency_method = overlay_size, saliency_method
        patients = {e["image"]: str(e["patient"]) for e in inputs if e.get("patient") is not None}
        self.dicom = DicomOutputs(
            output_dir,
            self.class_names,
            str(dicom_outputs).lower(),
            as_bool(dicom_saliency, "dicom_saliency"),
            dicom_identity,
            patients,
            algorithm,
        )
        self.csv_path = os.path.join(output_dir, "predictions.csv")
        self.json_path = os.path.join(output_dir, "predictions.json")
        self.summary_path = os.path.join(output_dir, "summary.json")
        self.fields = (
            ["image", "status", "predicted"]
            + [f"prob_{c}" for c in self.class_names]
            + ["lung_attention", "lung_share", "lung_attention_ratio", "attention_outside_lungs", "attention_mask"]
            + ["saliency_class", "lung_mask_file", "saliency_file", "overlay_file", *DICOM_COLUMNS]
        )
        self.rows: list[dict] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._write_batch)
        engine.add_event_handler(Events.COMPLETED, self._write_json)

    def _start(self, engine: Engine) -> None:
        self.rows = []
        with atomic_write(self.csv_path, "w", what="the predictions", newline="") as f:
            csv.DictWriter(f, self.fields).writeheader()

    def _kept(self) -> str:
        """What the outputs written so far are, for the message of a write that failed."""
        done = len(self.rows)
        if not done:
            return "nothing was written"
        return f"the rows and files of the {done} image{'s' if done != 1 else ''} before are kept"

    def _append(self, rows: list[dict]) -> None:
        """Append ``rows`` to ``predictions.csv`` (appended, so that a stopped run keeps the rows before)."""
        try:
            with open(self.csv_path, "a", newline="") as f:
                writer = csv.DictWriter(f, self.fields)
                writer.writerows([{k: "" if v is None else v for k, v in r.items()} for r in rows])
        except OSError as e:
            write_failed(self.csv_path, e, "the predictions", self._kept())

    def _write_batch(self, engine: Engine) -> None:
        batch, out = engine.state.batch, engine.state.output
        prob = out["prob"].detach().float().cpu().numpy()
        lung_prob = out["lung_prob"].detach().float().cpu().numpy() if "lung_prob" in out else None
        pred = out["pred"]
        saliency = pred["saliency"].detach().float().cpu().numpy() if "saliency" in pred else None
        sal_class = pred["saliency_class"].detach().cpu().numpy() if "saliency_class" in pred else None
        attention = out["lung_attention"].detach().cpu().numpy() if "lung_attention" in out else None
        attention_gt = out["attention_gt"].detach().cpu().numpy() if "attention_gt" in out else None
        share = out["lung_share"].detach().cpu().numpy() if "lung_share" in out else None
        ratio = out["lung_attention_ratio"].detach().cpu().numpy() if "lung_attention_ratio" in out else None
        rows = []
        for i, path in enumerate(batch["image_path"]):
            row: dict[str, Any] = dict.fromkeys(self.fields, None)
            row.update(image=path, status=batch["status"][i])
            if row["status"] == STATUS_OK:
                row["predicted"] = predicted_class(prob[i], self.class_names, self.multi_label)
                row.update({f"prob_{c}": float(p) for c, p in zip(self.class_names, prob[i])})
                if attention is not None:
                    row["lung_attention"] = _float(attention[i])
                    row["attention_mask"] = "ground_truth" if attention_gt[i] else "predicted"
                if share is not None:
                    row["lung_share"] = _float(share[i])
                    row["lung_attention_ratio"] = _float(ratio[i])
                    # None (an empty cell) where the ratio is undefined: neither flagged nor cleared
                    row["attention_outside_lungs"] = None if row["lung_attention_ratio"] is None else bool(ratio[i] < 1)
                if sal_class is not None:
                    row["saliency_class"] = self.class_names[int(sal_class[i])]
                try:
                    self._write_files(
                        row,
                        batch["name"][i],
                        tuple(int(s) for s in batch["orig_shape"][i]),
                        None if lung_prob is None else lung_prob[i, 0],
                        None if saliency is None else saliency[i, 0],
                        prob[i],
                    )
                except DicomOutputError as e:
                    row["status"] = str(e)
                except Exception as e:  # this image's files only; a full disk or unwritable folder stops the run
                    row["status"] = f"cannot write outputs ({type(e).__name__}: {e})"
            rows.append(row)
        self._append(rows)
        self.rows.extend(rows)

    def _save_map(self, array: np.ndarray, folder: str, stem: str, source: str, nifti: bool) -> str:
        """Write a per-image map into ``output_dir/folder``: NIfTI beside NIfTI input (its affine), else PNG for
        uint8 masks and .npy for float maps; returns the file path."""
        make_folder(os.path.join(self.output_dir, folder), f"the {folder} folder")
        if nifti:
            f = os.path.join(self.output_dir, folder, f"{stem}.nii.gz")
            _save_nifti_like(
                array if array.dtype != np.uint8 else (array > 0).astype(np.uint8), source, f, self._kept()
            )
        elif array.dtype == np.uint8:
            from PIL import Image

            f = os.path.join(self.output_dir, folder, f"{stem}.png")
            with atomic_write(f, what="the mask", kept=self._kept()) as out:
                Image.fromarray(array).save(out, format="PNG")
        else:
            f = os.path.join(self.output_dir, folder, f"{stem}.npy")
            with atomic_write(f, what="the map", kept=self._kept()) as out:
                np.save(out, array)
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
        dicom = self.dicom.wanted(path)
        mask = lung_mask_at(lung_prob, shape) if lung_prob is not None and (self.write_masks or dicom) else None
        if mask is not None and self.write_masks:
            row["lung_mask_file"] = self._save_map(mask * 255, "masks", f"{name}_lung", path, nifti)
        if saliency is not None and self.write_saliency:
            sal = saliency_at(saliency, shape)
            row["saliency_file"] = self._save_map(sal, "saliency", f"{name}_saliency", path, nifti)
        if self.write_overlays:
            row["overlay_file"] = self._overlay(
                row, os.path.join(self.output_dir, "overlays", f"{name}_overlay.png"), lung_prob, saliency, prob
            )
        if dicom:

            def picture() -> np.ndarray:  # drawn only when the Secondary Capture is written
                draw = lambda f: self._overlay(row, f, lung_prob, saliency, prob)  # noqa: E731
                return overlay_pixels(draw, row.get("overlay_file"))

            self.dicom.write(row, name, mask, picture, self._kept())

    def _overlay(
        self, row: dict, path: str, lung_prob: np.ndarray | None, saliency: np.ndarray | None, prob: np.ndarray
    ) -> str:
        """Draw the overlay picture of ``row`` into ``path`` (PNG); returns ``path``."""
        k = int(prob.argmax())
        text = overlay_caption(self.class_names[k], float(prob[k]), row.get("lung_attention"), row.get("lung_share"))
        label = f"saliency ({self.saliency_method})" if self.saliency_method else "saliency"
        # the maps at the network's size: one interpolation onto the picture, the lung contour from the
        # probability (smooth), as evaluation's overlays
        return save_overlay(
            path, read_cxr(row["image"]), saliency, lung_prob, text, saliency_label=label, max_size=self.overlay_size
        )

    def _write_json(self, engine: Engine) -> None:
        atomic_write_json(self.rows, self.json_path, indent=1)
        atomic_write_json(self.summary(), self.summary_path, indent=1)

    def summary(self) -> dict:
        """The run at a glance: image counts, lung attention / share / ratio distributions, flagged shares.

        ``attention_outside_lungs`` counts the images whose ratio is defined; ``per_predicted_class`` uses the top
        class (the class the saliency explains by default), also for multi-label models.
        """
        ok = [r for r in self.rows if r["status"] == STATUS_OK]
        scored = [r for r in ok if r.get("lung_attention_ratio") is not None]
        flagged = [r for r in scored if r["attention_outside_lungs"]]

        def values(key: str) -> list[float]:
            return [r[key] for r in ok if r.get(key) is not None]

        def top_class(r: dict) -> str:
            return max(self.class_names, key=lambda c: r[f"prob_{c}"])

        per_class = {}
        for c in self.class_names:
            n = sum(top_class(r) == c for r in scored)
            k = sum(top_class(r) == c for r in flagged)
            per_class[c] = {"images": n, "flagged": k, "share": k / n if n else None}
        result = {
            "images": len(self.rows),
            "ok": len(ok),
            "failed": len(self.rows) - len(ok),
            "saliency_method": self.saliency_method or None,
            "lung_attention": distribution(values("lung_attention")),
            "lung_share": distribution(values("lung_share")),
            "lung_attention_ratio": distribution(values("lung_attention_ratio"), RATIO_BINS, RATIO_MAX),
            "attention_outside_lungs": {
                "definition": "lung_attention_ratio < 1: less of the map inside the lungs than a uniform map",
                "images": len(scored),
                "flagged": len(flagged),
                "share": len(flagged) / len(scored) if scored else None,
                "per_predicted_class": per_class,
            },
        }
        return _nan_to_none(result)

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


# the settings the writer consumes (bundle.settings gathers every component's table)
RULES: dict[str, Rule] = {
    "write_masks": described(boolean, "write each image's lung mask"),
    "write_saliency": described(boolean, "write each image's saliency map"),
    "write_overlays": described(boolean, "write each image's overlay picture"),
    "dicom_outputs": described(
        choice(DICOM_MODES),
        "DICOM lung SEG, findings SR (and saliency SC) per image in ``output_dir/dicom``: auto: for DICOM inputs; "
        "always: every input (others get a DX source made from their pixels); never: none",
    ),
    "dicom_saliency": described(boolean, "with ``dicom_outputs``: the overlay picture as a DICOM Secondary Capture"),
    "dicom_identity": described(
        optional(existing_file),
        "JSON of patient and study per converted input (``dicom_outputs`` always): "
        '``{"<image path, file name or output name>": {"patient_id": ..., "patient_name": ..., "study_uid": ..., '
        '"accession_number": ...}}``; null: the datalist\'s ``patient``, else generated ids',
    ),
    "n_overlays": described(
        integer(0), "most and least confident test images drawn with saliency and lung contour (0: none)"
    ),
}
