"""Where the bundle is, and its inference recipe (``configs/inference.json``) as the infer and train tasks use it."""

from __future__ import annotations

import json
import os
from typing import Any

from monai.bundle import ConfigParser

__all__ = ["NETWORK_IDS", "find_bundle_root", "inference_config", "network_overrides", "weights_paths"]

INFERENCE_CONFIG = os.path.join("configs", "inference.json")
# configs/inference.json ids a server may set with --conf: which network serves, and from which weights file
NETWORK_IDS = ("backbone", "vit_pool", "image_size", "lungs_only", "ckpt_file")


def find_bundle_root(app_dir: str, conf: dict[str, str]) -> str:
    """The bundle root: ``--conf bundle_root``, else the app folder's parent, else where ``bundle`` is installed.

    The last case serves a copy of the app made elsewhere (as the tests do) with the bundle installed editable.
    """
    candidates = [conf["bundle_root"]] if conf.get("bundle_root") else []
    candidates.append(os.path.dirname(os.path.abspath(app_dir)))
    import bundle

    candidates.append(os.path.dirname(os.path.dirname(os.path.abspath(bundle.__file__))))
    for root in candidates:
        if os.path.isfile(os.path.join(root, INFERENCE_CONFIG)):
            return os.path.abspath(root)
    raise FileNotFoundError(f"no {INFERENCE_CONFIG} in any of {candidates}; pass --conf bundle_root <path>")


def network_overrides(conf: dict[str, str]) -> dict[str, Any]:
    """The ``NETWORK_IDS`` among the server's ``--conf`` options, as config values (JSON where it parses:
    ``--conf image_size 128`` is the integer 128, ``--conf backbone vit_s16`` the string)."""
    overrides: dict[str, Any] = {}
    for key in NETWORK_IDS:
        if key in conf:
            try:
                overrides[key] = json.loads(conf[key])
            except (TypeError, ValueError):
                overrides[key] = conf[key]
    return overrides


def inference_config(bundle_root: str, **overrides: Any) -> ConfigParser:
    """``configs/inference.json`` parsed with ``bundle_root`` set, and ``overrides`` (ids such as ``saliency``)."""
    parser = ConfigParser()
    parser.read_config(os.path.join(bundle_root, INFERENCE_CONFIG))
    parser["bundle_root"] = bundle_root
    for key, value in overrides.items():
        parser[key] = value
    return parser


def weights_paths(config: ConfigParser, app_dir: str) -> list[str]:
    """The weights files the tasks load, oldest first: the config's ``ckpt_file`` (the shipped ``models/model.pt``),
    then the app's ``model/model.pt`` that training from annotations publishes (MONAI Label loads the last one
    that exists)."""
    return [os.path.abspath(config.get_parsed_content("ckpt_file")), os.path.join(app_dir, "model", "model.pt")]
