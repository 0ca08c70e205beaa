"""Same workflow, same image? A whole SD1.5-layout checkpoint run by us and by ComfyUI itself.

A developer tool, not part of ``make test`` (it needs a ComfyUI source checkout and a
throwaway Python environment with ComfyUI's requirements). Where ``compare_comfy_house.py``
hands only the sampling step to ComfyUI, this runs ComfyUI's own nodes end to end --
CheckpointLoaderSimple, CLIPTextEncode, EmptyLatentImage, KSampler / KSamplerAdvanced,
VAEDecode, SaveImage, i.e. ComfyUI's UNet, CLIP, VAE, sigmas and noise -- on the same
API-format documents our engine runs, and compares the decoded images.

The checkpoint: ComfyUI detects SD1.5 by the UNet's shape (model_channels 320, context_dim
768), so the house model cannot be used. ``--make-checkpoint`` writes random weights in the
SD1.5 layout (our bundled SD1 configs, ``nodes/models/configs/sd1``; seed 0; fp16 on disk)
if the file is missing; write it outside the repository. ``--layout small`` keeps what
ComfyUI's detection reads but gives the UNet two levels of one block each (a tenth of the
cost per step). A random UNet could drive the image into saturation and make any two images
look alike: each case reports the image's spread, its share of saturated values and how far
ComfyUI's image is from its euler image (``--unet-init-scale`` scales the UNet's weights
down if needed; at diffusers' default initialisation, 1.0, the images are informative).

The default command makes the checkpoint, runs ComfyUI's side in its own environment as a
subprocess alongside ours, and compares::

    .venv/bin/python tools/compare_comfy_checkpoint.py --make-checkpoint --layout small \\
        --checkpoint /tmp/sd15_small.safetensors --comfy-checkout /tmp/comfyui \\
        --comfy-python /tmp/comfy-venv/bin/python --work /tmp/cmp

``--side ours|comfy|compare`` runs one part; ``--resume`` skips the cases whose images the
work folder holds (a long run can be split into groups with ``--samplers``, ``--schedulers``,
``--batches``, ``--advanced``). On a busy 2-core machine ``OMP_NUM_THREADS=1`` is much faster.

Reported per case: the largest difference of the decoded float images (in 1/255), their
PSNR, and the largest difference of the saved 8-bit files (ours round, ComfyUI's SaveImage
truncates, so up to 1/255 there is expected). Exit status 1 when a decoded image differs by
more than 1/255.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
POSITIVE = "a photograph of a red fox in the snow, detailed"
NEGATIVE = "blurry"
# euler (no noise after the start) is the reference the noise-using samplers' images are set against
SAMPLERS = ("euler", "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde", "dpmpp_2m_sde_heun", "er_sde", "sa_solver",
            "sa_solver_pece", "seeds_2", "seeds_3", "euler_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde_gpu",
            "dpmpp_2m_sde_gpu", "dpmpp_3m_sde_gpu", "dpmpp_2m_sde_heun_gpu")


# -- the cases: API-format documents both engines run ------------------------------------------

def case_document(case: dict[str, Any], ckpt_name: str) -> dict[str, Any]:
    """The API-format workflow of one case; node "9" is the SaveImage, "8" the VAEDecode.

    ``case``: sampler, scheduler, batch, mode -- ``ksampler`` (KSampler, denoise 1),
    ``adv_split`` (KSamplerAdvanced steps 0-2 returning its leftover noise, then a second one
    with add_noise disabled for steps 2-4) or ``adv_start`` (one KSamplerAdvanced from step 1,
    noise added).
    """
    size, steps, cfg, seed = case["size"], case["steps"], case["cfg"], case["seed"]
    doc: dict[str, Any] = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": POSITIVE, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size,
                                                           "batch_size": case["batch"]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": case["name"], "images": ["8", 0]}},
    }
    common = {"model": ["1", 0], "cfg": cfg, "sampler_name": case["sampler"], "scheduler": case["scheduler"],
              "positive": ["2", 0], "negative": ["3", 0]}
    mode = case["mode"]
    if mode == "ksampler":
        doc["5"] = {"class_type": "KSampler", "inputs": common | {
            "seed": seed, "steps": steps, "latent_image": ["4", 0], "denoise": 1.0}}
    elif mode == "adv_split":
        half = steps // 2
        doc["6"] = {"class_type": "KSamplerAdvanced", "inputs": common | {
            "add_noise": "enable", "noise_seed": seed, "steps": steps, "start_at_step": 0, "end_at_step": half,
            "return_with_leftover_noise": "enable", "latent_image": ["4", 0]}}
        doc["5"] = {"class_type": "KSamplerAdvanced", "inputs": common | {
            "add_noise": "disable", "noise_seed": seed, "steps": steps, "start_at_step": half,
            "end_at_step": 10000, "return_with_leftover_noise": "disable", "latent_image": ["6", 0]}}
    elif mode == "adv_start":
        doc["5"] = {"class_type": "KSamplerAdvanced", "inputs": common | {
            "add_noise": "enable", "noise_seed": seed, "steps": steps, "start_at_step": 1, "end_at_step": 10000,
            "return_with_leftover_noise": "disable", "latent_image": ["4", 0]}}
    else:
        raise ValueError(f"unknown mode {mode!r}")
    return doc


def make_cases(samplers: list[str], schedulers: list[str], batches: list[int], advanced: list[str],
               *, size: int, steps: int, cfg: float, seed: int) -> list[dict[str, Any]]:
    """Every sampler x scheduler x batch with KSampler, then the KSamplerAdvanced cases
    (``advanced``: ``sampler:mode`` with karras, for every batch)."""
    base = {"size": size, "steps": steps, "cfg": cfg, "seed": seed}
    cases = []
    for batch in batches:  # batch outermost: a run stopped early still covers every sampler
        for scheduler in schedulers:
            for sampler in samplers:
                cases.append(base | {"sampler": sampler, "scheduler": scheduler, "batch": batch, "mode": "ksampler"})
    for item in advanced:
        sampler, mode = item.split(":")
        for batch in batches:
            cases.append(base | {"sampler": sampler, "scheduler": "karras", "batch": batch, "mode": mode})
    for case in cases:
        case["name"] = f"{case['mode']}_{case['sampler']}_{case['scheduler']}_b{case['batch']}"
    return cases


def _order(doc: dict[str, Any]) -> list[str]:
    """Node ids in an order where every input's source comes first."""
    done: list[str] = []

    def visit(node_id: str) -> None:
        if node_id in done:
            return
        for value in doc[node_id]["inputs"].values():
            if isinstance(value, list):
                visit(value[0])
        done.append(node_id)

    for node_id in sorted(doc):
        visit(node_id)
    return done


