"""Failures a user can cause and fix: one message naming the setting, file or entry, exit status 1, no traceback.

``UserError`` is a ``SystemExit``: MONAI's config machinery and ignite re-wrap every ``Exception`` raised while a
config is parsed or an engine runs (55 to 250 lines of traceback around the one useful line), but they let
``SystemExit`` through, and Python prints its message alone. ``fail`` raises it, or, in debug mode, a
``DebugUserError`` (a ``RuntimeError``) so that the full traceback shows. Debug mode is the ``debug`` id of every
config (``--debug true``), ``CXR_DEBUG=1`` in the environment, or MONAI's own ``MONAI_DEBUG_CONFIG``.

Command-line scripts wrap their ``main`` in ``run_main`` so that their known errors end the same way.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn, TypeVar

__all__ = ["UserError", "DebugUserError", "RelayedUserError", "fail", "set_debug", "debug_enabled", "run_main"]

logger = logging.getLogger(__name__)

_TRUE = ("1", "true", "yes", "on")
_debug = False

T = TypeVar("T")


class UserError(SystemExit):
    """A failure the user can fix; exits with status 1 and prints ``message`` only."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class DebugUserError(RuntimeError):
    """The same failure in debug mode: an ordinary exception, so Python prints its traceback and cause."""


class RelayedUserError(RuntimeError):
    """A ``UserError`` raised in a DataLoader worker, carried to the main process.

    A ``SystemExit`` would end the worker and leave the main process with "worker exited unexpectedly"; an
    ``Exception`` is sent back, and torch re-raises it as ``RelayedUserError("Caught ... Original Traceback
    ...")``. The message is taken back out of that text, and ``bundle.engines.user_errors`` ends the run with it.
    """

    def __init__(self, message: str) -> None:
        marker = f"{type(self).__name__}: "
        if "Original Traceback" in message and marker in message:  # re-raised by torch: the last line is ours
            message = message.rsplit(marker, 1)[1].strip()
        super().__init__(message)
        self.message = message


def set_debug(enabled: bool) -> None:
    """Switch debug mode for this process (the configs' ``debug`` id calls this through ``bundle.settings.check``)."""
    global _debug
    _debug = bool(enabled)


def debug_enabled() -> bool:
    """True when the ``debug`` id, ``CXR_DEBUG`` or ``MONAI_DEBUG_CONFIG`` asks for tracebacks."""
    env = (os.environ.get(k, "").strip().lower() for k in ("CXR_DEBUG", "MONAI_DEBUG_CONFIG"))
    return _debug or any(v in _TRUE for v in env)


def fail(message: str, cause: BaseException | None = None) -> NoReturn:
    """Stop with ``message`` (naming the id, file or entry, the value and what is allowed).

    Raises:
        UserError: normally (``SystemExit``: one message, exit status 1).
        DebugUserError: in debug mode, chained to ``cause``, so that the traceback shows where it came from.
    """
    if debug_enabled():
        raise DebugUserError(message) from cause
    raise UserError(message)


def run_main(main: Callable[[Sequence[str] | None], T], argv: Sequence[str] | None = None) -> T:
    """Run a script's ``main`` so that its known failures end in one message and exit status 1.

    ``UserError`` passes through (Python prints it). ``ValueError`` and ``OSError`` raised by the
    script's own checks become one message unless debug mode is on; anything else is a bug and keeps its
    traceback.
    """
    try:
        return main(argv)
    except (ValueError, OSError) as e:
        if debug_enabled():
            raise
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
