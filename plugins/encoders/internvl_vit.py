"""InternViT through transformers' ``InternVLVisionModel`` (random init from a config dict, or a local
folder saved with ``save_pretrained``)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from lrc.config.schema import ATTENTION_IMPLEMENTATIONS as ATTENTION
from lrc.constraints import Fraction, Index, LocalPath, PositiveFloat, UnitInterval
from lrc.ops import pixel_shuffle
from lrc.registry import ENCODERS


@ENCODERS.register("internvl_vit")
class InternVLVisionEncoder(nn.Module):
    """Patch tokens of InternViT with the CLS token dropped, then InternVL's pixel shuffle.

    InternVL2.5 / InternVideo2.5 (paper §3.1, HiCo level 1): 448 px, patch 14 → 32×32 tokens;
    pixel shuffle 0.5 → 16×16 = 256 tokens per frame of dim 4×1024. Give either ``pretrained`` (a local
    path) or ``config`` (keyword arguments of ``transformers.InternVLVisionConfig``).

    Args:
        config: keyword arguments of ``transformers.InternVLVisionConfig`` for a randomly initialised InternViT;
            give this or ``pretrained``.
        pretrained: a local folder with an InternViT (transformers layout); give this or ``config``.
        pixel_shuffle: InternVL's pixel shuffle factor after the ViT (0.5: 32×32×1024 → 16×16×4096 at 448 px).
        select_layer: the hidden layer whose tokens are used (-1: the last; negative counts from the end).
        attn_implementation: transformers' attention kernel: ``eager``, ``sdpa`` or ``flash_attention_2`` ... (GPU
            kernels need the ``lrc[gpu]`` extra).
        mean: per-channel mean the pixels are normalised with (RGB, in [0, 1]; ImageNet's by default, as InternVL).
        std: per-channel standard deviation the pixels are normalised with (RGB).
    """

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        pretrained: LocalPath | None = None,
        pixel_shuffle: Fraction = 0.5,
        select_layer: Index = -1,
        attn_implementation: Literal[ATTENTION] = "sdpa",
        mean: tuple[UnitInterval, UnitInterval, UnitInterval] = (0.485, 0.456, 0.406),
        std: tuple[PositiveFloat, PositiveFloat, PositiveFloat] = (0.229, 0.224, 0.225),
    ):
        """Argument types, ranges and choices are the annotations' (checked by lrc.constraints before building)."""
        super().__init__()
        from transformers import InternVLVisionConfig, InternVLVisionModel

        if (config is None) == (pretrained is None):
            raise ValueError(f"internvl_vit: give exactly one of `config` (random init) or `pretrained` (a local path), got "
                             f"{'both' if config else 'neither'}. To load weights over a base config that sets `config`, "
                             "add model.encoder.config=null.")
        if pretrained is not None:
            self.vit = InternVLVisionModel.from_pretrained(pretrained, attn_implementation=attn_implementation)
        else:
            self.vit = InternVLVisionModel(InternVLVisionConfig(**config, attn_implementation=attn_implementation))
        cfg = self.vit.config
        size = cfg.image_size if isinstance(cfg.image_size, int) else cfg.image_size[0]
        patch = cfg.patch_size if isinstance(cfg.patch_size, int) else cfg.patch_size[0]
        self.image_size = size
        self.mean, self.std = tuple(mean), tuple(std)
        self.shuffle = pixel_shuffle
        self.select_layer = select_layer
        grid = size // patch
        self.num_tokens = round(grid * grid * pixel_shuffle * pixel_shuffle)
        self.out_dim = round(cfg.hidden_size / (pixel_shuffle * pixel_shuffle))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.select_layer == -1:
            hidden = self.vit(pixel_values=pixel_values).last_hidden_state
        else:
            hidden = self.vit(pixel_values=pixel_values, output_hidden_states=True).hidden_states[self.select_layer]
        tokens = hidden[:, 1:]  # drop CLS
        if self.shuffle != 1.0:
            tokens = pixel_shuffle(tokens, self.shuffle)
        return tokens
