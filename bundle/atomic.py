"""Atomic file writes: a reader sees the old file or the new one, never a torn one; a failed write is one message.

Used for every file a killed run could leave half-written: checkpoints, curriculum state, prepared datalists,
cached PNGs and the split files of the study scripts, pictures, predictions and reports.

Every write the bundle makes goes through ``atomic_write`` (or, for a file it appends to or a writer of another
library, through ``write_failed`` where that write is called). A full disk, a missing permission, a read-only
file system or a folder removed during the write then ends the run with one message (``WriteError``, a
``UserError``: exit status 1, no traceback) naming the file, the cause in words, what was kept and what to do;
the temporary file is removed. ``write_cause`` turns the error number into those words.

A written file gets the mode any new file of the user gets (0666 less the umask, e.g. 0644), as ``open`` would
give it: ``tempfile.mkstemp`` creates the temporary with 0600, which would leave weights, metrics and pictures
unreadable by colleagues on a shared server.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, NoReturn

from .errors import DebugUserError, UserError, debug_enabled

__all__ = [
    "WRITE_ERRNOS",
    "WriteError",
    "write_cause",
    "write_error_in",
    "write_failed",
    "make_folder",
    "written_file",
    "quiet_writer_threads",
    "atomic_write",
    "atomic_write_json",
    "atomic_save",
]

# error number -> (the cause in words, what to do about it; {folder} is the file's folder)
_CAUSES: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("the disk is full", "free some space on the disk of {folder}"),
    errno.EDQUOT: ("the disk is full (the disk quota is used up)", "free some space or raise the quota of {folder}"),
    errno.EACCES: ("no permission to write there", "make {folder} writable for this user"),
    errno.EPERM: ("no permission to write there", "make {folder} writable for this user"),
    errno.EROFS: ("no permission to write there (the disk is read-only)", "make {folder} writable"),
    errno.ENOENT: ("its folder was removed", "keep {folder} in place while the run writes"),
}
WRITE_ERRNOS = frozenset(_CAUSES)


def _file_mode() -> int:
    """0666 less this process's umask: the mode ``open`` gives a new file (reading the umask means setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


# read once, at import: setting the umask to read it, while writer threads run, could change their files' mode
_FILE_MODE = _file_mode()


class WriteError(UserError):
    """A write that failed for a reason the user can fix (``UserError``: one message, exit status 1).

    ``path`` is the file that could not be written and ``errno`` the error number (None when unknown).
    """

    path: str | None = None
    errno: int | None = None


def write_cause(error: BaseException | int | None) -> tuple[str, str]:
    """The cause of a failed write in words and what to do, e.g. ``("the disk is full", "free some space on the
    disk of {folder}")``, from an ``OSError`` (or one in the chain of another exception) or an error number."""
    number = error if isinstance(error, int) else getattr(write_error_in(error), "errno", None)
    if number in _CAUSES:
        return _CAUSES[number]
    found = write_error_in(error) if isinstance(error, BaseException) else None
    reason = getattr(found, "strerror", None) or (os.strerror(number) if isinstance(number, int) else str(error))
    return f"the system refused the write ({reason})", "check the disk and the permissions of {folder}"


