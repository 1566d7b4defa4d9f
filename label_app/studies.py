"""Make a MONAI Label studies folder from the bundle's embedded sample (``data/sample``).

Every sample PNG becomes a study; the first one is also written as a DICOM (12-bit MONOCHROME2) and a JPEG study,
so that all three kinds are served. The sample's lung masks become final labels (0/1 PNGs in ``labels/final``):
the annotations that training from annotations starts from. Files already there are left as they are.

    python label_app/studies.py --out runs/label/studies
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from bundle.inference.dicom_source import radiograph_to_dicom

BUNDLE_ROOT = Path(__file__).resolve().parent.parent


def make_studies(out: Path, sample: Path = BUNDLE_ROOT / "data" / "sample", labels: bool = True) -> dict[str, int]:
    """Fill ``out`` with studies (and ``labels/final``) from ``sample``; returns counts of what it holds."""
    images = sorted((sample / "images").glob("*.png"))
    if not images:
        raise SystemExit(f"{sample / 'images'}: no PNG images")
    out.mkdir(parents=True, exist_ok=True)
    for image in images:
        if not (out / image.name).exists():
            shutil.copyfile(image, out / image.name)
    first = np.asarray(Image.open(images[0]).convert("L"))
    if not (out / f"dicom_{images[0].stem}.dcm").exists():
        # a 12-bit DX (floats in [0, 1] are stored as 12 bits), as the bundle writes DICOM from pictures
        radiograph_to_dicom(
            first / 255.0, out / f"dicom_{images[0].stem}.dcm", patient_id="sample", patient_name="Sample"
        )
    if not (out / f"jpeg_{images[0].stem}.jpeg").exists():
        Image.fromarray(first).save(out / f"jpeg_{images[0].stem}.jpeg", quality=95)
    final = out / "labels" / "final"
    if labels:
        final.mkdir(parents=True, exist_ok=True)
        for mask in sorted((sample / "masks").glob("*.png")):
            if (out / mask.name).exists() and not (final / mask.name).exists():
                binary = (np.asarray(Image.open(mask).convert("L")) > 0).astype(np.uint8)
                Image.fromarray(binary).save(final / mask.name)
    return {
        "studies": sum(1 for p in out.iterdir() if p.is_file() and p.suffix in (".png", ".dcm", ".jpeg")),
        "final labels": len(list(final.glob("*.png"))) if final.is_dir() else 0,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="studies folder to fill")
    parser.add_argument("--sample", default=BUNDLE_ROOT / "data" / "sample", type=Path, help="sample folder")
    parser.add_argument("--no-labels", action="store_true", help="do not add the sample masks as final labels")
    args = parser.parse_args(argv)
    counts = make_studies(args.out, args.sample, labels=not args.no_labels)
    print(f"{os.path.abspath(args.out)}: {counts['studies']} studies, {counts['final labels']} final labels")


if __name__ == "__main__":
    main()
