"""One module per source layout. Each has ``NAME``, ``HELP``, ``SINGLE_LABEL`` (``--classes``/``--class-map``
apply), ``OFFICIAL_TEST`` (what ``--official-test`` keeps as test, or None), ``add_arguments(parser)`` and
``scan(args) -> Scan``."""

from . import chexpert, covidx, dicom, folders, nih, rsna, siim

LAYOUTS = {m.NAME: m for m in (folders, covidx, rsna, nih, chexpert, siim, dicom)}

__all__ = ["LAYOUTS"]
