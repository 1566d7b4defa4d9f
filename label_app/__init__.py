"""The bundle's MONAI Label app (``main.py``, ``lib/``, ``studies.py``) and its client (``client.py``).

MONAI Label loads ``main.py`` by its path, with this folder first on its path (so ``lib`` is a top-level package
there); this file only makes ``label_app.client`` importable from the repository root.
"""
