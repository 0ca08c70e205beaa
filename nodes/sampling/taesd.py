"""TAESD live previews: a tiny decoder from a latent to a picture, far better than latent2rgb.

Used when the server runs with ``--preview-method taesd`` (or ``auto``) and a TAESD decoder
is in ``models/vae_approx/`` (``taesd_decoder.safetensors`` or ``.pth`` for SD1.x/SD2.x
latents, ``taesdxl_decoder.*`` for SDXL), as ComfyUI does; nothing is ever downloaded.

The network is TAESD's published decoder (Ollin Boer Bohan's "Tiny AutoEncoder for Stable
Diffusion"): a soft clamp, a 3x3 convolution to 64 channels, then three stages of three
residual blocks each followed by a 2x upsample and a bias-free convolution, one more block
and a convolution to RGB. Its layers are numbered as in the published files (a flat
sequence), so their weights load by name. It takes the latent in the UNet's (scaled) space,
which is what a sampler's ``denoised`` is, and gives RGB in [0, 1].
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch
from PIL import Image
from torch import nn

log = logging.getLogger("latentgraph.previews")

CHANNELS = 64
DECODER_FILES = {"sd1": "taesd_decoder", "sd2": "taesd_decoder", "sdxl": "taesdxl_decoder"}
WEIGHT_SUFFIXES = (".safetensors", ".pth")


def _conv(n_in: int, n_out: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, bias=bias)


class _SoftClamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class _Block(nn.Module):
    """Three 3x3 convolutions with ReLUs between them, added to the input, then a ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(channels, channels), nn.ReLU(), _conv(channels, channels), nn.ReLU(),
                                  _conv(channels, channels))
        self.skip = nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.conv(x) + self.skip(x))


def tiny_decoder(latent_channels: int = 4) -> nn.Sequential:
    layers: list[nn.Module] = [_SoftClamp(), _conv(latent_channels, CHANNELS), nn.ReLU()]
    for _ in range(3):
        layers += [_Block(CHANNELS), _Block(CHANNELS), _Block(CHANNELS), nn.Upsample(scale_factor=2),
                   _conv(CHANNELS, CHANNELS, bias=False)]
    layers += [_Block(CHANNELS), _conv(CHANNELS, 3)]
    return nn.Sequential(*layers)


def load_decoder(path: Path) -> nn.Sequential:
    """A decoder with the weights of a published TAESD decoder file (strict: every weight named)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        weights = load_file(str(path))
    else:
        weights = torch.load(str(path), map_location="cpu", weights_only=True)
    decoder = tiny_decoder(int(weights["1.weight"].shape[1]))
    decoder.load_state_dict(weights, strict=True)
    return decoder.eval().requires_grad_(False)


def find_decoders(folders: Iterable[Path]) -> dict[str, Path]:
    """The decoder file for each latent family found in the given (vae_approx) folders."""
    found: dict[str, Path] = {}
    for family, stem in DECODER_FILES.items():
        for folder in folders:
            candidates = [Path(folder) / (stem + suffix) for suffix in WEIGHT_SUFFIXES]
            path = next((c for c in candidates if c.is_file()), None)
            if path is not None:
                found[family] = path
                break
    return found


class TaesdPreviewer:
    """``latent -> PIL image`` for the families whose decoder was found; loaded on first use."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files
        self._decoders: dict[str, nn.Sequential] = {}

    def families(self) -> list[str]:
        return sorted(self.files)

    def __call__(self, latent: torch.Tensor, family: str, max_size: int | None = None) -> Image.Image:
        decoder = self._decoders.get(family)
        if decoder is None:
            decoder = self._decoders[family] = load_decoder(self.files[family])
            log.info("TAESD previews for %s latents from %s", family, self.files[family])
        if latent.ndim == 3:
            latent = latent[None]
        with torch.inference_mode():
            rgb = decoder(latent[:1].detach().float().cpu())[0].clamp(0, 1)
        array = rgb.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        image = Image.fromarray(array, mode="RGB")
        if max_size is not None and max(image.size) > max_size:
            image.thumbnail((max_size, max_size))
        return image