# -- ComfyUI's side (runs in ComfyUI's environment; imports nothing from this repository) -------

def comfy_side(checkout: Path, checkpoint: Path, cases: list[dict[str, Any]], out: Path, resume: bool = False) -> None:
    """Run every case through ComfyUI's own node classes on the CPU; ``out``: one ``.npz``
    per case holding ``decoded`` (float32 ``[B, H, W, 3]``, VAEDecode's output) and ``saved``
    (uint8, the PNGs SaveImage wrote)."""
    import torch
    from PIL import Image

    sys.argv = [sys.argv[0], "--cpu"]  # ComfyUI's own flag: everything on the CPU, fp32 compute
    sys.path.insert(0, str(checkout))
    import comfy.options

    comfy.options.enable_args_parsing()
    import folder_paths

    comfy_nodes = importlib.import_module("nodes")  # ComfyUI's nodes.py: its checkout is first on sys.path

    folder_paths.add_model_folder_path("checkpoints", str(checkpoint.parent))
    folder_paths.set_output_directory(str(out / "comfy_output"))
    decoded: list[Any] = []
    vae_decode = comfy_nodes.VAEDecode.decode

    def keep_decoded(self: Any, vae: Any, samples: Any) -> Any:
        result = vae_decode(self, vae, samples)
        decoded.append(result[0])
        return result

    comfy_nodes.VAEDecode.decode = keep_decoded
    with torch.inference_mode():
        for case in cases:
            if resume and (out / f"comfy_{case['name']}.npz").exists():
                continue
            started = time.perf_counter()
            doc = case_document(case, checkpoint.name)
            values: dict[str, tuple] = {}
            saved: list[np.ndarray] = []
            decoded.clear()
            for node_id in _order(doc):
                node = doc[node_id]
                cls = comfy_nodes.NODE_CLASS_MAPPINGS[node["class_type"]]
                kwargs = {k: values[v[0]][v[1]] if isinstance(v, list) else v for k, v in node["inputs"].items()}
                result = getattr(cls(), cls.FUNCTION)(**kwargs)
                if isinstance(result, dict):  # an output node: {"ui": {"images": [...]}}
                    for entry in result["ui"]["images"]:
                        path = Path(folder_paths.get_output_directory()) / entry["subfolder"] / entry["filename"]
                        saved.append(np.asarray(Image.open(path).convert("RGB")))
                    result = result.get("result", ())
                values[node_id] = result
            np.savez(out / f"comfy_{case['name']}.npz", decoded=decoded[0].float().numpy(), saved=np.stack(saved))
            print(f"comfy {case['name']}: {time.perf_counter() - started:.1f} s", flush=True)


