"""Command-line flags for where and in which precision models run, shared by the CLI and
the server. Names follow ComfyUI's ``cli_args``; ``device_settings(args)`` turns them into
the runtime's ``DeviceSettings`` (``nodes.sd.runtime``), plain strings and numbers, so
parsing them never imports torch.

- ``--cpu``: run on the CPU even when a GPU is present (``force_cpu``).
- ``--force-fp32`` / ``--force-fp16``: the dtype of every model part (``dtype``).
  Default: fp16 on a GPU, fp32 on the CPU.
- ``--fp32-unet`` / ``--bf16-unet`` / ``--fp16-unet``: the UNet's dtype (``unet_dtype``).
- ``--fp32-vae`` / ``--fp16-vae`` / ``--bf16-vae``: the VAE's dtype (``vae_dtype``).
- ``--fp32-text-enc`` / ``--fp16-text-enc`` / ``--bf16-text-enc``: the text encoders' dtype
  (``text_enc_dtype``).
- ``--convert-weights-at-load``: store every weight in its part's compute dtype (an fp16
  file running in fp32 takes twice the memory and runs faster on the CPU: bench/RESULTS.md)
  instead of keeping weight matrices in the file's narrower dtype and casting them layer
  by layer (``keep_file_precision = ()``; see ``nodes.models.cast_weights``).
- ``--reserve-vram GB``: VRAM kept free for other programs and working memory when models
  share a GPU (``reserve_vram``, in bytes).
"""

from __future__ import annotations

import argparse

from nodes.sd.runtime import DeviceSettings

# (flag suffix, DeviceSettings field, what it sets) of the per-part dtype flags, e.g. --bf16-text-enc.
PART_FLAGS = (
    ("unet", "unet_dtype", "the diffusion model (UNet)"),
    ("vae", "vae_dtype", "the VAE"),
    ("text-enc", "text_enc_dtype", "the text encoder(s)"),
)


def add_runtime_flags(parser: argparse.ArgumentParser, *, cpu: bool = True) -> None:
    """Adds the device and precision flags (``cpu=False`` when the parser already has ``--cpu``)."""
    if cpu:
        parser.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is present")
    every = parser.add_mutually_exclusive_group()
    every.add_argument("--force-fp32", dest="dtype", action="store_const", const="fp32",
                       help="every model in fp32 (default on the CPU)")
    every.add_argument("--force-fp16", dest="dtype", action="store_const", const="fp16",
                       help="every model in fp16 (default on a GPU)")
    for flag, dest, what in PART_FLAGS:
        group = parser.add_mutually_exclusive_group()
        for name in ("fp32", "fp16", "bf16"):
            group.add_argument(f"--{name}-{flag}", dest=dest, action="store_const", const=name,
                               help=f"run {what} in {name}")
    parser.add_argument("--convert-weights-at-load", action="store_true",
                        help="store weights in the compute dtype (fp16 files on the CPU: 2x the memory, "
                             "faster UNet calls) instead of the file's dtype cast layer by layer")
    parser.add_argument("--reserve-vram", type=float, default=None, metavar="GB",
                        help="VRAM in GB to keep free when moving models to the GPU (default 0.5)")


def device_settings(args: argparse.Namespace) -> DeviceSettings:
    """The settings the flags make (unset flags keep the defaults)."""
    reserve = getattr(args, "reserve_vram", None)
    if reserve is not None and not reserve >= 0:
        raise SystemExit(f"error: --reserve-vram must be a size in GB >= 0, got {reserve}")
    return DeviceSettings(
        force_cpu=bool(getattr(args, "cpu", False)),
        dtype=getattr(args, "dtype", None),
        **{dest: getattr(args, dest, None) for _, dest, _ in PART_FLAGS},
        keep_file_precision=() if getattr(args, "convert_weights_at_load", False) else None,
        reserve_vram=int(reserve * 1024**3) if reserve is not None else None,
    )
