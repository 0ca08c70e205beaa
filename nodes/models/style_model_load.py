"""STYLE_MODEL: the T2I-Adapter style adapter (``t2iadapter_style_sd14v1``), for SD1.x.

The adapter reads a CLIP vision model's last hidden state [N, T, W] (ViT-L/14: W = 1024),
appends ``num_token`` learnt style tokens, runs a few OpenCLIP-style transformer blocks,
and projects the style tokens to the text width: [N, num_token, context] (768 for SD1).
StyleModelApply appends those tokens to the prompt's. Keys, as the released file and
ComfyUI's ``StyleAdapter`` have them: ``style_embedding`` [1, num_token, W], ``ln_pre``,
``transformer_layes.N.{ln_1, attn.in_proj_*, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}``,
``ln_post``, ``proj`` [W, context]. Sizes come from the shapes; the head count (8) is
ComfyUI's, as the file does not record it. Flux Redux files (``redux_down.weight``), which
ComfyUI also loads as STYLE_MODEL, are refused by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from nodes.models.errors import ModelLoadError, UnknownCheckpointError
from nodes.models.state_source import open_state
from nodes.sd.handles import module_bytes

HEADS = 8  # ComfyUI's StyleAdapter(num_head=8)


class _Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1 x), then x + mlp(ln_2 x), QuickGELU MLP (4x)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, width * 4))
        self.mlp.add_module("c_proj", nn.Linear(width * 4, width))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        h = self.mlp.c_fc(self.ln_2(x))
        return x + self.mlp.c_proj(h * torch.sigmoid(1.702 * h))


class StyleAdapter(nn.Module):
    """CLIP vision tokens [N, T, width] -> style tokens [N, num_token, context]."""

    def __init__(self, width: int, context: int, layers: int, num_token: int, heads: int = HEADS) -> None:
        super().__init__()
        self.style_embedding = nn.Parameter(torch.zeros(1, num_token, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer_layes = nn.Sequential(*[_Block(width, heads) for _ in range(layers)])  # the file's spelling
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.zeros(width, context))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.style_embedding.shape[1]
        x = torch.cat([x, self.style_embedding.expand(x.shape[0], -1, -1).to(x.dtype)], dim=1)
        x = self.transformer_layes(self.ln_pre(x))
        return self.ln_post(x[:, -tokens:]) @ self.proj


@dataclass(frozen=True)
class StyleModelHandle:
    """STYLE_MODEL: a style adapter, kept on the CPU in float32 as ComfyUI keeps it (it runs
    once per StyleModelApply on a few hundred tokens)."""

    cache_pool: ClassVar[str] = "models"  # the output cache's pool: POST /free unloads it

    model: StyleAdapter
    source: Path | None = None
    device: torch.device = torch.device("cpu")

    @property
    def width(self) -> int:
        """The CLIP vision width it reads (the hidden size of its input tokens)."""
        return int(self.model.style_embedding.shape[-1])

    def size_bytes(self) -> int:
        return module_bytes(self.model)

    def modules(self) -> tuple[torch.nn.Module, ...]:
        return (self.model,)

    def get_cond(self, clip_vision_output: Any) -> torch.Tensor:
        """Style tokens [N, num_token, context] for a CLIP_VISION_OUTPUT's last hidden state."""
        hidden = clip_vision_output["last_hidden_state"] if isinstance(clip_vision_output, Mapping) \
            else clip_vision_output.last_hidden_state
        if hidden.shape[-1] != self.width:
            raise ValueError(f"the style model reads CLIP vision tokens {self.width} wide, the CLIP vision output "
                             f"has {hidden.shape[-1]}: use the CLIP vision model it was trained with (ViT-L/14)")
        return self.model(hidden.float().cpu())


def style_adapter_config(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, int]:
    """``StyleAdapter`` arguments read from a file's shapes; raises UnknownCheckpointError."""
    if "redux_down.weight" in shapes:
        raise UnknownCheckpointError("a Flux Redux style model: Latentgraph does not support Flux")
    if "style_embedding" not in shapes or "proj" not in shapes:
        found = ", ".join(sorted(shapes)[:5]) or "nothing"
        raise UnknownCheckpointError(f"not a T2I-Adapter style model (no style_embedding/proj; keys: {found})")
    _, tokens, width = shapes["style_embedding"]
    layers = len({k.split(".")[1] for k in shapes if k.startswith("transformer_layes.")})
    return {"width": width, "context": shapes["proj"][1], "layers": layers, "num_token": tokens}


def load_style_model(path: str | Path) -> StyleModelHandle:
    """Loads a style adapter file (.safetensors, or a plain-tensor .pth read with weights_only)."""
    path = Path(path)
    with open_state(path, "cpu", torch.float32) as source:
        try:
            config = style_adapter_config(source.shapes)
        except UnknownCheckpointError as exc:
            raise UnknownCheckpointError(f"{path.name}: {exc}") from exc
        model = StyleAdapter(**config)
        try:
            model.load_state_dict({key: source.read(key) for key in model.state_dict()})
        except KeyError as exc:
            raise ModelLoadError(f"{path.name}: the style model lacks tensor {exc.args[0]!r}") from exc
        except RuntimeError as exc:  # a shape that does not fit the others
            raise ModelLoadError(f"{path.name}: {exc}") from exc
    return StyleModelHandle(model.eval().requires_grad_(False), path)
