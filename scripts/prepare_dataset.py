"""Turn a public chest X-ray dataset or a hospital DICOM folder into the bundle's datalist.

    python scripts/prepare_dataset.py <layout> --src <dataset folder> --out <output folder> [options]

Layouts: folders, covidx, rsna-pneumonia, nih, chexpert, siim-covid, dicom (``--help`` on each). Writes
``datalist.json`` and ``summary.json`` into the output folder. See docs/prepare_dataset.md.

A source that cannot be prepared ends in one ``error:`` line and exit status 2 (1 for a file that cannot be
read or written); ``CXR_DEBUG=1`` shows the traceback instead.
"""

import sys

from bundle.errors import run_main
from bundle.prepare.cli import main

if __name__ == "__main__":
    sys.exit(run_main(main))
