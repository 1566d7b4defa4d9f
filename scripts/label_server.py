"""Start the bundle's MONAI Label app on loopback, talk to it over HTTP, and measure it.

    python -m scripts.label_server measure [--calls 5 --epochs 3 --json runs/label_server.json]
    python -m scripts.label_server load [--clients 8 --seconds 60 --model lung_segmentation --json <file>]

Run from the repository root. ``measure`` copies ``label_app`` and the embedded sample (as studies, with the
sample's lung masks as final labels) into a temporary folder, starts the server with the MONAI Label environment
(``make label-env``), and reports the time from start to the first ``/info/`` answer, the ``/infer`` latency of
each model (first call and the median of later ones, on a PNG and a DICOM study) and the training time per epoch.
``load`` starts the same server and has ``--clients`` clients call ``/infer/<model>`` on the sample's studies
without pause for ``--seconds`` while one more client asks for ``/info/`` every half second: it reports the
requests, errors, p50/p95 latency, the ``/info/`` latency under that load and the server's peak resident memory.
``--app`` serves another copy of the app (another branch's, to compare), ``--conf`` passes server options; the
start-up scoring for active learning (a process of its own) is off while it measures.

The client it drives is ``label_app.client.LabelServer``. Only the standard library is needed on this side.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bundle.atomic import atomic_write
from label_app.client import APP, LABEL_PYTHON, HTTPError, LabelServer, copy_app, server_env


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


def _quantile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (nearest rank) of ``values``, rounded to ms; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def _rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            line = next(x for x in f if x.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0.0
    return int(line.split()[1]) / 1024


def _client(server: LabelServer, model: str, images: list[str], until: float, out: dict[str, list]) -> None:
    i = 0
    while time.monotonic() < until:
        start = time.perf_counter()
        try:
            server.infer(model, images[i % len(images)], "all", timeout=300)
            out["latency"].append(time.perf_counter() - start)
        except (OSError, HTTPError) as e:
            out["errors"].append(str(e)[:200])
        i += 1


def _prober(server: LabelServer, until: float, out: dict[str, list]) -> None:
    while time.monotonic() < until:
        start = time.perf_counter()
        server.get("/info/", timeout=300)
        out["info"].append(time.perf_counter() - start)
        out["rss"].append(_rss_mb(server.proc.pid))
        time.sleep(0.5)


def load(
    model: str = "lung_segmentation",
    clients: int = 8,
    seconds: float = 60,
    app: Path = APP,
    conf: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``clients`` concurrent clients on ``/infer/<model>`` for ``seconds``, with ``/info/`` probed meanwhile;
    ``conf``: the server's ``--conf`` options. The start-up scoring of the studies for active learning is off: it
    runs in a process of its own, which is not what is measured."""
    if not LABEL_PYTHON.exists():
        raise SystemExit(f"{LABEL_PYTHON} not found: build the MONAI Label environment with `make label-env`")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        studies = tmp_path / "studies"
        subprocess.run([str(LABEL_PYTHON), str(APP / "studies.py"), "--out", str(studies)], check=True)
        images = sorted(p.stem for p in studies.glob("*.png"))
        copy = tmp_path / "app"
        shutil.copytree(app, copy, ignore=shutil.ignore_patterns("model", "logs", "bin", "__pycache__"))
        env = {**server_env(), "MONAI_LABEL_AUTO_UPDATE_SCORING": "false"}
        with LabelServer(copy, studies, tmp_path / "server.log", conf=conf, env=env) as server:
            server.infer(model, images[0], "all", timeout=300)  # weights loaded before the clock starts
            out: dict[str, list] = {"latency": [], "errors": [], "info": [], "rss": []}
            until = time.monotonic() + seconds
            threads = [threading.Thread(target=_prober, args=(server, until, out))]
            threads += [
                threading.Thread(target=_client, args=(server, model, images[k:] + images[:k], until, out))
                for k in range(clients)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    return {
        "model": model,
        "conf": conf or {},
        "clients": clients,
        "seconds": seconds,
        "requests": len(out["latency"]),
        "errors": len(out["errors"]),
        "first_error": out["errors"][0] if out["errors"] else None,
        "p50_s": _quantile(out["latency"], 0.5),
        "p95_s": _quantile(out["latency"], 0.95),
        "info_p50_s": _quantile(out["info"], 0.5),
        "info_max_s": round(max(out["info"]), 3) if out["info"] else None,
        "server_rss_peak_mb": round(max(out["rss"]), 1) if out["rss"] else None,
    }


def main(argv: list[str] | None = None) -> None:
    """The command line: ``measure`` prints the figures as JSON (and writes them to ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="start time, /infer latency and training time per epoch")
    m.add_argument("--calls", type=int, default=5, help="later /infer calls per model and study")
    m.add_argument("--epochs", type=int, default=3, help="training epochs on the sample's annotations")
    m.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    ld = sub.add_parser("load", help="concurrent /infer clients: requests, errors, latency, /info/ latency, memory")
    ld.add_argument("--model", default="lung_segmentation", help="the model the clients call")
    ld.add_argument("--clients", type=int, default=8, help="concurrent clients")
    ld.add_argument("--seconds", type=float, default=60, help="how long the clients call")
    ld.add_argument("--app", type=Path, default=APP, help="the app folder to serve (default: label_app)")
    ld.add_argument("--conf", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"), help="server option")
    ld.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.command == "load":
        result = load(args.model, args.clients, args.seconds, args.app, dict(args.conf))
    else:
        result = measure(args.calls, args.epochs)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with atomic_write(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
