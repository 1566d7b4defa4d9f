"""Let every user-caused failure end a run with its one message, not a traceback.

``pass_user_errors`` handles ``Events.EXCEPTION_RAISED``. Ignite calls that event's handlers in order and the
first one that re-raises ends it; MONAI's ``StatsHandler`` logs a full traceback there. Listed first among an
engine's handlers (``UserErrorPassThrough``), it lets a ``UserError`` through untouched.
"""

from __future__ import annotations

from ignite.engine import Engine, Events

from ..errors import DebugUserError, UserError

__all__ = ["UserErrorPassThrough", "pass_user_errors"]

_LOGGED = "_traceback_logged"  # set on an exception whose traceback is in the log


def pass_user_errors(engine: Engine, e: BaseException) -> None:
    """``EXCEPTION_RAISED`` handler: re-raise ``e`` before any handler that would wrap it in a traceback.

    A ``UserError`` (or, in debug mode, a ``DebugUserError``, whose traceback Python prints anyway) is re-raised
    as it is. Anything else is a bug: it is logged with its traceback through the engine's logger, as MONAI's
    ``StatsHandler`` would, so that a run whose log (stdout) is kept but whose stderr is not still records where
    it broke, then re-raised. Ignite fires the event twice for an exception raised inside an iteration; the
    traceback is logged once. ``KeyboardInterrupt`` is re-raised without a log entry.
    """
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
        if not engine.has_event_handler(pass_user_errors, Events.EXCEPTION_RAISED):
            engine.add_event_handler(Events.EXCEPTION_RAISED, pass_user_errors)
