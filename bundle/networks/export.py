"""TorchScript-safe ResNet shortcuts for MONAI's FlexibleUNet encoders (``torch.jit.trace`` / ``script``)."""

from __future__ import annotations

import functools

import torch
from torch import nn

__all__ = ["ZeroPadShortcut", "exportable"]


class ZeroPadShortcut(nn.Module):
    """The parameter-free "type A" ResNet shortcut (stride by 1x1 average pooling, zero channels appended).

    Same output as MONAI's ``ResNet._downsample_basic_block``, which resnet18/34 store as a ``functools.partial``
    attribute and which reads ``out.data``: ``torch.jit.script`` rejects the partial, and ``torch.jit.trace``
    records ``.data`` as a constant, so a traced model would reuse the trace input's shortcut for every image.
    ``detach()`` keeps the original's (no gradient through the shortcut) and traces correctly.
    """

    def __init__(self, planes: int, stride: int, spatial_dims: int = 2) -> None:
        super().__init__()
        self.planes, self.stride, self.spatial_dims = planes, stride, spatial_dims
        pool = nn.AvgPool2d if spatial_dims == 2 else nn.AvgPool3d if spatial_dims == 3 else nn.AvgPool1d
        self.pool = pool(kernel_size=1, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(x).detach()
        shape = list(out.shape)
        shape[1] = self.planes - shape[1]
        zeros = torch.zeros(shape, dtype=out.dtype, device=out.device)
        return torch.cat([out, zeros], dim=1)


def exportable(network: nn.Module) -> nn.Module:
    """Replace MONAI's partial-function ResNet shortcuts by ``ZeroPadShortcut`` (in place); returns ``network``.

    The state_dict and the outputs are unchanged (the shortcut has no parameters); afterwards
    ``torch.jit.trace`` gives a model that is correct for any input and ``torch.jit.script`` works. A no-op for
    EfficientNet backbones and for ResNets with "type B" (convolution) shortcuts.
    """
    for module in network.modules():
        down = getattr(module, "downsample", None)
        if isinstance(down, functools.partial) and getattr(down.func, "__name__", "") == "_downsample_basic_block":
            kw = down.keywords
            module.downsample = ZeroPadShortcut(kw["planes"], kw["stride"], kw.get("spatial_dims", 2))
    return network
