"""One run per output folder: a run locks its ``ckpt_dir`` and output folder before it does any work.

The configs call ``lock`` right after the settings check, at the start of their ``run`` list::

    "$bundle.runlock.lock(ckpt_dir=@ckpt_dir, output_dir=@output_dir)"

Each folder gets a lock file ``.run.lock`` held with ``fcntl.flock`` on a descriptor that stays open for the
life of the process. The kernel drops the lock when the process ends, however it ends, so whether a holder is
alive is never guessed from a pid (which also makes the lock work across containers and hosts on filesystems
that support ``flock``). The file holds the holder's pid, host, start time and command line, so that a second
run on the same folder stops at once with a message naming the first. A file left by a run that was killed
(``kill -9``, a lost machine) is not locked by anyone; the next run takes it over and logs a warning.

A run that ends normally releases its locks and removes their files (``atexit``). Locking a folder this process
already holds does nothing, so several workflows can run in one process (the curriculum, the tests). Under
``torchrun`` only rank 0 takes the locks: the other ranks write nothing of their own into these folders. Where
``fcntl`` is missing (Windows) locking is skipped with a warning.
"""

from __future__ import annotations

import atexit
import datetime
import errno
import json
import logging
import os
import shlex
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import NoReturn

from bundle.atomic import write_cause
from bundle.errors import fail

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "lock", "release", "release_all", "held", "read_record"]

logger = logging.getLogger(__name__)

LOCK_NAME = ".run.lock"
# a holder writes its record right after taking the lock; a contender waits this long to read it
_RECORD_WAIT_S = 2.0
# attempts at taking a lock whose file another run removes or replaces in between (each one is a real race)
_ACQUIRE_ATTEMPTS = 20


@dataclass
class _Held:
    fd: int
    path: str
    pid: int  # the process that took it: a forked child inherits the descriptor but must not remove the file


_held: dict[str, _Held] = {}
_mutex = threading.Lock()
_atexit_registered = False


def _is_lead_rank() -> bool:
    """True unless ``RANK`` (set by ``torchrun``) names a rank other than 0."""
    rank = os.environ.get("RANK", "").strip()
    return rank in ("", "0")


def _command_line() -> str:
    """The command as it was typed (``python -m monai.bundle run ...``), not ``.../monai/bundle/__main__.py``."""
    argv = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    return shlex.join(argv)


def _record() -> bytes:
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": started, "command": _command_line()}
    return (json.dumps(record, indent=1) + "\n").encode()


def _parse(data: bytes) -> dict | None:
    """The holder record in ``data``; None when it is empty or torn (being written)."""
    try:
        record = json.loads(data.decode("utf-8", errors="replace"))
    except ValueError:
        return None
    return record if isinstance(record, dict) and "pid" in record else None