# -- our side -----------------------------------------------------------------------------------

def ours_side(checkpoint: Path, cases: list[dict[str, Any]], out: Path, resume: bool = False) -> None:
    """Run every case through our engine, as the CLI does; same ``.npz`` files as ComfyUI's side."""
    import torch  # noqa: F401  (imported before our nodes, as the CLI's runtime does)
    from PIL import Image

    sys.path.insert(0, str(ROOT))
    from graph import Engine, Folders, build_registry
    from nodes import make_runtime
    from nodes.models.folders import ModelFolders
    from nodes.vae import VAEDecode

    folders = Folders.under(out / "ours_work")
    models = ModelFolders(out / "ours_work" / "models", {"checkpoints": [checkpoint.resolve().parent]})
    engine = Engine(build_registry("nodes", None), make_runtime(folders, models=models))
    decoded: list[Any] = []
    execute = VAEDecode.execute

    def keep_decoded(self: Any, samples: dict, vae: Any) -> tuple:
        result = execute(self, samples, vae)
        decoded.append(result[0])
        return result

    VAEDecode.execute = keep_decoded  # type: ignore[method-assign]
    try:
        for case in cases:
            if resume and (out / f"ours_{case['name']}.npz").exists():
                continue
            started = time.perf_counter()
            decoded.clear()
            checked = engine.prepare(case_document(case, checkpoint.name))
            if not checked.ok:
                raise RuntimeError(f"{case['name']}: workflow invalid: {checked.response()}")
            result = engine.execute(checked.plan)
            if result.status != "success":
                raise RuntimeError(f"{case['name']}: generation failed: {result.error}")
            saved = [np.asarray(Image.open(folders.output / e["subfolder"] / e["filename"]).convert("RGB"))
                     for e in result.outputs["9"]["images"]]
            np.savez(out / f"ours_{case['name']}.npz", decoded=decoded[0].float().numpy(), saved=np.stack(saved))
            print(f"ours  {case['name']}: {time.perf_counter() - started:.1f} s", flush=True)
    finally:
        VAEDecode.execute = execute  # type: ignore[method-assign]


# -- the checkpoint -------------------------------------------------------------------------------

