"""The per-image tables of an evaluation: MONAI's ``MetricsSaver``, without numpy's warning on images lacking a value.

MONAI's ``write_metrics_reports`` appends each image's mean over the metric's classes with ``np.nanmean``: an
image without a value (no lung mask for the Dice, an all-zero saliency map for the lung attention) is a row of NaN,
whose mean is NaN as it should be, but numpy also prints ``Mean of empty slice``. The warning says nothing the
table does not (the cell is ``nan``), so it is silenced there and only there.
"""

from __future__ import annotations

import warnings

from ignite.engine import Engine
from monai.handlers import MetricsSaver

__all__ = ["DetailsSaver"]


class DetailsSaver(MetricsSaver):
    """``MetricsSaver`` (same arguments) whose tables of per-image values print no ``Mean of empty slice``."""

    def __call__(self, engine: Engine) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Mean of empty slice", category=RuntimeWarning)
            super().__call__(engine)
