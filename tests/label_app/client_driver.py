"""Drive a MONAI Label server with MONAI Label's own Python client (``monailabel.client.MONAILabelClient``).

It exists only in the MONAI Label environment, so the tests run this file there (``drive``): it reads
``{"url": ..., "calls": [[method, args, kwargs], ...]}`` as JSON on stdin, calls each client method in order and
prints one JSON list: per call ``{"call", "ok", "status", "answer"}`` (``answer``: the method's JSON result, or the
server's answer text for an HTTP error).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any


def _call(client: Any, method: str, args: list, kwargs: dict) -> dict[str, Any]:
    from monailabel.client.client import MONAILabelClientException

    try:
        answer = getattr(client, method)(*args, **kwargs)
    except MONAILabelClientException as e:
        match = re.match(r"Status: (\d+); Response: (.*)", e.msg, re.S)
        status = int(match.group(1)) if match else e.status_code
        return {"call": method, "ok": False, "status": status, "answer": match.group(2) if match else e.msg}
    if method == "infer":  # (result file, JSON): the file stays on this side
        answer = {"file": bool(answer[0]), "params": answer[1]}
    return {"call": method, "ok": True, "status": 200, "answer": answer}


def main() -> None:
    from monailabel.client import MONAILabelClient

    job = json.load(sys.stdin)
    client = MONAILabelClient(job["url"], tmpdir=job.get("tmpdir"))
    print(json.dumps([_call(client, m, a, k) for m, a, k in job["calls"]]))


def drive(python: Path, url: str, calls: list[tuple[str, list, dict]], tmpdir: Path, timeout: float = 300) -> list:
    """Run ``calls`` (method, args, kwargs) with ``python`` (the MONAI Label environment) against ``url``."""
    job = json.dumps({"url": url, "calls": calls, "tmpdir": str(tmpdir)})
    proc = subprocess.run(
        [str(python), __file__], input=job, capture_output=True, text=True, timeout=timeout, env={"PATH": "/usr/bin"}
    )
    if proc.returncode != 0:
        raise AssertionError(f"client driver exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
