"""A headless Chromium driven over the DevTools protocol, the steps that make MONAI Label's OHIF viewer show a
DICOM SEG over its image, and the pixel checks that tell from a screenshot whether it does.

Chromium talks DevTools over a pipe (``--remote-debugging-pipe``: NUL-terminated JSON on its fds 3 and 4), so
nothing beyond the standard library is needed. Every wait is bounded; the browser is stopped by its PID.

    with Browser(log=tmp / "chromium.log") as browser:
        page = browser.open(f"{label_server}/ohif/viewer?StudyInstanceUIDs={study_uid}")
        show_seg(page)
        shot, rect = wait_for_overlay(page, image, mask, tmp / "viewer.png")
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
# The colour OHIF 3.10 gives segment 1 of a SEG without RecommendedDisplayCIELabValue (cornerstone's COLOR_LUT[1])
OHIF_SEGMENT_1 = (221, 84, 84)


class BrowserError(RuntimeError):
    """The browser did not answer, or a page did not reach what was waited for; says what the page logged."""


class Browser:
    """Headless Chromium; a context manager that stops it by its PID and removes its profile folder on exit."""

    def __init__(self, log: Path, width: int = 1280, height: int = 800, executable: Path = CHROMIUM) -> None:
        self.log, self.width, self.height, self.executable = Path(log), width, height, Path(executable)
        self.proc: subprocess.Popen | None = None
        self.profile: str | None = None
        self.events: list[dict[str, Any]] = []
        self._to_child = self._from_child = -1
        self._next_id = 0
        self._answers: dict[int, queue.Queue] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> "Browser":
        if not self.executable.exists():
            raise BrowserError(f"{self.executable} is missing: install the chromium package")
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # the browser's ends, above fd 9 so that moving them onto fds 3 and 4 cannot overwrite one another
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_child_r, from_child_w)]
        os.close(to_child_r)
        os.close(from_child_w)

        def pipe_fds() -> None:  # runs in the child: dup2'ed fds are inheritable, every other one Python opened is not
            os.dup2(ends[0], 3)
            os.dup2(ends[1], 4)

        args = [str(self.executable), "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe"]
        args += [f"--user-data-dir={self.profile}", f"--window-size={self.width},{self.height}", "--no-first-run"]
        args += ["--disable-extensions", "--disable-background-networking", "--disable-dev-shm-usage"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=pipe_fds, close_fds=False, start_new_session=True
            )
        for fd in ends:
            os.close(fd)
        threading.Thread(target=self._read, daemon=True).start()
        try:
            self.call("Browser.getVersion", timeout=30)
        except BrowserError:
            self.stop()
            raise BrowserError(f"Chromium did not start: {self.log.read_text(errors='replace')[-2000:]}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM to the browser's process group, SIGKILL if it is still there after 10 s; remove its profile."""
        if self.proc is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.proc.pid, sig)
                    self.proc.wait(timeout=10)
                    break
                except ProcessLookupError:
                    break
                except subprocess.TimeoutExpired:
                    continue
        for fd in (self._to_child, self._from_child):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._to_child = self._from_child = -1
        if self.profile:
            shutil.rmtree(self.profile, ignore_errors=True)

    def _read(self) -> None:
        buffer = b""
        while chunk := _read_or_empty(self._from_child):
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = json.loads(raw)
                answer = self._answers.get(message.get("id", -1))
                answer.put(message) if answer is not None else self.events.append(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        """One DevTools command; its result, or ``BrowserError`` on an error answer or none within ``timeout`` s."""
        with self._lock:
            self._next_id += 1
            ident = self._next_id
            self._answers[ident] = queue.Queue()
        message = {"id": ident, "method": method, "params": params or {}}
        message.update({"sessionId": session} if session else {})
        try:
            os.write(self._to_child, json.dumps(message).encode() + b"\0")
            answer = self._answers[ident].get(timeout=timeout)
        except (queue.Empty, OSError):
            raise BrowserError(f"{method}: no answer from Chromium within {timeout:.0f} s") from None
        finally:
            self._answers.pop(ident, None)
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def open(self, url: str) -> "Page":
        """A new tab of the browser's size at ``url``, with its console and network failures recorded."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        page = Page(self, self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"])
        for domain in ("Page", "Runtime", "Log", "Network"):
            page.call(f"{domain}.enable")
        size = {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False}
        page.call("Emulation.setDeviceMetricsOverride", size)
        page.call("Page.navigate", {"url": url})
        return page


def _read_or_empty(fd: int) -> bytes:
    try:
        return os.read(fd, 1 << 20)
    except OSError:  # closed by stop()
        return b""


class Page:
    """One tab: evaluate JavaScript, wait for a condition (bounded), click, take screenshots."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser, self.session = browser, session

    def call(self, method: str, params: dict | None = None, timeout: float = 30) -> dict:
        return self.browser.call(method, params, self.session, timeout)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (a promise is awaited)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise BrowserError(f"{expression[:120]}: {details.get('exception', {}).get('description', details)}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, every: float = 0.5) -> Any:
        """Poll ``expression`` until it is truthy and return it; ``BrowserError`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if value := self.evaluate(expression):
                return value
            time.sleep(every)
        raise BrowserError(f"not true within {timeout:.0f} s: {expression}\n{self.problems()}")

    def click(self, x: float, y: float, count: int = 1) -> None:
        """A left click at page coordinates; ``count`` 2 is a double click."""
        self.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
        for n in range(1, count + 1):
            for kind in ("mousePressed", "mouseReleased"):
                event = {"type": kind, "x": x, "y": y, "button": "left", "clickCount": n}
                self.call("Input.dispatchMouseEvent", event)

    def screenshot(self, path: Path | None = None) -> np.ndarray:
        """The viewport as an (H, W, 3) uint8 array, also saved as a PNG at ``path`` when given."""
        data = base64.b64decode(self.call("Page.captureScreenshot", {"format": "png"})["data"])
        if path is not None:
            Path(path).write_bytes(data)
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    def problems(self) -> str:
        """The console errors, uncaught exceptions and failed requests the page reported, one a line."""
        lines = []
        for event in self.browser.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                lines.append("exception: " + str(params["exceptionDetails"].get("exception", {}).get("description")))
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                lines.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                lines.append(f"log: {params['entry']['text']} {params['entry'].get('url', '')}")
        return "\n".join(lines)


# Centre of the first visible element matching a CSS selector whose text is ``text`` (any text when empty).
_CENTRE = """((selector, text) => {
  const e = Array.from(document.querySelectorAll(selector))
    .find(e => e.getBoundingClientRect().width > 0 && (!text || e.innerText.split('\\n')[0].trim() === text));
  if (!e) return null;
  const r = e.getBoundingClientRect();
  return [r.x + r.width / 2, r.y + r.height / 2];
})"""


def centre_of(page: Page, selector: str, text: str = "", timeout: float = 30) -> list[float]:
    """Page coordinates of the centre of the first visible ``selector`` element (whose first line is ``text``)."""
    return page.wait_for(f"{_CENTRE}({json.dumps(selector)}, {json.dumps(text)})", timeout)


def thumbnails(page: Page) -> list[str]:
    """The study browser's series thumbnails, each as its text lines joined by ``|`` (e.g. ``SEG|S:2|1``)."""
    return page.evaluate(
        "Array.from(document.querySelectorAll('[data-series]')).map(e => e.innerText.split('\\n').join('|'))"
    )


def show_seg(page: Page, timeout: float = 60) -> None:
    """What an annotator does to see a SEG in OHIF 3.10: double-click its thumbnail and answer Yes to "Do you want
    to open this Segmentation?" (the viewer's ``disableConfirmationPrompts`` would skip it, but MONAI Label's
    app-config.js leaves it unset). Waits until the radiograph is drawn first."""
    page.wait_for("document.querySelectorAll('.cornerstone-canvas, canvas').length > 0", timeout)
    try:  # the "investigational use only" banner covers the viewport's bottom until confirmed
        page.click(*centre_of(page, "[data-cy=confirm-and-hide-button]", timeout=10))
    except BrowserError:
        pass
    page.click(*centre_of(page, "[data-cy=study-browser-thumbnail-no-image]", "SEG", timeout), count=2)
    page.click(*centre_of(page, "[data-cy=yes-hydrate-btn]", timeout=timeout))


# The image's corners on the page, from cornerstone (exposed by OHIF as window.cornerstone): the canvas offset plus
# the canvas coordinates of image points (0, 0) and (columns, rows).
_IMAGE_RECT = """(() => {
  const vp = cornerstone.getEnabledElements()[0].viewport;
  const id = vp.getCurrentImageId();
  const image = id && cornerstone.cache.getImage(id);
  if (!image) return null;
  const box = vp.canvas.getBoundingClientRect();
  const corners = [[0, 0], [image.columns, image.rows]]
    .map(p => vp.worldToCanvas(cornerstone.utilities.imageToWorldCoords(id, p)));
  return [box.x + corners[0][0], box.y + corners[0][1], box.x + corners[1][0], box.y + corners[1][1]];
})()"""


def image_rect(page: Page, timeout: float = 30) -> tuple[float, float, float, float]:
    """(left, top, right, bottom): where the viewport's image lies on the page, in CSS pixels."""
    return tuple(page.wait_for(_IMAGE_RECT, timeout))


@dataclass
class Overlay:
    """What a screenshot shows where an image of known pixels and lung mask was drawn.

    ``correlation``: of the screenshot's grey values with the image's, outside the lungs (1: the image is there);
    ``inside``: share of lung pixels tinted with the segment's colour; ``outside``: share of the other pixels tinted.
    """

    correlation: float
    inside: float
    outside: float

    def shows_segment(self) -> bool:
        return self.correlation > 0.9 and self.inside > 0.9 and self.outside < 0.05


def sample(shot: np.ndarray, rect: tuple[float, float, float, float], shape: tuple[int, int]) -> np.ndarray:
    """The screenshot (H, W, 3) at the centre of each of an image's (rows, cols) pixels drawn into ``rect``:
    (rows, cols, 3) float."""
    left, top, right, bottom = rect
    rows, cols = shape
    y = np.clip((top + (np.arange(rows) + 0.5) * (bottom - top) / rows).astype(int), 0, shot.shape[0] - 1)
    x = np.clip((left + (np.arange(cols) + 0.5) * (right - left) / cols).astype(int), 0, shot.shape[1] - 1)
    return shot[y[:, None], x[None, :]].astype(float)


def erode(mask: np.ndarray, steps: int) -> np.ndarray:
    """``mask`` (rows, cols) bool shrunk by ``steps`` pixels (4-neighbourhood): away from the drawn outline."""
    out = mask.copy()
    for _ in range(steps):
        padded = np.pad(out, 1, constant_values=False)
        out = out & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return out


def overlay(
    shot: np.ndarray,
    rect: tuple[float, float, float, float],
    image: np.ndarray,
    mask: np.ndarray,
    colour: tuple[int, int, int] = OHIF_SEGMENT_1,
) -> Overlay:
    """Compare a screenshot (H, W, 3) with the image (rows, cols) and lung mask (rows, cols, bool) drawn into
    ``rect``. A pixel is tinted when its colour minus its grey level points the way ``colour`` does (cosine > 0.9)
    and is at least 15 levels strong: a blend of any grey with the colour does, a grey pixel does not."""
    seen = sample(shot, rect, mask.shape)
    chroma = seen - seen.mean(axis=2, keepdims=True)
    target = np.asarray(colour, float) - np.mean(colour)
    strength = np.linalg.norm(chroma, axis=2)
    cosine = (chroma @ target) / (strength * np.linalg.norm(target) + 1e-9)
    tinted = (cosine > 0.9) & (strength > 15)
    inside, outside = erode(mask, 3), erode(~mask, 3)
    grey = seen.mean(axis=2)[outside]
    correlation = float(np.corrcoef(grey, image.astype(float)[outside])[0, 1]) if grey.std() > 0 else 0.0
    return Overlay(correlation, float(tinted[inside].mean()), float(tinted[outside].mean()))


def wait_for_overlay(
    page: Page, image: np.ndarray, mask: np.ndarray, path: Path, timeout: float = 30
) -> tuple[Overlay, tuple[float, float, float, float]]:
    """Take screenshots (saved at ``path``) until one shows ``mask`` over ``image`` or ``timeout`` s have passed;
    returns the last one's ``Overlay`` and the image's place on the page."""
    deadline = time.monotonic() + timeout
    while True:
        rect = image_rect(page)
        found = overlay(page.screenshot(path), rect, image, mask)
        if found.shows_segment() or time.monotonic() > deadline:
            return found, rect
        time.sleep(1)
