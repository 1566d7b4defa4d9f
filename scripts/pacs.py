"""A local PACS for the MONAI Label app: Orthanc with DICOMweb on 127.0.0.1, and sample studies to put in it.

    python -m scripts.pacs start --storage runs/pacs --port 8042 [--dicom-port 4242]
    python -m scripts.pacs sample --out runs/pacs/sample [--count 6]
    python -m scripts.pacs upload --url http://127.0.0.1:8042 runs/pacs/sample
    python -m scripts.pacs stop --storage runs/pacs

Run from the repository root (``make pacs`` does the first three, ``make pacs-stop`` the last). ``start`` prints
the DICOMweb root to give MONAI Label as ``--studies``; Orthanc's own files, configuration, log and PID file stay
in the storage folder. ``sample`` writes sample PNGs of ``data/sample`` as DICOM DX studies: one per class first,
then pictures with a lung mask, each under its patient id from ``datalist.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from bundle.inference.dicom_source import radiograph_to_dicom
from label_app.pacs import Orthanc, PacsError, dicom_files, stop_orthanc, upload

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"


def pick_sample(sample: Path, count: int) -> list[dict]:
    """``count`` datalist entries of ``sample``: the first of each class, then those with a lung mask."""
    entries = json.loads((sample / "datalist.json").read_text())["training"]
    picked, classes = [], set()
    for entry in entries:
        if entry["label_name"] not in classes:
            classes.add(entry["label_name"])
            picked.append(entry)
    masked = [e for e in entries if (sample / "masks" / Path(e["image"]).name).exists() and e not in picked]
    return (picked + masked)[:count]


def write_sample(out: Path, count: int = 6, sample: Path = SAMPLE) -> list[Path]:
    """Write ``count`` sample PNGs as DICOM DX files ``<out>/<picture>.dcm``, one study each; returns them."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for entry in pick_sample(sample, count):
        png = sample / entry["image"]
        pixels = np.asarray(Image.open(png).convert("L"), dtype=np.uint8)
        path = out / f"{png.stem}.dcm"
        radiograph_to_dicom(pixels, path, patient_id=entry["patient"], patient_name=entry["patient"].replace(":", "^"))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="start Orthanc on 127.0.0.1")
    start.add_argument("--storage", type=Path, default=Path("runs/pacs"), help="Orthanc's folder")
    start.add_argument("--port", type=int, default=8042, help="HTTP port (REST and DICOMweb)")
    start.add_argument("--dicom-port", type=int, default=None, help="DICOM port (C-STORE); off when not given")
    stop = commands.add_parser("stop", help="stop the Orthanc of a storage folder")
    stop.add_argument("--storage", type=Path, default=Path("runs/pacs"))
    up = commands.add_parser("upload", help="store DICOM files (and the .dcm files of folders)")
    up.add_argument("--url", default="http://127.0.0.1:8042", help="Orthanc's REST root")
    up.add_argument("paths", nargs="+", type=Path)
    sample = commands.add_parser("sample", help="write sample pictures as DICOM DX studies")
    sample.add_argument("--out", type=Path, default=Path("runs/pacs/sample"))
    sample.add_argument("--count", type=int, default=6)
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            orthanc = Orthanc(args.storage, args.port, args.dicom_port).start()
            print(f"Orthanc (PID file {orthanc.storage / 'orthanc.pid'}); DICOMweb root: {orthanc.dicomweb}")
        elif args.command == "stop":
            print("stopped" if stop_orthanc(args.storage) else f"no Orthanc PID file in {args.storage}")
        elif args.command == "upload":
            counts = upload(args.url, dicom_files(args.paths))
            print(
                f"{counts['stored']} instances stored, {counts['already']} already there, {counts['studies']} "
                f"studies, in {counts['seconds']:.2f} s"
            )
        else:
            files = write_sample(args.out, args.count)
            print(f"{len(files)} DX studies in {args.out}")
    except PacsError as e:
        raise SystemExit(f"pacs {args.command}: {e}") from None


if __name__ == "__main__":
    main()
