"""Attention relevance of the ViT backbones: which patches a transformer's prediction rests on, read from its
attention matrices.

Two methods, computed for a batch by ``bundle.saliency.SaliencyInferer`` (``saliency`` ``rollout`` and
``attention_gradient``):

* ``rollout`` (Abnar & Zuidema, Quantifying Attention Flow in Transformers, ACL 2020): each block's attention,
  averaged over the heads, with the residual connection as an identity of equal weight (``0.5 A + 0.5 I``),
  multiplied through the blocks, first block on the right. The same map for every class.
* ``attention_gradient`` (Chefer, Gur & Wolf, Generic Attention-model Explainability for Interpreting Bi-Modal
  and Encoder-Decoder Transformers, ICCV 2021): ``R = I``, then for each block ``R += mean_heads(relu(dS/dA * A))
  @ R``, with ``S`` the explained class logit: the attention weighted by how much the class gains from it.

The attention matrices are MONAI's ``SABlock`` softmax outputs, taken with their graph by a forward hook on the
block's ``drop_weights`` dropout (the identity in evaluation): ``SABlock(save_attn=True)`` keeps only a detached
copy (``att_mat``), whose gradient cannot be reached.

How much of a map falls inside the lungs is scored by ``bundle.evaluation.attention`` (a different "attention").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "RELEVANCE_METHODS",
    "attention_modules",
    "AttentionRecorder",
    "rollout",
    "gradient_relevance",
    "patch_relevance",
]

RELEVANCE_METHODS = ("rollout", "attention_gradient")


def attention_modules(network: nn.Module) -> list[nn.Module]:
    """The self-attention modules (MONAI ``SABlock``) of a ViT network's transformer blocks, first to last."""
    blocks = getattr(getattr(getattr(network, "encoder", None), "vit", None), "blocks", None)
    if blocks is None:
        raise ValueError(
            f"{type(network).__name__} has no transformer blocks (encoder.vit.blocks): rollout and "
            "attention_gradient explain a ViT backbone (vit_s16, vit_b16)"
        )
    modules = [block.attn for block in blocks]
    if any(getattr(m, "use_flash_attention", False) for m in modules):
        raise ValueError("the ViT computes its attention with flash attention, which never forms the matrices")
    return modules


class AttentionRecorder:
    """While active (``with``), records every block's attention (B, heads, T, T), with its graph, on each pass.

    The hooks are registered on entry and removed on exit, so the network keeps no hook (and can be copied).
    """

    def __init__(self, network: nn.Module) -> None:
        self.modules = attention_modules(network)
        self.attentions: list[torch.Tensor] = []
        self._handles: list[Any] = []

    def _record(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self.attentions.append(output)

    def __enter__(self) -> AttentionRecorder:
        self.attentions = []
        self._handles = [m.drop_weights.register_forward_hook(self._record) for m in self.modules]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def last_pass(self) -> list[torch.Tensor]:
        """The attention of the encoder's last pass, first block to last.

        With ``lungs_only`` the encoder runs twice (the full image for the lungs, then the lung-masked image for
        the class): the last pass is the class path, as for Grad-CAM's hooks.
        """
        n = len(self.modules)
        if len(self.attentions) < n:
            raise ValueError(f"recorded {len(self.attentions)} attention matrices for {n} blocks: no forward pass")
        return self.attentions[-n:]


def _identity(batch: int, tokens: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(tokens, device=like.device, dtype=torch.float32).expand(batch, tokens, tokens)


def rollout(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention rollout (B, T, T) of the blocks' attentions, each (B, heads, T, T), first block first.

    Row ``i`` is how token ``i`` of the last block's output mixes the input tokens; rows sum to 1.
    """
    eye = _identity(attentions[0].shape[0], attentions[0].shape[-1], attentions[0])
    joint = eye
    for att in attentions:
        mixed = 0.5 * att.detach().float().mean(1) + 0.5 * eye
        # a softmax's rows already sum to 1; renormalising keeps the product row-stochastic under rounding
        joint = (mixed / mixed.sum(-1, keepdim=True)) @ joint
    return joint


def gradient_relevance(attentions: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor]) -> torch.Tensor:
    """Chefer et al.'s relevance (B, T, T): ``R = I``; per block ``R += mean_heads(relu(grad * A)) @ R``.

    ``attentions`` and ``gradients`` (the class score's gradient with respect to each attention) are (B, heads,
    T, T), first block first.
    """
    relevance = _identity(attentions[0].shape[0], attentions[0].shape[-1], attentions[0]).clone()
    for att, grad in zip(attentions, gradients):
        weighted = (grad.detach().float() * att.detach().float()).clamp(min=0).mean(1)
        relevance = relevance + weighted @ relevance
    return relevance


def patch_relevance(
    relevance: torch.Tensor, prefix: int, height: int, width: int, without_self: bool = False
) -> torch.Tensor:
    """The relevance of each patch for what the classifier reads, (B, T, T) -> (B, 1, height, width).

    ``prefix`` 1 (``vit_pool`` token): the class token's row, over the patch columns. ``prefix`` 0 (``vit_pool``
    mean): there is no class token; the classifier reads the mean of the patch tokens, a linear function of them,
    so the relevance of input patch ``j`` for it is the mean over the rows ``i`` of ``R[i, j]`` (the average the
    pooling takes). ``without_self`` subtracts the identity first (for ``gradient_relevance``, whose ``R = I``
    start gives every patch the same 1/N under mean pooling: a floor that carries no evidence).
    """
    tokens = relevance.shape[-1]
    if tokens != prefix + height * width:
        raise ValueError(f"{tokens} tokens for a {height} x {width} patch grid and {prefix} class token")
    if without_self:
        relevance = relevance - torch.eye(tokens, device=relevance.device, dtype=relevance.dtype)
    row = relevance[:, 0, prefix:] if prefix else relevance.mean(1)
    return row.reshape(row.shape[0], 1, height, width)
