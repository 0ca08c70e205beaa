"""txt2img end to end (issue 3): our workflow vs a bare diffusers denoising loop, same weights.

Two checkpoints, generated once and kept under ``--work`` (default ``temp/bench``, not
committed): the tiny SD1 test model (fp32), and an SD1.5-shaped checkpoint with random
weights (the bundled SD1 configs: 860M-parameter UNet, 123M CLIP-L with the real
49408-token vocabulary, 84M VAE) written in the LDM single-file layout, fp16 on disk
(``sd15``, as most shared checkpoints are) or fp32 (``sd15_fp32``, the layout of the
original ``v1-5-pruned-emaonly`` release). Each phase runs in its own subprocess so that
its peak RSS (``VmHWM``) is its own:

  read             read the checkpoint file's bytes into memory (the floor for loading)
  load             ``load_checkpoint`` as the loader node does by default: weight matrices
                   stay in the file's dtype (zero-copy views of the memory map), the rest is
                   converted to fp32 (``nodes/models/cast_weights.py``)
  load_converting  the same with ``--convert-weights-at-load``: every tensor to fp32
  ours             the txt2img workflow through the engine (parse, validate, plan, execute
                   under ``torch.inference_mode`` with the allocator settings of the CLI and
                   server): the first run (load, encode, sample, decode, save PNG), then
                   seed-only re-runs (only KSampler, VAEDecode and SaveImage run), alternating
                   with the floor run in the same process on an fp32 copy of the weights
  ours_converting  the same with ``--convert-weights-at-load``
  diffusers        the floor, in a process of its own with glibc's default allocator: the
                   same weights converted to fp32, the same text embeddings, diffusers'
                   ``EulerDiscreteScheduler`` with the same number of UNet calls, CFG as one
                   batch of 2, then ``AutoencoderKL.decode``

The page cache is warmed by reading the file once before the phases, so every phase reads
from memory, not the disk. Everything computes on the CPU in fp32.

    PYTHONPATH=. python bench/txt2img.py [--size 256] [--steps 4] [--repeat 3] [--models tiny,sd15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPT = "a small red circle on a blue background, top left"
CFG = 5.0
SEED = 42
# SD's training schedule; diffusers' Euler with the same number of UNet calls as our euler/normal.
SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
             "beta_schedule": "scaled_linear", "prediction_type": "epsilon", "timestep_spacing": "linspace"}


# -- measuring ---------------------------------------------------------------------------

def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM) in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """This process's current resident set size (VmRSS) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> bool:
    """Resets VmHWM to the current RSS (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# -- checkpoints -------------------------------------------------------------------------

def make_checkpoints(work: Path, models: list[str]) -> dict[str, Path]:
    """Writes (once) the checkpoints named in ``models`` under ``work/checkpoints``."""
    folder = work / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in models:
        path = folder / f"bench_{name}.safetensors"
        if not path.exists():
            print(f"writing {path} (once) ...", flush=True)
            started = time.perf_counter()
            tmp = path.with_suffix(".tmp")
            _write_checkpoint(name, tmp)
            tmp.rename(path)
            print(f"  done in {time.perf_counter() - started:.0f} s, {path.stat().st_size / 2**20:.0f} MiB", flush=True)
        paths[name] = path
    return paths


def _write_checkpoint(name: str, path: Path) -> None:
    import torch

    from nodes.models.ldm_writer import save_ldm_checkpoint

    if name == "tiny":
        from tests.fixtures.tiny_models import build_tiny_models

        m = build_tiny_models("sd1", 1)
        save_ldm_checkpoint(path, "sd1", m.unet, m.vae, m.text_encoders, store_arch_config=True)
        return
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from nodes.models.family_config import bundled_configs

    cfgs = bundled_configs("sd1")
    dtype = torch.float32 if name == "sd15_fp32" else torch.float16
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(cfgs.unet).to(dtype).eval()
    vae = AutoencoderKL.from_config(cfgs.vae).to(dtype).eval()
    encoder_cfg = {k: v for k, v in cfgs.text_encoders[0].items() if k != "architectures"}
    encoder = CLIPTextModel(CLIPTextConfig(**encoder_cfg)).to(dtype).eval()
    save_ldm_checkpoint(path, "sd1", unet, vae, [encoder])


def warm_page_cache(path: Path) -> None:
    with open(path, "rb") as fh:
        while fh.read(64 << 20):
            pass


# -- phases (each in its own process) ----------------------------------------------------

def phase_read(args: argparse.Namespace) -> dict[str, Any]:
    path = Path(args.ckpt)
    started = time.perf_counter()
    buf = bytearray(path.stat().st_size)
    with open(path, "rb") as fh:
        view = memoryview(buf)
        done = 0
        while done < len(buf):
            got = fh.readinto(view[done:])
            if not got:
                break
            done += got
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "bytes": done, "peak_rss_mb": peak_rss_mb()}


def phase_load(args: argparse.Namespace, keep_file_precision: tuple[str, ...] | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    import torch

    from nodes.models.loader import PARTS, load_checkpoint

    imports = time.perf_counter() - started
    base = rss_mb()
    started = time.perf_counter()
    loaded = load_checkpoint(args.ckpt, device="cpu", dtype=torch.float32,
                             keep_file_precision=PARTS if keep_file_precision is None else keep_file_precision)
    seconds = time.perf_counter() - started
    modules = (loaded.unet, loaded.vae, *loaded.text_encoders)
    params = sum(p.numel() for m in modules for p in m.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for m in modules for p in m.parameters())
    return {"seconds": seconds, "imports_seconds": imports, "params": params, "rss_after_imports_mb": base,
            "weights_mb": weight_bytes / 2**20, "peak_rss_mb": peak_rss_mb()}


def phase_load_converting(args: argparse.Namespace) -> dict[str, Any]:
    """The load with ``--convert-weights-at-load``: every weight converted to fp32."""
    return phase_load(args, keep_file_precision=())


def diffusers_loop(unet: Any, vae: Any, latent_scale: float, context: Any, scheduler_config: dict[str, Any],
                   size: int, steps: int, seed: int) -> dict[str, float]:
    """The floor: ``steps`` UNet calls on a CFG batch of 2 (``context`` [2, 77, D], uncond
    first) with diffusers' Euler scheduler, then the VAE decode. Seconds of the loop and of all."""
    import torch
    from diffusers import EulerDiscreteScheduler

    with torch.inference_mode():
        scheduler = EulerDiscreteScheduler.from_config(scheduler_config)
        scheduler.set_timesteps(steps)
        generator = torch.Generator().manual_seed(seed)
        latents = torch.randn((1, 4, size // 8, size // 8), generator=generator) * scheduler.init_noise_sigma
        started = time.perf_counter()
        for t in scheduler.timesteps:
            x_in = scheduler.scale_model_input(torch.cat([latents, latents]), t)
            eps_uncond, eps_cond = unet(x_in, t, encoder_hidden_states=context).sample.chunk(2)
            latents = scheduler.step(eps_uncond + CFG * (eps_cond - eps_uncond), t, latents).prev_sample
        loop = time.perf_counter() - started
        image = vae.decode(latents / latent_scale).sample
        total = time.perf_counter() - started
    assert image.shape == (1, 3, size, size) and len(scheduler.timesteps) == steps
    return {"loop_seconds": loop, "seconds": total}


def _workflow(ckpt_name: str, size: int, steps: int, seed: int) -> dict[str, Any]:
    document = json.loads((ROOT / "workflows" / "txt2img_api.json").read_text())
    document["4"]["inputs"]["ckpt_name"] = ckpt_name
    document["5"]["inputs"].update(width=size, height=size, batch_size=1)
    document["6"]["inputs"]["text"] = PROMPT
    document["3"]["inputs"].update(seed=seed, steps=steps, cfg=CFG, sampler_name="euler", scheduler="normal")
    return document


def phase_ours(args: argparse.Namespace, convert_weights: bool = False) -> dict[str, Any]:
    from nodes.sd.host_memory import tune_allocator

    tune_allocator()  # as the CLI and the server do at start-up
    import torch

    import nodes
    from graph import Engine, Folders, build_registry
    from nodes.models.folders import ModelFolders
    from nodes.sd.runtime import DeviceSettings

    work = Path(args.work)
    # --convert-weights-at-load: keep_file_precision=()
    settings = DeviceSettings(device="cpu", dtype=torch.float32, keep_file_precision=() if convert_weights else None)
    runtime = nodes.make_runtime(Folders.under(work / "run"), models=ModelFolders(work), settings=settings)
    engine = Engine(build_registry("nodes", None, disable_plugins=True), runtime)
    base = rss_mb()

    def run(seed: int) -> dict[str, Any]:
        marks: list[tuple[str | None, float]] = []

        def on_event(name: str, data: dict[str, Any]) -> None:
            if name == "executing":
                marks.append((data.get("node"), time.perf_counter()))

        started = time.perf_counter()
        checked = engine.prepare(_workflow(Path(args.ckpt).name, args.size, args.steps, seed))
        assert checked.ok, checked.response()
        result = engine.execute(checked.plan, on_event=on_event)
        total = time.perf_counter() - started
        if result.status != "success":
            raise RuntimeError(f"workflow failed: {result.error}")
        per_node = {node: round(marks[i + 1][1] - t, 3) for i, (node, t) in enumerate(marks[:-1])}
        return {"seconds": total, "per_node": per_node, "executed": result.executed}

    first = run(SEED)
    first["peak_rss_mb"] = peak_rss_mb()
    resettable = reset_peak_rss()
    reruns = [run(SEED + 1)]
    rerun_peak = peak_rss_mb() if resettable else None
    # Pairs: our re-run, then the floor in this same process (so the same allocator settings and
    # machine load), alternating. The floor gets the checkpoint's weights converted to fp32, as a
    # bare diffusers program holds them, and our own text embeddings.
    from nodes.models.loader import load_checkpoint

    floor = load_checkpoint(args.ckpt, device="cpu", dtype=torch.float32, keep_file_precision=())
    cond, uncond = _cached(engine, args, "6")[0][0][0], _cached(engine, args, "7")[0][0][0]
    paired_floor = []
    for i in range(args.repeat):
        paired_floor.append(diffusers_loop(floor.unet, floor.vae, floor.vae_scale_factor, torch.cat([uncond, cond]),
                                           dict(SCHEDULER), args.size, args.steps, SEED + 1 + i))
        reruns.append(run(SEED + 2 + i))
    return {"first": first, "reruns": reruns, "rerun_peak_rss_mb": rerun_peak, "paired_floor": paired_floor,
            "rss_after_imports_mb": base}


def phase_ours_converting(args: argparse.Namespace) -> dict[str, Any]:
    """Our workflow with ``--convert-weights-at-load``."""
    return phase_ours(args, convert_weights=True)


def _cached(engine: Any, args: argparse.Namespace, node_id: str) -> Any:
    """The cached outputs of a node of the bench workflow (the handles, the conditionings)."""
    from graph.executor import _PromptRun

    checked = engine.prepare(_workflow(Path(args.ckpt).name, args.size, args.steps, SEED))
    signatures = _PromptRun(engine.executor(), checked.plan, "signatures", None, None, None)
    signatures._compute_signatures()
    return tuple(value[0] for value in engine.cache.get(signatures.signatures[node_id]).outputs)


def phase_diffusers(args: argparse.Namespace) -> dict[str, Any]:
    """The floor: a bare diffusers loop on the same weights (loaded with our loader, untimed, every
    weight converted to fp32 as diffusers' own loading does), with glibc's default allocator."""
    import torch

    from nodes.models.loader import load_checkpoint
    from nodes.models.tokenizers import bundled_clip_tokenizer

    loaded = load_checkpoint(args.ckpt, device="cpu", dtype=torch.float32, keep_file_precision=())
    tokenizer = bundled_clip_tokenizer("hf")
    reset_peak_rss()
    with torch.inference_mode():
        ids = tokenizer(["", PROMPT], padding="max_length", max_length=77, return_tensors="pt").input_ids
        context = loaded.text_encoders[0](input_ids=ids).last_hidden_state  # uncond first
    runs = [diffusers_loop(loaded.unet, loaded.vae, loaded.vae_scale_factor, context, dict(SCHEDULER),
                           args.size, args.steps, SEED + 1 + i) for i in range(args.repeat)]
    return {"runs": runs, "unet_calls": args.steps, "peak_rss_mb": peak_rss_mb()}


PHASES = {"read": phase_read, "load": phase_load, "load_converting": phase_load_converting, "ours": phase_ours,
          "ours_converting": phase_ours_converting, "diffusers": phase_diffusers}


def run_phase(name: str, ckpt: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--phase", name, "--ckpt", str(ckpt),
               "--work", str(args.work), "--size", str(args.size), "--steps", str(args.steps),
               "--repeat", str(args.repeat)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"phase {name} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return json.loads(lines[-1][len("RESULT "):])


# -- report ------------------------------------------------------------------------------

def _ours_rows(label: str, ours: dict[str, Any], floor_total: float) -> list[str]:
    med = statistics.median
    first, reruns, paired = ours["first"], ours["reruns"], ours["paired_floor"]
    rerun = med(x["seconds"] for x in reruns)
    sampler = med(x["per_node"].get("3", float("nan")) for x in reruns)
    pair_ratio = med(o["seconds"] / f["seconds"] for o, f in zip(reruns[1:], paired, strict=True))
    loop_ratio = med(o["per_node"]["3"] / f["loop_seconds"] for o, f in zip(reruns[1:], paired, strict=True))
    paired_total = med(x["seconds"] for x in paired)
    return [
        f"| {label}: first run (imports, load, encode, sample, decode, save) | {first['seconds']:.2f} | "
        f"{first['peak_rss_mb']:.0f} | |",
        f"| {label}: seed-only re-run (median of {len(reruns)}) | {rerun:.2f} | "
        f"{ours['rerun_peak_rss_mb'] or float('nan'):.0f} | **{rerun / floor_total:.3f}x bare diffusers**; "
        f"{pair_ratio:.3f}x the in-process floor |",
        f"| {label}: - of which KSampler | {sampler:.2f} | | {loop_ratio:.3f}x the in-process floor's loop |",
        f"| {label}: in-process floor, paired with the re-runs (median of {len(paired)}) | {paired_total:.2f} | | |",
    ]


def report(name: str, path: Path, r: dict[str, dict[str, Any]]) -> str:
    med = statistics.median
    read, load, load_wide, floor = r["read"], r["load"], r["load_converting"], r["diffusers"]
    floor_total = med(x["seconds"] for x in floor["runs"])
    floor_loop = med(x["loop_seconds"] for x in floor["runs"])
    lines = [
        f"### {name}: `{path.name}` ({path.stat().st_size / 2**20:.0f} MiB on disk, "
        f"{load['params'] / 1e6:.0f}M parameters)",
        "",
        "| phase | seconds | peak RSS MiB | ratio |",
        "|---|---|---|---|",
        f"| read the file's bytes (page cache warm) | {read['seconds']:.2f} | {read['peak_rss_mb']:.0f} | |",
        f"| our checkpoint load (default: matrices keep the file's dtype, {load['weights_mb']:.0f} MiB of weights) | "
        f"{load['seconds']:.2f} | {load['peak_rss_mb']:.0f} | **{load['seconds'] / read['seconds']:.2f}x read** |",
        f"| our checkpoint load, `--convert-weights-at-load` (all fp32, {load_wide['weights_mb']:.0f} MiB) | "
        f"{load_wide['seconds']:.2f} | {load_wide['peak_rss_mb']:.0f} | {load_wide['seconds'] / read['seconds']:.2f}x read |",
        f"| (imports before the load: torch, diffusers, transformers) | {load['imports_seconds']:.2f} | "
        f"{load['rss_after_imports_mb']:.0f} (after) | |",
        *_ours_rows("ours", r["ours"], floor_total),
        *_ours_rows("ours, `--convert-weights-at-load`", r["ours_converting"], floor_total),
        f"| bare diffusers: loop + decode, own process, default allocator (median of {len(floor['runs'])}) | "
        f"{floor_total:.2f} | {floor['peak_rss_mb']:.0f} | |",
        f"| - of which the loop ({floor['unet_calls']} UNet calls, CFG batch 2) | {floor_loop:.2f} | | |",
        "",
    ]
    for label, key in (("ours", "ours"), ("ours, converting", "ours_converting")):
        first, reruns, paired = r[key]["first"], r[key]["reruns"], r[key]["paired_floor"]
        lines.append(f"{label}: first run per node (s) {json.dumps(first['per_node'])}; re-runs executed "
                     f"{reruns[0]['executed']}: {[round(x['seconds'], 2) for x in reruns]} s; in-process floor "
                     f"{[round(x['seconds'], 2) for x in paired]} s.")
    lines.append(f"Bare diffusers runs: {[round(x['seconds'], 2) for x in floor['runs']]} s.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "temp" / "bench")
    parser.add_argument("--models", default="tiny,sd15",
                        help="comma-separated: tiny, sd15 (fp16 file), sd15_fp32 (fp32 file, loaded zero-copy)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="seed-only re-runs and diffusers runs")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--ckpt", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print("RESULT " + json.dumps(PHASES[args.phase](args)), flush=True)
        return
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; {args.size}x{args.size}, {args.steps} steps, euler, "
          f"cfg {CFG}", flush=True)
    paths = make_checkpoints(args.work, [m for m in args.models.split(",") if m])
    for name, path in paths.items():
        warm_page_cache(path)
        results = {}
        for phase in ("read", "load", "load_converting", "ours", "ours_converting", "diffusers"):
            print(f"[{name}] {phase} ...", flush=True)
            results[phase] = run_phase(phase, path, args)
        print(report(name, path, results), flush=True)
        print(f"(load average now {os.getloadavg()[0]:.1f})\n", flush=True)


if __name__ == "__main__":
    main()
