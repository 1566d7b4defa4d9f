"""A local PACS: Orthanc with its DICOMweb plugin, started and stopped by PID, and the REST calls the project makes.

``scripts/pacs.py`` (``make pacs``) and the tests use it. It needs only the standard library, so it runs in the
bundle's environment as well as in MONAI Label's.

Orthanc 1.10 has no option for the address it listens on: with ``"RemoteAccessAllowed": false`` it answers HTTP
requests from 127.0.0.1 only (any other host gets 403), and its DICOM server (C-STORE) is off unless a DICOM port
is given.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterable

ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
DICOMWEB_ROOT = "/dicom-web/"
PID_FILE = "orthanc.pid"
CONFIG_FILE = "orthanc.json"
LOG_FILE = "orthanc.log"

__all__ = [
    "PacsError",
    "Orthanc",
    "orthanc_config",
    "stop_orthanc",
    "upload",
    "dicom_files",
    "qido",
    "instance_file",
    "is_running",
]


class PacsError(Exception):
    """A failure a user can fix, with one message naming what failed and what to do."""


def orthanc_config(storage: Path, http_port: int, dicom_port: int | None = None) -> dict[str, Any]:
    """Orthanc's configuration: loopback only, no authentication, its database and files in ``storage``."""
    return {
        "Name": "chest_xray_pacs",
        "StorageDirectory": str(storage / "db"),
        "IndexDirectory": str(storage / "db"),
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,  # HTTP from 127.0.0.1 only
        "AuthenticationEnabled": False,  # nobody else can connect (above); a hospital archive enables it
        "DicomServerEnabled": dicom_port is not None,
        "DicomPort": dicom_port or 4242,
        "DicomAet": "CXRPACS",
        "WebDavEnabled": False,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": DICOMWEB_ROOT},
    }


def _reason(body: bytes) -> str:
    """Orthanc's error answer (JSON with ``Message`` and ``Details``) in one line."""
    try:
        answer = json.loads(body)
        return "; ".join(str(answer[k]) for k in ("Message", "Details") if answer.get(k))
    except (ValueError, TypeError, AttributeError):
        return " ".join(body[:300].decode(errors="replace").split())


def _request(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None, timeout=30):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            return answer.read()
    except urllib.error.HTTPError as e:
        raise PacsError(f"{method} {url}: HTTP {e.code} {_reason(e.read())}") from None
    except (urllib.error.URLError, OSError) as e:
        raise PacsError(f"{method} {url}: {e} (is the archive running? `make pacs` starts one)") from None