def make_checkpoint(path: Path, unet_init_scale: float = 1.0, layout: str = "full") -> None:
    """Random SD1.5-layout weights (bundled SD1 configs, seed 0), fp16, LDM single-file layout;
    the UNet's floating-point tensors multiplied by ``unet_init_scale``.

    ``layout="small"``: the UNet keeps what ComfyUI's SD1.5 detection looks at (320 model
    channels, 768-wide context, 8 heads) but has two levels (320, 640) of one block each, so a
    step costs a fraction of SD1.5's; its architecture goes into the ``latentgraph.config``
    metadata for our loader (ComfyUI reads the shapes).
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    sys.path.insert(0, str(ROOT))
    from nodes.models.family_config import bundled_configs
    from nodes.models.ldm_writer import save_ldm_checkpoint

    cfgs = bundled_configs("sd1")
    unet_cfg = dict(cfgs.unet)
    if layout == "small":
        unet_cfg |= {"block_out_channels": [320, 640], "layers_per_block": 1,
                     "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                     "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]}
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(unet_cfg).eval()
    with torch.no_grad():
        for tensor in unet.parameters():
            tensor.mul_(unet_init_scale)
    vae = AutoencoderKL.from_config(cfgs.vae).eval()
    encoder_cfg = {k: v for k, v in cfgs.text_encoders[0].items() if k != "architectures"}
    encoder = CLIPTextModel(CLIPTextConfig(**encoder_cfg)).eval()
    half = torch.float16
    tmp = path.with_suffix(".tmp")
    save_ldm_checkpoint(tmp, "sd1", unet.to(half), vae.to(half), [encoder.to(half)],
                        store_arch_config=layout == "small")
    tmp.rename(path)


# -- comparing ---------------------------------------------------------------------------------

def psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    """Peak signal-to-noise ratio in dB (inf where equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def compare(cases: list[dict[str, Any]], out: Path) -> tuple[list[str], float, int]:
    """Markdown table rows, the largest decoded difference (in 1/255) and the number of cases
    compared (a case that either side has not run yet is left out).

    "vs euler" is how far ComfyUI's image is from its euler image of the same scheduler and
    batch: what the sampler and its noise change, the scale the ours-vs-ComfyUI difference is
    to be read against.
    """
    rows = ["| sampler | scheduler | batch | mode | decoded max diff (/255) | decoded PSNR (dB) | "
            "8-bit file max diff (/255) | ComfyUI image vs euler, max diff (/255) | image std (/255) | saturated |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    worst, compared = 0.0, 0
    for case in cases:
        ours_path, theirs_path = out / f"ours_{case['name']}.npz", out / f"comfy_{case['name']}.npz"
        if not (ours_path.exists() and theirs_path.exists()):
            continue
        ours, theirs = np.load(ours_path), np.load(theirs_path)
        a, b = ours["decoded"], theirs["decoded"]
        if a.shape != b.shape:
            raise AssertionError(f"{case['name']}: shapes {a.shape} vs {b.shape}")
        compared += 1
        diff = float(np.abs(a - b).max()) * 255
        worst = max(worst, diff)
        files = int(np.abs(ours["saved"].astype(int) - theirs["saved"].astype(int)).max())
        saturated = float(((b <= 0) | (b >= 1)).mean())
        reference = out / f"comfy_ksampler_euler_{case['scheduler']}_b{case['batch']}.npz"
        vs_euler = (f"{float(np.abs(np.load(reference)['decoded'] - b).max()) * 255:.1f}"
                    if reference.exists() and case["sampler"] != "euler" else "-")
        rows.append(f"| {case['sampler']} | {case['scheduler']} | {case['batch']} | {case['mode']} | {diff:.4f} | "
                    f"{psnr(a, b, 1.0):.1f} | {files} | {vs_euler} | {float(b.std()) * 255:.1f} | {saturated:.1%} |")
    return rows, worst, compared


def summary(cases: list[dict[str, Any]], out: Path) -> list[str]:
    """One row per sampler and mode, one column per scheduler and batch: "max diff (/255) /
    PSNR (dB)" of the decoded images, "-" where not run."""
    columns = sorted({(c["scheduler"], c["batch"]) for c in cases}, key=lambda k: (k[0] != "karras", k[1]))
    rows: dict[tuple[str, str], dict[tuple[str, int], str]] = {}
    for case in cases:
        ours_path, theirs_path = out / f"ours_{case['name']}.npz", out / f"comfy_{case['name']}.npz"
        cell = "-"
        if ours_path.exists() and theirs_path.exists():
            a, b = np.load(ours_path)["decoded"], np.load(theirs_path)["decoded"]
            cell = f"{float(np.abs(a - b).max()) * 255:.4f} / {psnr(a, b, 1.0):.0f}"
        rows.setdefault((case["sampler"], case["mode"]), {})[(case["scheduler"], case["batch"])] = cell
    lines = ["| sampler | mode | " + " | ".join(f"{s} b{b}" for s, b in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for (sampler, mode), cells in rows.items():
        lines.append(f"| {sampler} | {mode} | " + " | ".join(cells.get(k, "-") for k in columns) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="an SD1.5-layout .safetensors (outside the repo)")
    parser.add_argument("--make-checkpoint", action="store_true", help="write random weights there first if missing")
    parser.add_argument("--unet-init-scale", type=float, default=1.0)
    parser.add_argument("--layout", choices=["full", "small"], default="full",
                        help="small: SD1.5 widths (320, context 768) but two levels of one block each")
    parser.add_argument("--comfy-checkout", type=Path, help="a ComfyUI source checkout (throwaway directory)")
    parser.add_argument("--comfy-python", type=Path, help="a Python with ComfyUI's requirements installed")
    parser.add_argument("--work", type=Path, required=True, help="folder for the images of both sides")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--schedulers", default="karras,normal")
    parser.add_argument("--batches", default="1,3")
    parser.add_argument("--advanced", default="dpmpp_2m_sde:adv_split,dpmpp_sde:adv_split,dpmpp_2m_sde:adv_start",
                        help="KSamplerAdvanced cases, sampler:mode (adv_split, adv_start); empty for none")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--cfg", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--resume", action="store_true", help="skip the cases whose images --work already holds")
    parser.add_argument("--side", choices=["all", "ours", "comfy", "compare"], default="all")
    args = parser.parse_args(argv)
    cases = make_cases(args.samplers.split(","), args.schedulers.split(","),
                       [int(b) for b in args.batches.split(",")], [a for a in args.advanced.split(",") if a],
                       size=args.size, steps=args.steps, cfg=args.cfg, seed=args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    checkpoint = args.checkpoint.resolve()
    if args.make_checkpoint and not checkpoint.exists():
        make_checkpoint(checkpoint, args.unet_init_scale, args.layout)
    if args.side == "comfy":
        comfy_side(args.comfy_checkout.resolve(), checkpoint, cases, args.work, args.resume)
        return 0
    comfy = None
    if args.side == "all":  # ComfyUI's side in its own environment, alongside ours
        if args.comfy_checkout is None or args.comfy_python is None:
            parser.error("--comfy-checkout and --comfy-python are needed to run ComfyUI's side")
        forwarded = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--make-checkpoint"]
        comfy = subprocess.Popen([str(args.comfy_python), str(Path(__file__).resolve()), *forwarded, "--side", "comfy"])
    if args.side in ("all", "ours"):
        ours_side(checkpoint, cases, args.work, args.resume)
    if comfy is not None and comfy.wait() != 0:
        raise SystemExit(f"ComfyUI's side failed (exit status {comfy.returncode})")
    if args.side in ("all", "compare"):
        rows, worst, compared = compare(cases, args.work)
        print(json.dumps({"cases": len(cases), "compared": compared, "worst_decoded_diff_255": worst}))
        print("\n".join(rows))
        print("\nDecoded images, max diff (/255) / PSNR (dB):\n" + "\n".join(summary(cases, args.work)))
        return 0 if worst <= 1.0 else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
