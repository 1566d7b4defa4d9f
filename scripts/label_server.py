"""Start the bundle's MONAI Label app on loopback, talk to it over HTTP, and measure it.

    python scripts/label_server.py measure [--calls 5 --epochs 3 --json runs/label_server.json]

``measure`` copies ``label_app`` and the embedded sample (as studies, with the sample's lung masks as final labels)
into a temporary folder, starts the server with the MONAI Label environment (``make label-env``), and reports the
time from start to the first ``/info/`` answer, the ``/infer`` latency of each model (first call and the median of
later ones, on a PNG and a DICOM study) and the training time per epoch. Runs from any working directory.

``LabelServer`` is also what the tests use. Only the standard library is needed on this side.
"""

from __future__ import annotations

import argparse
import email.parser
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LABEL_PYTHON = ROOT / ".venv-label" / "bin" / "python"
APP_RUNTIME_DIRS = ("model", "logs", "bin", "__pycache__")  # what the server creates in the app folder

__all__ = ["LabelServer", "HTTPError", "copy_app", "free_port", "parse_multipart", "LABEL_PYTHON"]


class HTTPError(Exception):
    """A non-2xx answer: ``status`` and the body as text."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(status, body)
        self.status, self.body = status, body

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.body[:500]}"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_app(dest: Path) -> Path:
    """A copy of ``label_app`` without what a server run left in it; returns ``dest``."""
    shutil.copytree(ROOT / "label_app", dest, ignore=shutil.ignore_patterns(*APP_RUNTIME_DIRS))
    return dest


def _multipart(field: str, path: Path) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{path.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def parse_multipart(body: bytes, content_type: str) -> dict[str, bytes]:
    """The parts of a multipart answer (``/infer?output=all``) by field name."""
    message = email.parser.BytesParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    return {
        part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
        for part in message.get_payload()
    }


class LabelServer:
    """A MONAI Label server started with ``python -m monailabel.main start_server`` on 127.0.0.1.

    Use as a context manager: it waits (at most ``timeout`` s) for ``/info/`` to answer and, on exit, stops the
    server by its PID (SIGTERM to its process group, then SIGKILL after 15 s). The server's output goes to
    ``log``. ``command`` replaces the start command (e.g. ``make label``); it must serve on ``port``.
    """

    def __init__(
        self,
        app: Path,
        studies: Path,
        log: Path,
        python: Path = LABEL_PYTHON,
        port: int | None = None,
        conf: dict[str, str] | None = None,
        timeout: float = 180,
        command: list[str] | None = None,
    ) -> None:
        self.app, self.studies, self.log, self.python = Path(app), Path(studies), Path(log), Path(python)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.conf, self.timeout, self.command = dict(conf or {}), timeout, command
        self.proc: subprocess.Popen | None = None
        self.start_seconds: float | None = None

    def __enter__(self) -> "LabelServer":
        cmd = [str(self.python), "-m", "monailabel.main", "start_server", "--app", str(self.app)]
        cmd += ["--studies", str(self.studies), "--host", "127.0.0.1", "--port", str(self.port)]
        for key, value in self.conf.items():
            cmd += ["--conf", key, value]
        cmd = self.command or cmd
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
        start = time.monotonic()
        with open(self.log, "wb") as log:
            # a session of its own: stopping its process group also stops what a wrapper (make) started
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.app, start_new_session=True
            )
        deadline = start + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.get("/info/", timeout=5)
                self.start_seconds = time.monotonic() - start
                return self
            except (OSError, HTTPError):
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"no /info/ answer within {self.timeout:.0f} s:\n{self.log_tail()}")

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the server by its PID: SIGTERM to its process group, then SIGKILL if it is not gone within 15 s."""
        if self.proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=15)
                return
            except subprocess.TimeoutExpired:
                continue

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        timeout: float = 120,
    ) -> tuple[bytes, str]:
        """One HTTP request; returns (body, content type) of a 2xx answer, else raises ``HTTPError``."""
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        req = urllib.request.Request(url, data=body, method=method)
        if content_type:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as answer:
                return answer.read(), answer.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            raise HTTPError(e.code, e.read().decode(errors="replace")) from None

    def get(self, path: str, timeout: float = 60, **params: Any) -> Any:
        return json.loads(self.request("GET", path, params or None, timeout=timeout)[0])

    def infer(self, model: str, image: str, output: str = "json", timeout: float = 120) -> tuple[bytes, str]:
        """``POST /infer/<model>?image=<id>&output=<json|image|all>``; returns (body, content type)."""
        return self.request("POST", f"/infer/{model}", {"image": image, "output": output}, b"", timeout=timeout)

    def infer_json(self, model: str, image: str) -> dict[str, Any]:
        return json.loads(self.infer(model, image, "json")[0])

    def save_label(self, image: str, label: Path, tag: str = "final") -> dict[str, Any]:
        """``PUT /datastore/label``: what an annotator's viewer does when a mask is saved."""
        body, content_type = _multipart("label", label)
        answer = self.request("PUT", "/datastore/label", {"image": image, "tag": tag}, body, content_type)
        return json.loads(answer[0])

    def train(self, model: str, params: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
        """Start training ``model`` and poll ``GET /train/`` (every second, at most ``timeout`` s) until it ends."""
        body = json.dumps(params).encode()
        self.request("POST", f"/train/{model}", body=body, content_type="application/json")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.get("/train/")
            if status.get("status") not in ("SUBMITTED", "RUNNING"):
                return status
            time.sleep(1)
        self.request("DELETE", "/train/")
        raise TimeoutError(f"training did not end within {timeout:.0f} s:\n{self.log_tail()}")


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
        subprocess.run([str(LABEL_PYTHON), str(ROOT / "label_app" / "studies.py"), "--out", str(studies)], check=True)
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
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
