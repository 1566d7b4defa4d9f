"""The one way the tests start a process, and ``python -m monai.bundle`` run in this interpreter.

Every child gets the same environment (``child_env``): unbuffered output, the same thread count, and none of the
variables that would change what it does behind a test's back (debug mode, a distributed rank). A test that needs
another value passes it in ``env``.

A check that a command stops with one message needs no interpreter of its own: ``UserError`` is a ``SystemExit``,
so ``bundle_in_process`` runs the same command line through the same parser (``fire``) here, and reports the exit
status and the output the real command would have. ``tests/configs/test_settings_cli.py`` and
``tests/test_errors.py`` keep a real command for each entry point, which proves that such a stop prints no
traceback.
"""

from __future__ import annotations

import io
import os
import random
import re
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
# variables a developer may have set that change what a child does; a test that wants one passes it in ``env``
ISOLATED = ("CXR_DEBUG", "MONAI_DEBUG_CONFIG", "RANK", "LOCAL_RANK", "WORLD_SIZE")


def child_env(env: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """This process's environment for a child: unbuffered, ``OMP_NUM_THREADS`` 2 unless set, no ``ISOLATED``
    variable; ``env`` adds or replaces variables (a value of ``None`` removes one)."""
    out = {k: v for k, v in os.environ.items() if k not in ISOLATED}
    out.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    for key, value in (env or {}).items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def label_server_env(env: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """``child_env`` for a MONAI Label server (``label_app.client.LabelServer``) with ``PYTHONPATH`` the checkout
    under test only: its ``bundle`` rather than the one installed in MONAI Label's environment, and none of this
    environment's packages. ``env`` adds or replaces variables."""
    return child_env({"PYTHONPATH": str(ROOT), **(env or {})})


def launch(
    argv: Sequence[str],
    cwd: Path | str = ROOT,
    env: Mapping[str, str | None] | None = None,
    timeout: float = 600,
    check: bool = False,
) -> subprocess.CompletedProcess:
    """Run ``argv`` to its end (from ``cwd``, the bundle root by default) and return its text output.

    With ``check`` a non-zero exit status fails the test, showing the end of both streams.
    """
    proc = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=child_env(env), capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv[:4]} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def start(argv: Sequence[str], cwd: Path | str = ROOT, env: Mapping[str, str | None] | None = None, **popen):
    """Start ``argv`` without waiting (a run to kill, a server, a lock holder); ``popen`` goes to ``Popen``."""
    return subprocess.Popen([str(a) for a in argv], cwd=cwd, env=child_env(env), **popen)


def run_bundle(*args: str, cwd: Path = ROOT, timeout: int = 600, check: bool = True, env=None):
    """Run ``python -m monai.bundle`` in a subprocess (from ``cwd``, the bundle root by default); returns the result.

    The configs need no particular working directory when given as absolute paths with ``--bundle_root``; the
    default keeps the documented ``configs/...`` relative form working.
    """
    return launch([sys.executable, "-m", "monai.bundle", *args], cwd=cwd, env=env, timeout=timeout, check=check)


def run_script(
    script: str,
    *args: str,
    cwd: Path | str = ROOT,
    env: Mapping[str, str | None] | None = None,
    timeout: float = 600,
    check: bool = False,
) -> subprocess.CompletedProcess:
    """``python scripts/<script> <args>`` from ``cwd`` (the bundle root by default), as a user runs it."""
    return launch([sys.executable, ROOT / "scripts" / script, *args], cwd=cwd, env=env, timeout=timeout, check=check)


def run_module(
    module: str, *args: str, env: Mapping[str, str | None] | None = None, timeout: float = 600, check: bool = False
) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` from the bundle root, as the commands of its development tree run
    (``python -m benchmarks``, ``python -m scripts.label_server``)."""
    return launch([sys.executable, "-m", module, *args], cwd=ROOT, env=env, timeout=timeout, check=check)


def exit_status(stop: SystemExit, stderr: io.StringIO) -> int:
    """The status Python exits with for ``stop``, printing its message to ``stderr`` as Python does."""
    if stop.code is None:
        return 0
    if isinstance(stop.code, int):
        return stop.code
    print(stop.code, file=stderr)
    return 1


class ProcessState:
    """What a run in this interpreter may change and a later test must not see: the working directory, the
    environment, debug mode, the logging set-up (``configs/logging.conf`` replaces the root's handlers), torch's
    thread count and the random generators (the configs seed them)."""

    def __init__(self) -> None:
        import logging

        from bundle import errors

        self.cwd, self.environ = os.getcwd(), dict(os.environ)
        self.debug = errors._debug
        root = logging.getLogger()
        self.root = (root.level, list(root.handlers))
        self.threads = torch.get_num_threads()
        self.rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())

    def restore(self) -> None:
        import logging

        from bundle import errors

        os.chdir(self.cwd)
        os.environ.clear()
        os.environ.update(self.environ)
        errors.set_debug(self.debug)
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        root.setLevel(self.root[0])
        for handler in self.root[1]:
            root.addHandler(handler)
        torch.set_num_threads(self.threads)
        random.setstate(self.rng[0])
        np.random.set_state(self.rng[1])
        torch.set_rng_state(self.rng[2])


def _console_handlers() -> list:
    """Every logging handler that writes to this process's console (MONAI's loggers hold their own, bound to
    the stream of their import)."""
    import logging

    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values() if hasattr(v, "handlers"))]
    consoles = {id(s) for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)}
    handlers = {id(h): h for lg in loggers for h in lg.handlers}.values()
    return [h for h in handlers if isinstance(h, logging.StreamHandler) and id(getattr(h, "stream", None)) in consoles]


def in_process(main: Callable[[], object], argv: Sequence[str], cwd: Path | str = ROOT) -> subprocess.CompletedProcess:
    """Call ``main()`` from ``cwd`` as a command would run it, in this interpreter; returns what the command
    would: its exit status (a ``SystemExit`` message is printed to stderr and gives 1, an exception prints its
    traceback and gives 1, as Python does) and its output. Everything the call changes in this process is put
    back afterwards, and the locks it took are released, as the process's exit would (atexit)."""
    from bundle import runlock

    state, out, err = ProcessState(), io.StringIO(), io.StringIO()
    for name in ISOLATED:
        os.environ.pop(name, None)
    status = 0
    handlers = {h: h.stream for h in _console_handlers()}
    try:
        os.chdir(cwd)
        for handler, stream in handlers.items():
            handler.setStream(err if stream in (sys.stderr, sys.__stderr__) else out)
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main()
            except SystemExit as stop:
                status = exit_status(stop, err)
            except Exception:
                traceback.print_exc(file=err)
                status = 1
    finally:
        runlock.release_all()
        for handler, stream in handlers.items():
            handler.setStream(stream)
        state.restore()
    return subprocess.CompletedProcess(list(argv), status, out.getvalue(), err.getvalue())


# what ``python -m monai.bundle`` offers (monai/bundle/__main__.py)
COMMANDS = ("ckpt_export", "init_bundle", "onnx_export", "run", "run_workflow", "verify_metadata", "verify_net_in_out")


def bundle_in_process(*args: str, cwd: Path | str = ROOT) -> subprocess.CompletedProcess:
    """``python -m monai.bundle <args>`` from ``cwd`` in this interpreter, for commands that stop before training.

    The arguments go through ``fire`` as on the command line, so their values parse the same, and ``sys.argv`` is
    the command's own while it runs (``bundle.overrides`` checks the ids it reads there).
    """
    import fire
    import monai.bundle.__main__ as main
    from monai.bundle import scripts

    commands = {name: getattr(scripts, name) for name in COMMANDS}

    def command() -> None:
        argv = sys.argv
        sys.argv = [main.__file__, *args]
        try:
            fire.Fire(commands, command=list(args))
        finally:
            sys.argv = argv

    return in_process(command, ["monai.bundle", *args], cwd=cwd)


def script_in_process(main: Callable, *args: str, cwd: Path | str = ROOT) -> subprocess.CompletedProcess:
    """A script's ``main`` (``sys.exit(run_main(main))`` in its file) with the command line ``args``, from ``cwd``
    in this interpreter: what ``python scripts/<name>.py <args>`` would exit with and print."""
    from bundle.errors import run_main

    def script() -> None:
        raise SystemExit(run_main(main, list(args)))

    return in_process(script, [getattr(main, "__module__", "script"), *args], cwd=cwd)


# ---- small disks: a tmpfs of a given size, full or read-only on demand -----------------------------------------


@contextmanager
def small_disk(folder: Path, size_kb: int) -> Iterator[Path]:
    """Mount a ``size_kb`` tmpfs on ``folder`` (created) for the block; always unmounted afterwards.

    The test is skipped when this process may not mount (not root, or a container without the capability).
    ``make_full`` and ``make_read_only`` turn the disk into the failure a test needs.
    """
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        import pytest

        pytest.skip(f"cannot mount a tmpfs here ({(proc.stderr or proc.stdout).strip() or 'mount failed'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def make_full(folder: Path) -> None:
    """Fill the disk of ``folder`` (a ``small_disk``) with a filler file until not one more byte fits."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1):
            try:
                while os.write(fd, b"\0" * chunk):
                    pass
            except OSError:  # full for this chunk size: go on with smaller ones
                pass
    finally:
        os.close(fd)


def remount(folder: Path, options: str) -> None:
    """``mount -o remount,<options>`` on a ``small_disk`` (``ro`` makes it read-only, ``size=2m`` grows it)."""
    subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], check=True, capture_output=True)


# what a line must not say in a default run: Python's, numpy's and PyTorch's warnings, MONAI's config banner
WARNING_LINE = re.compile(r"warn|deprecat|empty slice|parsing config_file|requires_grad", re.IGNORECASE)


def warning_lines(log: str) -> list[str]:
    """The lines of a run's output that carry a warning (``WARNING_LINE``)."""
    return [line for line in log.splitlines() if WARNING_LINE.search(line)]
