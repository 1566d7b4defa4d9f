"""Start the bundle's MONAI Label app on loopback, talk to it over HTTP, and measure it.

    python -m scripts.label_server measure [--calls 5 --epochs 3 --json runs/label_server.json]

Run from the repository root. ``measure`` copies ``label_app`` and the embedded sample (as studies, with the
sample's lung masks as final labels) into a temporary folder, starts the server with the MONAI Label environment
(``make label-env``), and reports the time from start to the first ``/info/`` answer, the ``/infer`` latency of
each model (first call and the median of later ones, on a PNG and a DICOM study) and the training time per epoch.

The client it drives is ``label_app.client.LabelServer``. Only the standard library is needed on this side.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bundle.atomic import atomic_write
from label_app.client import APP, LABEL_PYTHON, LabelServer, copy_app


def _median_latency(server: LabelServer, model: str, image: str, calls: int) -> tuple[float, float]:
    times = []
    for _ in range(calls + 1):
        start = time.perf_counter()
        server.infer(model, image, "all")
        times.append(time.perf_counter() - start)
    return times[0], statistics.median(times[1:])


def measure(calls: int = 5, epochs: int = 3) -> dict[str, Any]:
    """Start time, per-model /infer latency (first and median later call) and training seconds per epoch."""
    if not LABEL_PYTHON.exists():
        raise SystemExit(f"{LABEL_PYTHON} not found: build the MONAI Label environment with `make label-env`")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        app, studies = copy_app(tmp_path / "app"), tmp_path / "studies"
        subprocess.run([str(LABEL_PYTHON), str(APP / "studies.py"), "--out", str(studies)], check=True)
        png = sorted(p.stem for p in studies.glob("kermany_*.png"))[0]
        dicom = sorted(p.stem for p in studies.glob("*.dcm"))[0]
        with LabelServer(app, studies, tmp_path / "server.log") as server:
            result: dict[str, Any] = {"server_start_s": round(server.start_seconds, 2), "infer_s": {}}
            for model in ("lung_segmentation", "classification"):
                for kind, image in (("png", png), ("dicom", dicom)):
                    first, later = _median_latency(server, model, image, calls)
                    result["infer_s"][f"{model}/{kind}"] = {"first": round(first, 3), "later_median": round(later, 3)}
            start = time.perf_counter()
            status = server.train("lung_segmentation", {"max_epochs": epochs})
            result["train_task_s"] = round(time.perf_counter() - start, 1)
            stats = server.get("/info/").get("train_stats", {}).get("lung_segmentation", {})
            log = server.log_tail(10**7)
        epoch_times = re.findall(
            r"SupervisedTrainer:\d+\) - Epoch\[\d+\] Complete\. Time taken: (\d+):(\d+):([\d.]+)", log
        )
        seconds = [int(h) * 3600 + int(m) * 60 + float(s) for h, m, s in epoch_times]
        result.update(
            train_status=status.get("status"),
            train_epochs=len(seconds),
            train_epoch_s=round(statistics.median(seconds), 2) if seconds else None,
            train_images=len(list((studies / "labels" / "final").glob("*.png"))),
            val_mean_dice=stats.get("eval", {}).get("metrics", {}).get("val_mean_dice"),
        )
    return result


def main(argv: list[str] | None = None) -> None:
    """The command line: ``measure`` prints the figures as JSON (and writes them to ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="start time, /infer latency and training time per epoch")
    m.add_argument("--calls", type=int, default=5, help="later /infer calls per model and study")
    m.add_argument("--epochs", type=int, default=3, help="training epochs on the sample's annotations")
    m.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    result = measure(args.calls, args.epochs)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with atomic_write(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
