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

``hook`` also silences MONAI's warning that a config file's expressions are evaluated (a paragraph printed by
every run) when every config file on the command line is one of this bundle's own ``configs/``: the user chose to
run the bundle they installed. Any other config file keeps the warning.
"""

from __future__ import annotations

import ast
import re
import sys
import sysconfig
import warnings
from pathlib import Path
from types import TracebackType

from .errors import debug_enabled
from .overrides import command_line, command_line_problem
from .values import as_bool

__all__ = ["FILE", "LINE", "hook", "install", "own_config_files"]

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


def own_config_files(argv: list[str]) -> list[str] | None:
    """The files ``--config_file`` of ``argv`` names, when every one is in this bundle's ``configs/``; else None."""
    value = next((a.split("=", 1)[1] for a in argv if a.startswith("--config_file=")), None)
    if value is None and "--config_file" in argv[:-1]:
        value = argv[argv.index("--config_file") + 1]
    if not value:
        return None
    try:
        files = ast.literal_eval(value) if value.lstrip().startswith("[") else [value]
    except (ValueError, SyntaxError):
        return None
    configs = Path(__file__).resolve().parents[1] / "configs"
    paths = [Path(str(f)).resolve() for f in files]
    own = paths and all(p.parent == configs and p.is_file() for p in paths)
    return [str(f) for f in files] if own else None


def hook() -> None:
    """Print the command line's problem instead of the traceback of an exception nothing caught (once per
    process: site may read the ``.pth`` file twice), and silence the evaluation warning for the bundle's own
    configs."""
    global _previous
    if sys.excepthook is not _excepthook:
        _previous, sys.excepthook = sys.excepthook, _excepthook
    files = own_config_files(list(getattr(sys, "orig_argv", [])))
    if files is not None:  # MONAI names a list of files as Python prints the list
        shown = files[0] if len(files) == 1 else str(files)
        warnings.filterwarnings("ignore", message=re.escape(f"parsing config_file {shown}: "), category=UserWarning)


def install(site_dir: str | None = None) -> Path:
    """Write the ``.pth`` file into ``site_dir`` (default: this environment's site-packages); returns its path."""
    path = Path(site_dir or sysconfig.get_paths()["purelib"]) / FILE
    path.write_text(LINE)
    return path


if __name__ == "__main__":
    print(f"wrote {install()}")
