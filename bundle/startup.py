"""Start-up of ``python -m monai.bundle``: the failures MONAI raises before any bundle code runs end in one message.

MONAI checks ``--config_file`` and applies nested overrides while it builds the workflow, before the first step of
a config (where ``bundle.overrides`` checks the command line), so a misspelt config path, or a nested id under a
missing one (``--validate#datset#data``), ends in MONAI's traceback. MONAI has no hook before that point, and
wrapping its functions would change MONAI for every bundle of the environment; ``sys.excepthook`` changes only
what is printed for an exception nothing caught. So ``make install`` writes a ``.pth`` file into the environment
(``install``), whose one line imports this module at start-up in a ``python -m monai.bundle`` process only, and
``hook`` sets ``sys.excepthook``: when the process's command line names a config file that does not exist or ids
its configs do not define, that one message is printed instead of the traceback (exit status 1, as for any
uncaught exception). Every other exception keeps its traceback, and debug mode keeps it for these too. Without
the ``.pth`` file (a bundle used without ``make install``) the ids are still checked by the configs' first step.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path
from types import TracebackType

from .errors import debug_enabled
from .overrides import command_line, command_line_problem
from .values import as_bool

__all__ = ["FILE", "LINE", "hook", "install"]

FILE = "chest_xray_ssl_multitask_startup.pth"
# site runs a .pth line that starts with "import" at every start of the environment's Python: this one is cheap,
# and imports the bundle only in a `python -m monai.bundle` process
LINE = (
    "import sys; '-m' in sys.orig_argv and 'monai.bundle' in sys.orig_argv "
    "and __import__('bundle.startup').startup.hook()\n"
)

_previous = sys.excepthook


def _debug() -> bool:
    line = command_line()
    try:
        return debug_enabled() or (line is not None and as_bool(line.values.get("debug", False), "debug"))
    except ValueError:
        return False


def _excepthook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    message = None
    if issubclass(kind, Exception):
        try:
            message = None if _debug() else command_line_problem()
        except Exception:  # reading the command line must never hide the error itself
            message = None
    if message is None:
        _previous(kind, error, tb)
    else:
        print(message, file=sys.stderr)


def hook() -> None:
    """Print the command line's problem instead of the traceback of an exception nothing caught (once per
    process: site may read the ``.pth`` file twice)."""
    global _previous
    if sys.excepthook is not _excepthook:
        _previous, sys.excepthook = sys.excepthook, _excepthook


def install(site_dir: str | None = None) -> Path:
    """Write the ``.pth`` file into ``site_dir`` (default: this environment's site-packages); returns its path."""
    path = Path(site_dir or sysconfig.get_paths()["purelib"]) / FILE
    path.write_text(LINE)
    return path


if __name__ == "__main__":
    print(f"wrote {install()}")
