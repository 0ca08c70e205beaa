"""SDXL on the CPU: what keeping fp16 weight matrices saves, against converting at load.

An SDXL-shaped checkpoint with random weights (the bundled SDXL configs: 2.6B-parameter
UNet, CLIP-L and OpenCLIP bigG text encoders, VAE; LDM single-file layout, fp16 on disk as
SDXL checkpoints are shared) is written once under ``--work`` (default ``temp/bench``, not
committed). Then, each mode in its own process (so each peak RSS is its own), the engine's
loader and one generation's model calls: load, encode a prompt with both text encoders,
``--calls`` UNet calls on a CFG batch of 2 at ``--size``, one VAE decode. Modes: ``narrow``
(the default: weight matrices stay fp16 and are cast per layer) and ``converting``
(``--convert-weights-at-load``: every weight fp32, as a bare diffusers program holds them,
the baseline). Both compute in fp32 and give the same numbers; the bench checks that the
UNet outputs are identical.

    PYTHONPATH=. python bench/sdxl_memory.py [--size 256] [--calls 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.txt2img import peak_rss_mb, rss_mb, warm_page_cache  # noqa: E402


def write_checkpoint(path: Path) -> None:
    """Random SDXL-shaped fp16 weights, made in fp16 straight away (no fp32 copy of 10 GB)."""
    import torch

    from nodes.models import build
    from nodes.models.family_config import bundled_configs
    from nodes.models.ldm_writer import save_ldm_checkpoint

    cfgs = bundled_configs("sdxl")
    models = [build.empty_unet(cfgs.unet), build.empty_vae(cfgs.vae),
              *(build.empty_text_encoder(cfg) for cfg in cfgs.text_encoders)]
    generator = torch.Generator().manual_seed(0)
    for model in models:
        model.to(torch.float16).to_empty(device="cpu")
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("bias"):
                    param.zero_()
                elif param.dim() == 1:  # norm scales
                    param.fill_(1.0)
                else:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
            for name, buf in model.named_buffers():
                if name.endswith("position_ids"):
                    buf.copy_(torch.arange(buf.shape[-1]).expand_as(buf))
    unet, vae, *encoders = models
    save_ldm_checkpoint(path, "sdxl", unet, vae, encoders)


def run_mode(args: argparse.Namespace) -> dict[str, Any]:
    from nodes.sd.host_memory import tune_allocator

    tune_allocator()
    import torch

    from nodes.models.loader import PARTS, load_checkpoint

    base = rss_mb()
    started = time.perf_counter()
    ckpt = load_checkpoint(args.ckpt, dtype=torch.float32, keep_file_precision=PARTS if args.mode == "narrow" else ())
    load = time.perf_counter() - started
    weights = sum(p.numel() * p.element_size() for m in (ckpt.unet, ckpt.vae, *ckpt.text_encoders)
                  for p in m.parameters())
    generator = torch.Generator().manual_seed(1)
    latent = torch.randn(2, 4, args.size // 8, args.size // 8, generator=generator)
    with torch.inference_mode():
        ids = ckpt.tokenizers[0](["", "a red circle"], padding="max_length", max_length=77,
                                 return_tensors="pt").input_ids
        started = time.perf_counter()
        states = [encoder(input_ids=ids, output_hidden_states=True) for encoder in ckpt.text_encoders]
        encode = time.perf_counter() - started
        context = torch.cat([s.hidden_states[-2] for s in states], dim=-1)
        pooled = states[1].text_embeds
        time_ids = torch.tensor([[args.size, args.size, 0, 0, args.size, args.size]] * 2, dtype=torch.float32)
        calls, out = [], None
        for _ in range(args.calls):
            started = time.perf_counter()
            out = ckpt.unet(latent, torch.tensor([500, 500]), encoder_hidden_states=context,
                            added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
            calls.append(time.perf_counter() - started)
        started = time.perf_counter()
        ckpt.vae.decode(out[:1] / ckpt.vae_scale_factor)
        decode = time.perf_counter() - started
    digest = float(out.double().abs().sum())
    return {"load_s": load, "weights_mib": weights / 2**20, "encode_s": encode, "unet_calls_s": calls,
            "decode_s": decode, "peak_rss_mib": peak_rss_mb(), "rss_before_mib": base, "unet_abs_sum": digest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "temp" / "bench")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--mode", choices=("narrow", "converting"), help=argparse.SUPPRESS)
    parser.add_argument("--ckpt", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print("RESULT " + json.dumps(run_mode(args)), flush=True)
        return
    path = args.work / "checkpoints" / "bench_sdxl.safetensors"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"writing {path} (once) ...", flush=True)
        started = time.perf_counter()
        write_checkpoint(path.with_suffix(".tmp"))
        path.with_suffix(".tmp").rename(path)
        print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)
    warm_page_cache(path)
    results = {}
    for mode in ("narrow", "converting"):
        command = [sys.executable, str(Path(__file__).resolve()), "--mode", mode, "--ckpt", str(path),
                   "--size", str(args.size), "--calls", str(args.calls)]
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            raise SystemExit(f"mode {mode} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        results[mode] = json.loads(lines[-1][len("RESULT "):])
    narrow, wide = results["narrow"], results["converting"]
    call = {mode: min(r["unet_calls_s"]) for mode, r in results.items()}
    print(f"SDXL-shaped fp16 file, {path.stat().st_size / 2**20:.0f} MiB; {args.size}x{args.size}, "
          f"CFG batch 2, CPU fp32 compute, load average {os.getloadavg()[0]:.1f}\n")
    print("| | narrow (default) | converting (baseline) | narrow / converting |")
    print("|---|---|---|---|")
    print(f"| weights held, MiB | {narrow['weights_mib']:.0f} | {wide['weights_mib']:.0f} | "
          f"{narrow['weights_mib'] / wide['weights_mib']:.2f} |")
    print(f"| peak RSS, MiB | {narrow['peak_rss_mib']:.0f} | {wide['peak_rss_mib']:.0f} | "
          f"{narrow['peak_rss_mib'] / wide['peak_rss_mib']:.2f} |")
    print(f"| load, s | {narrow['load_s']:.2f} | {wide['load_s']:.2f} | {narrow['load_s'] / wide['load_s']:.2f} |")
    print(f"| encode (both text encoders), s | {narrow['encode_s']:.2f} | {wide['encode_s']:.2f} | "
          f"{narrow['encode_s'] / wide['encode_s']:.2f} |")
    print(f"| UNet call, best of {args.calls}, s | {call['narrow']:.2f} | {call['converting']:.2f} | "
          f"{call['narrow'] / call['converting']:.2f} |")
    print(f"| VAE decode, s | {narrow['decode_s']:.2f} | {wide['decode_s']:.2f} | "
          f"{narrow['decode_s'] / wide['decode_s']:.2f} |")
    same = narrow["unet_abs_sum"] == wide["unet_abs_sum"]
    print(f"\nUNet outputs identical in both modes: {same} (sum |eps| {narrow['unet_abs_sum']:.6f} / "
          f"{wide['unet_abs_sum']:.6f})")


if __name__ == "__main__":
    main()
