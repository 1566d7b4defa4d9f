"""Turn public chest X-ray datasets and hospital DICOM folders into checked bundle datalists.

Each source layout (``bundle.prepare.layouts``) scans its folder and label files into candidate entries and a
list of what it could not use; ``bundle.prepare.pipeline.prepare`` then checks every file, removes exact
duplicates, splits by patient and writes ``datalist.json`` and ``summary.json``. The command line is
``scripts/prepare_dataset.py`` (``bundle.prepare.cli``).
"""

from .. import lazy_submodules
from .pipeline import Options, prepare
from .records import PrepareError, Scan, Skip

__all__ = ["Options", "PrepareError", "Scan", "Skip", "prepare"]

__getattr__ = lazy_submodules(__name__)
