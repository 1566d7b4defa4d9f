"""Let every user-caused failure end a run with its one message, not a traceback.

``pass_user_errors`` handles ``Events.EXCEPTION_RAISED``. Ignite calls that event's handlers in order and the
first one that re-raises ends it; MONAI's ``StatsHandler`` logs a full traceback there. Listed first among an
engine's handlers (``UserErrorPassThrough``), it lets a ``UserError`` through untouched.
"""

from __future__ import annotations

import errno

from ignite.engine import Engine, Events

from ..atomic import quiet_writer_threads, write_error_in, write_failed, written_file
from ..errors import DebugUserError, RelayedUserError, UserError, fail

__all__ = ["UserErrorPassThrough", "pass_user_errors"]

_LOGGED = "_traceback_logged"  # set on an exception whose traceback is in the log
# the error numbers that can only come from writing (a missing file or permission may be a read's)
_WRITE_ONLY = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def pass_user_errors(engine: Engine, e: BaseException) -> None:
    """``EXCEPTION_RAISED`` handler: re-raise ``e`` before any handler that would wrap it in a traceback.

    A ``UserError`` (or, in debug mode, a ``DebugUserError``, whose traceback Python prints anyway) is re-raised
    as it is. Anything else is a bug: it is logged with its traceback through the engine's logger, as MONAI's
    ``StatsHandler`` would, so that a run whose log (stdout) is kept but whose stderr is not still records where
    it broke, then re-raised. Ignite fires the event twice for an exception raised inside an iteration; the
    traceback is logged once. ``KeyboardInterrupt`` is re-raised without a log entry.

    A ``RelayedUserError`` (a DataLoader worker's) ends the run with its message. A full disk or read-only disk
    met by a library's writer (MONAI's handlers), whose ``OSError`` names the file, ends in ``write_failed``'s.
    """
    if isinstance(e, RelayedUserError):
        fail(e.message, cause=e)
    found = write_error_in(e)
    if found is not None and found.errno in _WRITE_ONLY and not isinstance(e, UserError) and written_file(found):
        write_failed(written_file(found), e, kept="the files written before are kept")
    if not isinstance(e, (UserError, DebugUserError, KeyboardInterrupt)) and not getattr(e, _LOGGED, False):
        engine.logger.exception(f"Exception: {e}")
        try:
            setattr(e, _LOGGED, True)
        except AttributeError:  # an exception type without a __dict__: logged again if fired again
            pass
    raise e


class UserErrorPassThrough:
    """Ignite handler installing ``pass_user_errors``; attach it before any ``StatsHandler`` of the engine."""

    def attach(self, engine: Engine) -> None:
        quiet_writer_threads()  # MONAI's TensorBoard handlers: their failed write is reported by pass_user_errors
        if not engine.has_event_handler(pass_user_errors, Events.EXCEPTION_RAISED):
            engine.add_event_handler(Events.EXCEPTION_RAISED, pass_user_errors)
