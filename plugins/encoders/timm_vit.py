"""A timm Vision Transformer as the video encoder (random init from sizes, or a local checkpoint)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lrc.constraints import Fraction, LocalPath, NonNegativeInt, PositiveFloat, PositiveInt, UnitInterval
from lrc.weights.checkpoints import load_state_dict_file
from lrc.ops import pixel_shuffle
from lrc.registry import ENCODERS


@ENCODERS.register("timm_vit")
class TimmViTEncoder(nn.Module):
    """Per-frame patch tokens from a timm ViT, prefix (CLS/register) tokens dropped.

    Output ``[N, M, out_dim]`` with ``M = (image_size / patch_size)**2 * pixel_shuffle**2``.
    ``checkpoint`` is a local ``.safetensors`` or ``.pt``/``.bin`` state dict for exactly this
    architecture; it is read with ``weights_only`` so it cannot execute code.

    Args:
        image_size: frame side in pixels the ViT takes (frames are resized to it).
        patch_size: patch side in pixels; ``(image_size / patch_size)²`` patch tokens per frame.
        embed_dim: token width.
        depth: transformer blocks (0: the patch embedding only).
        num_heads: attention heads; must divide ``embed_dim``.
        mlp_ratio: the blocks' MLP width as a multiple of ``embed_dim``.
        pixel_shuffle: InternVL's pixel shuffle of the patch grid after the blocks (1.0: none; 0.5 folds 2×2
            neighbours into one token of 4× the width).
        checkpoint: a local ``.safetensors`` or ``.pt``/``.bin`` state dict for exactly this architecture, read
            with ``weights_only`` (null: random init).
        mean: per-channel mean the pixels are normalised with (RGB, in [0, 1]).
        std: per-channel standard deviation the pixels are normalised with (RGB).
    """

    def __init__(
        self,
        image_size: PositiveInt = 224,
        patch_size: PositiveInt = 16,
        embed_dim: PositiveInt = 768,
        depth: NonNegativeInt = 12,
        num_heads: PositiveInt = 12,
        mlp_ratio: PositiveFloat = 4.0,
        pixel_shuffle: Fraction = 1.0,
        checkpoint: LocalPath | None = None,
        mean: tuple[UnitInterval, UnitInterval, UnitInterval] = (0.485, 0.456, 0.406),
        std: tuple[PositiveFloat, PositiveFloat, PositiveFloat] = (0.229, 0.224, 0.225),
    ):
        """Argument types and ranges are the annotations' (checked by lrc.constraints before building)."""
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        if image_size % patch_size:
            raise ValueError(f"timm_vit: image_size {image_size} must be a multiple of patch_size {patch_size}")
        self.vit = VisionTransformer(
            img_size=image_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth,
            num_heads=num_heads, mlp_ratio=mlp_ratio, num_classes=0, global_pool="",
        )
        if checkpoint:
            self.vit.load_state_dict(load_state_dict_file(Path(checkpoint)))
        self.image_size = image_size
        self.mean, self.std = tuple(mean), tuple(std)
        # the repeated blocks: FSDP's wrapping units and what activation checkpointing recomputes
        # (lrc/parallel/distributed.py; transformers models say the same with _no_split_modules)
        self.block_classes = (type(self.vit.blocks[0]),) if depth else ()
        self.shuffle = pixel_shuffle
        grid = image_size // patch_size
        self.num_tokens = round(grid * grid * pixel_shuffle * pixel_shuffle)
        self.out_dim = round(embed_dim / (pixel_shuffle * pixel_shuffle))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        tokens = self.vit.forward_features(pixel_values)[:, self.vit.num_prefix_tokens:]
        if self.shuffle != 1.0:
            tokens = pixel_shuffle(tokens, self.shuffle)
        return tokens