def _read_fd(fd: int) -> bytes:
    chunks = []
    offset = 0
    while True:
        chunk = os.pread(fd, 65536, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


def read_record(folder: str | os.PathLike) -> dict | None:
    """The holder record of ``folder``'s lock file (pid, host, started, command); None when there is none."""
    try:
        with open(os.path.join(os.fspath(folder), LOCK_NAME), "rb") as f:
            return _parse(f.read())
    except OSError:
        return None


def _describe(record: dict | None) -> str:
    if record is None:
        return "a run whose lock record could not be read"
    return (
        f"pid {record.get('pid', '?')} on host {record.get('host', '?')}, started {record.get('started', '?')}, "
        f"command: {record.get('command', '?')}"
    )


def _label(roles: list[str], folder: str) -> str:
    """``ckpt_dir and output_dir /path`` for named folders, the path alone otherwise."""
    named = [r for r in roles if r]
    return f"{' and '.join(named)} {folder}" if named else folder


def _options(roles: list[str]) -> str:
    named = [f"--{r}" for r in roles if r]
    return " / ".join(named) if named else "--ckpt_dir / --output_dir"


def _why(error: OSError, roles: list[str]) -> str:
    """The cause of a failed write in words, that nothing was written, and what to do."""
    cause, _ = write_cause(error)
    return f"{cause}; nothing was written. Give this run a writable {_options(roles)}"


def _write_record(fd: int, path: str, label: str, roles: list[str]) -> None:
    """Write this run's record into the locked ``fd``; on a full disk, remove the file and stop (``fail``)."""
    # the whole record at offset 0, then cut what a longer stale record left: never an empty file
    record = _record()
    try:
        os.pwrite(fd, record, 0)
        os.ftruncate(fd, len(record))
    except OSError as e:
        _unlock(_Held(fd=fd, path=path, pid=os.getpid()))
        fail(f"{label}: cannot write its lock file {path} ({e.strerror or e}): {_why(e, roles)}", e)


def _prepare(folder: str, roles: list[str]) -> str:
    """Create ``folder`` when missing and return its real path; ``fail`` when it cannot be made or written."""
    label = _label(roles, folder)
    if os.path.exists(folder) and not os.path.isdir(folder):
        fail(f"{label} is not a folder: a file of that name exists; give this run another {_options(roles)}")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        fail(f"{label} cannot be created ({e.strerror or e}): {_why(e, roles)}", e)
    return os.path.realpath(folder)


def _open(path: str, label: str, roles: list[str]) -> int:
    """Open (creating it) the lock file at ``path``; ``fail`` when the folder is not writable."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as e:
        fail(f"{label} is not writable: cannot open its lock file {path} ({e.strerror or e}): {_why(e, roles)}", e)


def _in_use(fd: int, path: str, label: str, roles: list[str]) -> NoReturn:
    """Report the run holding ``fd``'s lock; waits briefly for a holder that has not written its record yet."""
    deadline = time.monotonic() + _RECORD_WAIT_S
    record = _parse(_read_fd(fd))
    while record is None and time.monotonic() < deadline:
        time.sleep(0.05)
        record = _parse(_read_fd(fd))
    os.close(fd)
    fail(
        f"{label} is in use by another run: {_describe(record)}; wait for it to finish, "
        f"or give this run another {_options(roles)} (lock file {path})"
    )


def _acquire(folder: str, roles: list[str]) -> _Held | None:
    """Take the lock of ``folder`` (a real path); None where this filesystem cannot lock."""
    path = os.path.join(folder, LOCK_NAME)
    label = _label(roles, folder)
    for _ in range(_ACQUIRE_ATTEMPTS):
        fd = _open(path, label, roles)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                _in_use(fd, path, label, roles)
            os.close(fd)
            logger.warning(f"{label}: cannot lock {path} ({e.strerror or e}); this run goes on without a lock")
            return None
        # the holder we waited on may have removed (or a run replaced) the file after we opened it: our lock is
        # then on an inode nobody else will ever open, so start over on whatever the path names now
        try:
            current = os.stat(path)
        except FileNotFoundError:
            os.close(fd)
            continue
        mine = os.fstat(fd)
        if (current.st_dev, current.st_ino) != (mine.st_dev, mine.st_ino):
            os.close(fd)
            continue
        previous = _read_fd(fd)
        if previous.strip():
            stale = _parse(previous) or {}
            logger.warning(
                f"{label}: taking over the stale lock of pid {stale.get('pid', '?')} (host {stale.get('host', '?')}, "
                f"started {stale.get('started', '?')}, no longer running)"
            )
        _write_record(fd, path, label, roles)
        return _Held(fd=fd, path=path, pid=os.getpid())
    fail(f"{label}: its lock file {path} kept changing while this run tried to take it; is another run starting?")


def _unlock(held: _Held) -> None:
    # remove the file while still holding the lock: a contender that opened it meanwhile finds the path gone
    # (or naming a new inode) once it gets the lock, and starts over
    if held.pid == os.getpid():
        try:
            os.unlink(held.path)
        except OSError:
            pass
    os.close(held.fd)


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(release_all)
        _atexit_registered = True


def lock(*folders: str | os.PathLike | None, **named_folders: str | os.PathLike | None) -> None:
    """Lock each folder for this run, creating it when missing; stop with one message if another run holds one.

    Keyword arguments name the config id of each folder (``lock(ckpt_dir=@ckpt_dir, output_dir=@output_dir)``),
    which the messages then name together with its command-line option. None is skipped; a folder given twice
    (after resolving links) is locked once; a folder this process already holds is left as it is. Under
    ``torchrun`` only rank 0 (or no ``RANK``) locks.

    Raises:
        UserError: a folder is in use by another run (its pid, host, start and command are named), cannot be
            created or is not writable.
    """
    if not _is_lead_rank():
        return
    wanted: dict[str, tuple[str, list[str]]] = {}  # real path -> (path as given, roles)
    for role, folder in [("", f) for f in folders] + list(named_folders.items()):
        if folder is None:
            continue
        given = os.fspath(folder)
        if not given.strip():
            fail(f"{role or 'a run folder'} is empty: give it a folder")
        real = _prepare(os.path.abspath(given), [role])
        entry = wanted.setdefault(real, (given, []))
        if role and role not in entry[1]:
            entry[1].append(role)
    if fcntl is None:
        for real in wanted:
            logger.warning(f"{real}: run locking needs fcntl, which this platform lacks; the folder is not locked")
        return
    taken: list[str] = []
    with _mutex:
        try:
            for real, (_, roles) in wanted.items():
                if real in _held:
                    continue
                held_lock = _acquire(real, roles)
                if held_lock is not None:
                    _held[real] = held_lock
                    taken.append(real)
                    logger.debug(f"{real}: locked for this run (pid {os.getpid()})")
        except BaseException:
            # all or nothing: a run that stops here keeps none of the folders it just took
            for real in taken:
                _unlock(_held.pop(real))
            raise
        _register_atexit()


def release(*folders: str | os.PathLike) -> None:
    """Release this process's locks on ``folders`` and remove their lock files; folders not held are ignored."""
    with _mutex:
        for folder in folders:
            held_lock = _held.pop(os.path.realpath(os.path.abspath(os.fspath(folder))), None)
            if held_lock is not None:
                _unlock(held_lock)


def release_all() -> None:
    """Release every lock this process holds (run at exit)."""
    with _mutex:
        while _held:
            _, held_lock = _held.popitem()
            _unlock(held_lock)


def held() -> list[str]:
    """The real paths of the folders this process holds, sorted."""
    with _mutex:
        return sorted(_held)
