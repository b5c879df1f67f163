"""InternVL's vision-to-language MLP (``mlp1``): LayerNorm → Linear → GELU → Linear."""

from __future__ import annotations

import torch
from torch import nn

from lrc.constraints import PositiveInt
from lrc.registry import PROJECTORS


@PROJECTORS.register("mlp")
class MLPProjector(nn.Module):
    """Maps compressed visual tokens ``[..., in_dim]`` to LLM embeddings ``[..., out_dim]``.

    Both dims come from the builder (compressor output, LLM hidden size). ``hidden_dim`` defaults to
    ``out_dim`` as in InternVL2.5.

    Args:
        hidden_dim: width of the hidden layer (LayerNorm → Linear → GELU → Linear); null: the LLM's hidden size.
        layer_norm: start with a LayerNorm over the compressed tokens, as InternVL2.5's ``mlp1``.
    """

    def __init__(self, in_dim: PositiveInt, out_dim: PositiveInt, hidden_dim: PositiveInt | None = None,
                 layer_norm: bool = True):
        super().__init__()
        hidden_dim = hidden_dim or out_dim
        self.norm = nn.LayerNorm(in_dim) if layer_norm else nn.Identity()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, out_dim)
        self.out_dim = out_dim

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(tokens))))
