"""A client of the app: start its MONAI Label server on loopback (``LabelServer``) and talk to it over HTTP.

The server runs in the MONAI Label environment (``make label-env``, ``LABEL_PYTHON``) from a copy of this folder
(``copy_app``), so that what a run writes into the app folder stays out of the repository. The tests and
``python -m scripts.label_server measure`` use it; it needs only the standard library, so it runs in the bundle's
environment as well as in MONAI Label's.
"""

from __future__ import annotations

import email.parser
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

APP = Path(__file__).resolve().parent
ROOT = APP.parent  # the bundle root
LABEL_PYTHON = ROOT / ".venv-label" / "bin" / "python"
APP_RUNTIME_DIRS = ("model", "logs", "bin", "__pycache__")  # what the server creates in the app folder

__all__ = ["LabelServer", "HTTPError", "copy_app", "free_port", "parse_multipart", "server_env", "LABEL_PYTHON"]


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
    shutil.copytree(APP, dest, ignore=shutil.ignore_patterns(*APP_RUNTIME_DIRS))
    return dest


def server_env() -> dict[str, str]:
    """The server's default environment: this process's, unbuffered, ``OMP_NUM_THREADS`` 2 unless set, and no
    ``PYTHONPATH`` (it would put the bundle environment's packages into MONAI Label's)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    return env


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
    ``log``. ``command`` replaces the start command (e.g. ``make label``); it must serve on ``port``. ``env`` is the
    server's environment (default ``server_env()``).
    """

    def __init__(
        self,
        app: Path,
        studies: Path | str,
        log: Path,
        python: Path = LABEL_PYTHON,
        port: int | None = None,
        conf: dict[str, str] | None = None,
        timeout: float = 180,
        command: list[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.app, self.log, self.python = Path(app), Path(log), Path(python)
        # a folder, or the URL of a DICOMweb archive (kept as given: Path would fold its "//")
        self.studies = studies if isinstance(studies, str) and "://" in studies else Path(studies)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.conf, self.timeout, self.command = dict(conf or {}), timeout, command
        self.env = dict(env) if env is not None else server_env()
        self.proc: subprocess.Popen | None = None
        self.start_seconds: float | None = None

    def __enter__(self) -> "LabelServer":
        cmd = [str(self.python), "-m", "monailabel.main", "start_server", "--app", str(self.app)]
        cmd += ["--studies", str(self.studies), "--host", "127.0.0.1", "--port", str(self.port)]
        for key, value in self.conf.items():
            cmd += ["--conf", key, value]
        cmd = self.command or cmd
        start = time.monotonic()
        with open(self.log, "wb") as log:
            # a session of its own: stopping its process group also stops what a wrapper (make) started
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.app, start_new_session=True
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

    def infer(
        self, model: str, image: str, output: str = "json", timeout: float = 120, params: dict[str, Any] | None = None
    ) -> tuple[bytes, str]:
        """``POST /infer/<model>?image=<id>&output=<json|image|all>`` with ``params`` as the form field MONAI Label
        reads them from (e.g. ``{"dicom_seg": True}``); returns (body, content type)."""
        body, content_type = b"", None
        if params:
            body = urllib.parse.urlencode({"params": json.dumps(params)}).encode()
            content_type = "application/x-www-form-urlencoded"
        query = {"image": image, "output": output}
        return self.request("POST", f"/infer/{model}", query, body, content_type, timeout=timeout)

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
