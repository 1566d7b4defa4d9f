"""Progress on a terminal, plain log lines elsewhere.

A bar redrawn in place is pleasant in a terminal but fills a log file (CI, ``nohup``, a cluster job) with
carriage returns; the configs therefore switch bars on only when stderr is a terminal (``show_progress``), and
log every iteration with MONAI's StatsHandler otherwise.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from ignite.engine import Engine
from ignite.handlers import ProgressBar

from ..values import Rule, as_bool, boolean, described

__all__ = ["is_terminal", "TerminalProgressBar"]


def is_terminal() -> bool:
    """Whether progress bars can be drawn: stderr (where tqdm writes) is an interactive terminal."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class TerminalProgressBar:
    """Ignite's ``ProgressBar`` (iterations of each epoch, with the loss) when ``enabled``, else nothing.

    Args:
        enabled: draw the bar (the configs pass ``show_progress``).
        output_transform: engine output -> value shown beside the bar (default: the ``loss`` entry).
    """

    rank_zero_only = True  # one bar, rank 0's, under DDP (bundle.distributed.for_this_rank)

    def __init__(self, enabled: bool = True, output_transform: Callable[[Any], dict] | None = None) -> None:
        self.enabled = as_bool(enabled, "show_progress")
        self.output_transform = output_transform or _loss

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            ProgressBar(persist=False).attach(engine, output_transform=self.output_transform)


def _loss(output: Any) -> dict[str, float]:
    loss = output.get("loss") if isinstance(output, dict) else None
    return {} if loss is None else {"loss": float(loss)}


RULES: dict[str, Rule] = {
    "show_progress": described(boolean, "progress bars instead of per-iteration log lines")
}  # the setting this module consumes (bundle.settings)