def is_running(pid: int) -> bool:
    """Whether ``pid`` runs: a zombie (ended, not yet reaped by a parent that is not this process) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # no /proc (not Linux): the signal test above decides
        return True


def stop_orthanc(storage: Path, timeout: float = 20) -> bool:
    """Stop the Orthanc whose PID file is in ``storage``: SIGTERM to its process group, SIGKILL after ``timeout``
    s. Returns whether one was running."""
    pid_file = Path(storage) / PID_FILE
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().strip())
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and is_running(pid):
            try:  # reap it when this process started it
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.1)
        if not is_running(pid):
            break
    pid_file.unlink(missing_ok=True)
    return True


class Orthanc:
    """An Orthanc server on 127.0.0.1 whose files, configuration, log and PID file are in ``storage``.

    Use as a context manager (stopped by PID on exit) or call ``start()``; ``start`` waits at most ``timeout`` s
    for ``/system`` to answer. ``url`` is the REST root, ``dicomweb`` the DICOMweb root.
    """

    def __init__(self, storage: Path, http_port: int = 8042, dicom_port: int | None = None, timeout: float = 60):
        self.storage, self.http_port, self.dicom_port = Path(storage).resolve(), http_port, dicom_port
        self.timeout = timeout
        self.url = f"http://127.0.0.1:{http_port}"
        self.dicomweb = self.url + DICOMWEB_ROOT.rstrip("/")
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Orthanc":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "Orthanc":
        """Write the configuration, start Orthanc in a session of its own, write its PID file, wait for it."""
        for path, what in ((ORTHANC, "Orthanc"), (DICOMWEB_PLUGIN, "Orthanc's DICOMweb plugin")):
            if not path.exists():
                raise PacsError(f"{path}: {what} is not installed; `make system-packages` installs it")
        pid_file = self.storage / PID_FILE
        if pid_file.exists() and is_running(int(pid_file.read_text().strip() or 0)):
            raise PacsError(f"{pid_file}: an Orthanc already runs on this storage; stop it first")
        self.storage.mkdir(parents=True, exist_ok=True)
        config = self.storage / CONFIG_FILE
        config.write_text(json.dumps(orthanc_config(self.storage, self.http_port, self.dicom_port), indent=2))
        with open(self.storage / LOG_FILE, "ab") as log:
            self.proc = subprocess.Popen(
                [str(ORTHANC), str(config)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        pid_file.write_text(f"{self.proc.pid}\n")
        self._wait()
        return self

    def _wait(self) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                self.stop()
                raise PacsError(f"Orthanc exited with {self.proc.returncode}; see {self.storage / LOG_FILE}")
            try:
                _request(self.url + "/system", timeout=5)
                return
            except PacsError:
                time.sleep(0.3)
        self.stop()
        raise PacsError(f"Orthanc did not answer {self.url}/system within {self.timeout:.0f} s; see its log")

    def stop(self) -> None:
        """Stop it by its PID (see ``stop_orthanc``)."""
        stop_orthanc(self.storage)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def log_tail(self, chars: int = 4000) -> str:
        log = self.storage / LOG_FILE
        return log.read_text(errors="replace")[-chars:] if log.exists() else ""


def dicom_files(paths: Iterable[Path]) -> list[Path]:
    """The ``.dcm`` files among ``paths`` and in the folders among them (recursively), sorted."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*.dcm") if p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise PacsError(f"{path}: no such file or folder")
    return files


def upload(url: str, files: Iterable[Path]) -> dict[str, Any]:
    """POST each file to Orthanc's REST ``/instances``; returns counts (``stored``, ``already``, ``studies``) and
    ``seconds``. A file Orthanc refuses stops the upload with its name."""
    start = time.monotonic()
    counts = {"stored": 0, "already": 0}
    studies = set()
    for path in files:
        body = Path(path).read_bytes()
        try:
            answer = json.loads(_request(url.rstrip("/") + "/instances", "POST", body, timeout=60))
        except PacsError as e:
            raise PacsError(f"{path}: not stored ({e}); is it a DICOM file?") from None
        counts["already" if answer.get("Status") == "AlreadyStored" else "stored"] += 1
        studies.add(answer.get("ParentStudy"))
    return {**counts, "studies": len(studies), "seconds": time.monotonic() - start}


def qido(dicomweb: str, path: str, **filters: str) -> list[dict[str, Any]]:
    """A QIDO-RS search, e.g. ``qido(root, "/studies/<uid>/series", Modality="SEG")``; DICOM JSON objects."""
    query = "?" + urllib.parse.urlencode(filters) if filters else ""
    body = _request(dicomweb.rstrip("/") + path + query, headers={"Accept": "application/dicom+json"})
    return json.loads(body) if body.strip() else []


def instance_file(url: str, sop_instance_uid: str) -> bytes:
    """The DICOM file of one instance, found by its SOP Instance UID through Orthanc's REST API (``url``)."""
    found = json.loads(_request(url.rstrip("/") + "/tools/lookup", "POST", sop_instance_uid.encode()))
    ids = [item["ID"] for item in found if item.get("Type") == "Instance"]
    if not ids:
        raise PacsError(f"no instance {sop_instance_uid} in the archive {url}")
    return _request(f"{url.rstrip('/')}/instances/{ids[0]}/file")
