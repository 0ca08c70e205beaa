"""VAE nodes: latents <-> images.

IMAGE is ``[B, H, W, 3]`` in 0..1 on the CPU; LATENT ``samples`` are the VAE's unscaled
latents ``[B, 4, H/8, W/8]``.
"""

from __future__ import annotations

from typing import Any

from graph import Input, Node, Output


class VAEDecode(Node):
    """Decodes latents into images."""

    category = "latent"
    samples = Input("LATENT")
    vae = Input("VAE")
    outputs = (Output("IMAGE"),)

    def execute(self, samples: dict, vae: Any) -> tuple:
        from nodes.sd.memory import on_device, vae_working_bytes

        on_device(self.context, vae.device, vae.vae, working_bytes=vae_working_bytes(samples["samples"].shape, vae.dtype))
        latents = samples["samples"].to(vae.device, vae.dtype)
        decoded = vae.vae.decode(latents, return_dict=False)[0].float().cpu()
        return (((decoded + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1),)


class VAEEncode(Node):
    """Encodes images into latents (the mean of the VAE's latent distribution).

    Images are cropped to a multiple of 8 pixels first, as the VAE downsamples by 8.
    """

    category = "latent"
    pixels = Input("IMAGE")
    vae = Input("VAE")
    outputs = (Output("LATENT"),)

    def execute(self, pixels: Any, vae: Any) -> tuple:
        from nodes.sd.memory import on_device, vae_working_bytes

        height, width = pixels.shape[1] // 8 * 8, pixels.shape[2] // 8 * 8
        on_device(self.context, vae.device, vae.vae,
                  working_bytes=vae_working_bytes((pixels.shape[0], 4, height // 8, width // 8), vae.dtype))
        images = pixels[:, :height, :width, :3].movedim(-1, 1) * 2.0 - 1.0
        posterior = vae.vae.encode(images.to(vae.device, vae.dtype), return_dict=False)[0]
        return ({"samples": posterior.mode().float().cpu()},)
