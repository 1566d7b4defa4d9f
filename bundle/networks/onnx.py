"""The ONNX form of the two tensor views (``network_def``: class logits, ``network_def_seg``: lung logits).

One set of exporter arguments for ``python -m monai.bundle onnx_export``, the tests, the benchmarks and anyone
exporting from Python: input ``image`` (B, 1, H, W) with a dynamic batch, height and width; output ``pred``
(B, K) or ``lung`` (B, 2, H, W), named as in ``configs/metadata.json``. MONAI hands these to
``torch.onnx.export`` only with ``use_trace=True`` (with ``use_trace=False`` it drops them, and with PyTorch >= 2.9
exports the same module without dynamic axes), so ``export`` always passes it; with PyTorch >= 2.9 the exporter
is then the default ``torch.export``-based one (``dynamo``), which needs no tracing. ``external_data: False``
keeps the weights inside the file: MONAI exports to a temporary file and re-saves it, and PyTorch's default
(weights in a ``.data`` file beside the temporary one) would leave that file behind in the temporary folder.

Sides must be multiples of 32 (CNNs; 16 for the ViTs), as for the PyTorch network: the graph does not check it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from monai.bundle import onnx_export
from monai.networks.utils import convert_to_onnx
from torch import nn

__all__ = ["INPUT_NAME", "OUTPUT_NAMES", "converter_kwargs", "export", "to_onnx"]

INPUT_NAME = "image"
# config id of a view -> the name of its output (configs/metadata.json's network_data_format)
OUTPUT_NAMES = {"network_def": "pred", "network_def_seg": "lung"}
SPATIAL_AXES = {0: "batch", 2: "height", 3: "width"}


def converter_kwargs(net_id: str) -> dict[str, Any]:
    """``--converter_kwargs`` of ``monai.bundle onnx_export`` for the view ``net_id`` (``network_def`` or
    ``network_def_seg``): names, dynamic batch / height / width, the ``torch.export`` exporter, weights inside."""
    if net_id not in OUTPUT_NAMES:
        raise ValueError(f"net_id must be one of {sorted(OUTPUT_NAMES)}, got {net_id!r}")
    output = OUTPUT_NAMES[net_id]
    return {
        "dynamo": True,
        "external_data": False,
        "input_names": [INPUT_NAME],
        "output_names": [output],
        "dynamic_axes": {
            INPUT_NAME: dict(SPATIAL_AXES),
            output: {0: "batch"} if output == "pred" else dict(SPATIAL_AXES),
        },
    }


def export(
    net_id: str,
    filepath: str | os.PathLike,
    ckpt_file: str | os.PathLike,
    config_file: str | os.PathLike | Sequence[str | os.PathLike],
    meta_file: str | os.PathLike | None = None,
    **override: Any,
) -> None:
    """``python -m monai.bundle onnx_export`` of ``net_id`` with ``converter_kwargs``, in this process.

    ``override``: config ids (``backbone``, ``image_size``, ...); the example input is (1, 1, image_size,
    image_size) of the config, its axes dynamic in the file.
    """
    configs = [str(c) for c in config_file] if isinstance(config_file, (list, tuple)) else str(config_file)
    onnx_export(
        net_id=net_id,
        filepath=str(filepath),
        ckpt_file=str(ckpt_file),
        meta_file=str(meta_file) if meta_file else None,
        config_file=configs,
        use_trace=True,
        converter_kwargs=converter_kwargs(net_id),
        **override,
    )


def to_onnx(network: nn.Module, net_id: str, filepath: str | os.PathLike, image_size: int = 224) -> None:
    """Write ``network`` (a view of the kind ``net_id`` names, weights loaded) to ``filepath`` as ``export`` does,
    without a config or a checkpoint file: MONAI's ``convert_to_onnx``, which ``onnx_export`` calls."""
    example = [torch.rand(1, 1, image_size, image_size)]
    with warnings.catch_warnings():
        # PyTorch's advice to give dynamic_shapes instead: the axes given here are mapped to them (tested)
        warnings.filterwarnings("ignore", message="# 'dynamic_axes' is not recommended")
        kwargs = {**converter_kwargs(net_id), "verbose": False}  # no progress lines
        convert_to_onnx(network, example, filename=str(filepath), use_trace=True, **kwargs)