def write_error_in(error: BaseException | None) -> OSError | None:
    """The ``OSError`` behind ``error``: itself, or the one it was raised from or while handling.

    ``torch.save`` reports a full disk as a ``RuntimeError`` ("unexpected pos") raised while its ``OSError``
    was being handled; the error number is found there.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno is not None:
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def write_failed(
    path: str | os.PathLike,
    error: BaseException | int | None,
    what: str = "",
    kept: str | None = None,
    todo: str = "then rerun",
) -> NoReturn:
    """Stop with one message: ``cannot write <what> <path>: <cause>; <kept>. <what to do>, <todo>.``

    Args:
        path: the file (or folder) that could not be written.
        error: the exception (its chain is searched for the ``OSError``) or an error number.
        what: what the file is, e.g. ``"the resume state"``.
        kept: what is left, e.g. ``"the previous model.pt is kept"``; by default ``"nothing was written"``.
        todo: the end of the advice, e.g. ``"or pass another --ckpt_dir, then rerun"``.

    Raises:
        WriteError: normally. DebugUserError: in debug mode, chained to ``error`` so that its traceback shows.
    """
    path = os.fspath(path)
    cause, advice = write_cause(error)
    found = error if isinstance(error, int) else getattr(write_error_in(error), "errno", None)
    advice = advice.format(folder=os.path.dirname(os.path.abspath(path)))
    message = f"cannot write {what + ' ' if what else ''}{path}: {cause}; {kept or 'nothing was written'}. "
    message += f"{advice[0].upper()}{advice[1:]}, {todo}"
    if debug_enabled():
        raise DebugUserError(message) from (error if isinstance(error, BaseException) else None)
    stop = WriteError(message)
    stop.path, stop.errno = path, found
    raise stop


def written_file(error: OSError) -> str | None:
    """The file a failed write names: ``error.filename``, else the ``filename`` of the innermost call that held
    one (TensorBoard's writer thread raises its ``OSError`` without the name; the error is raised again in the
    main thread with the thread's traceback)."""
    if error.filename:
        return os.fsdecode(error.filename)
    name, tb = None, error.__traceback__
    while tb is not None:
        value = tb.tb_frame.f_locals.get("filename")
        name = os.fsdecode(value) if isinstance(value, (str, bytes)) else name
        tb = tb.tb_next
    return name


_quiet_installed = False


def quiet_writer_threads() -> None:
    """Keep a background writer thread's failed write from printing a traceback (once per process).

    TensorBoard writes its event files in a thread; a full disk ends that thread with a traceback on stderr and
    the same ``OSError`` raised again by the next write, flush or close in the main thread, where it is reported
    as one message. Other threads' errors print as before.
    """
    global _quiet_installed
    if _quiet_installed:
        return
    previous = threading.excepthook

    def hook(args: Any) -> None:
        if isinstance(args.exc_value, OSError) and args.exc_value.errno in WRITE_ERRNOS and _writer_thread(args):
            return
        previous(args)

    threading.excepthook = hook
    _quiet_installed = True


def _writer_thread(args: Any) -> bool:
    return "tensorboard" in type(args.thread).__module__ if args.thread is not None else False


def make_folder(path: str | os.PathLike, what: str = "the folder", todo: str = "then rerun") -> None:
    """``os.makedirs(path, exist_ok=True)``; a failure is one message (``write_failed``)."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        write_failed(path, e, what, "nothing was written", todo)


def _ours(error: BaseException, tmp: str) -> bool:
    """Whether ``error`` is a failure of writing ``tmp``, not of something the caller's block did (reading
    an input file, say): a write-side error number, and no other file named."""
    found = write_error_in(error)
    if found is None or found.errno not in WRITE_ERRNOS:
        return False
    return found.filename in (None, tmp)


def _remove(tmp: str) -> None:
    try:
        os.remove(tmp)
    except OSError:  # already gone with its folder
        pass


@contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "wb", *, what: str = "", kept: str | None = None, **kwargs: Any
) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it is flushed, synced and renamed onto ``path``.

    Readers never see a partial file, and a failure leaves the previous file and no temporary behind. A full
    disk, a missing permission or a removed folder ends in one message (``write_failed``) naming ``path`` (as
    ``what``) and what was ``kept`` (by default the previous file, when there is one). ``kwargs`` go to ``open``
    (e.g. ``newline=""`` for CSV).
    """
    path = os.path.abspath(os.fspath(path))
    if kept is None:
        kept = f"the previous {os.path.basename(path)} is kept" if os.path.exists(path) else "nothing was written"
    tmp = ""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".", suffix=".tmp")
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp:
            _remove(tmp)
        # before the temporary exists, every error is one of creating the folder or the temporary
        if isinstance(e, Exception) and (_ours(e, tmp) or (not tmp and write_error_in(e) is not None)):
            write_failed(path, e, what, kept)
        raise


def atomic_write_json(obj: Any, path: str | os.PathLike, indent: int | None = 2, **kwargs: Any) -> None:
    """``json.dump`` through ``atomic_write``; ``kwargs`` go to ``json.dump`` (e.g. ``default=str``)."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=indent, **kwargs)


def atomic_save(obj: Any, path: str | os.PathLike, *, what: str = "", kept: str | None = None) -> None:
    """``torch.save`` through ``atomic_write`` (``what`` and ``kept`` name the file and what a failure leaves)."""
    import torch

    with atomic_write(path, what=what, kept=kept) as f:
        torch.save(obj, f)
