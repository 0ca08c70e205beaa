"""Load a diffusers-format folder (``unet/``, ``vae/``, ``text_encoder/``, ``text_encoder_2/``...).

Each part is built from its own ``config.json`` on the meta device and filled from its
``.safetensors`` weights (single file, ``.fp16`` variant, or sharded with an index), read
memory-mapped straight to the target dtype/device — the same path as single files, and
no hub access. Tokenizer folders are optional: the bundled tokenizer stands in.

Family: ``text_encoder_2/`` plus a UNet with ``addition_embed_type == "text_time"`` is SDXL;
otherwise the text encoder's activation tells OpenAI CLIP (``quick_gelu``: SD1.x) from
OpenCLIP (``gelu``: SD2.x). Prediction type: the override, else
``scheduler/scheduler_config.json``, else the family default.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from nodes.models import build, cast_weights
from nodes.models.bundle import LoadedCheckpoint
from nodes.models.detect import normalize_prediction_type
from nodes.models.errors import ModelLoadError, UnknownCheckpointError
from nodes.models.family_config import VAE_SCALE_FACTORS, bundled_configs
from nodes.models.state_source import open_state
from nodes.models.tokenizers import folder_clip_tokenizer


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def weight_files(part: Path) -> list[Path]:
    """The weight files of one part folder: the shards of an index, else one ``.safetensors``
    (the plain one before an ``.fp16`` variant), else a ``.bin`` (read with weights_only)."""
    indexes = sorted(part.glob("*.safetensors.index.json"))
    if indexes:
        names = sorted(set(_read_json(indexes[0])["weight_map"].values()))
        return [part / n for n in names]
    files = sorted(part.glob("*.safetensors"), key=lambda p: (".fp16." in p.name, p.name))
    if not files:
        files = sorted(part.glob("*.bin"))
    if not files:
        raise ModelLoadError(f"{part}: no .safetensors weights found")
    return files[:1]


def _fill_part(
    model: torch.nn.Module,
    part: Path,
    device: torch.device | str,
    dtype: torch.dtype,
    keep_narrow: bool,
    candidates: Callable[[str], list[str]],
) -> torch.nn.Module:
    narrow = cast_weights.keep_narrow_keys(model) if keep_narrow else set()
    with contextlib.ExitStack() as stack:
        sources = [stack.enter_context(open_state(f, device, dtype)) for f in weight_files(part)]
        owner = {k: s for s in sources for k in s.shapes}
        state = {}
        for key in model.state_dict():
            found = next((c for c in candidates(key) if c in owner), None)
            if found is None:
                raise ModelLoadError(f"{part}: weights lack {key!r}")
            state[key] = owner[found].read(found, dtype, keep_narrow=key in narrow)
        return build.fill(model, state, device, dtype)


def _same_key(key: str) -> list[str]:
    return [key]


def _clip_keys(key: str) -> list[str]:
    # transformers 4 saved ``text_model.*``; transformers 5 models have no such level.
    bare = key[len("text_model.") :] if key.startswith("text_model.") else key
    return [key, "text_model." + bare, bare]


def _family(root: Path, unet_config: dict[str, Any], encoder_config: dict[str, Any]) -> str:
    if (root / "text_encoder_2").is_dir() and unet_config.get("addition_embed_type") == "text_time":
        return "sdxl"
    act = encoder_config.get("hidden_act")
    if act == "quick_gelu":
        return "sd1"
    if act == "gelu":
        return "sd2"
    raise UnknownCheckpointError(f"{root}: cannot tell the family (text encoder hidden_act {act!r})")


def load_diffusers_folder(
    root: str | Path,
    *,
    device: torch.device | str = "cpu",
    dtypes: Mapping[str, torch.dtype],
    narrow: Mapping[str, bool],
    prediction_type: str | None = None,
) -> LoadedCheckpoint:
    """Load a diffusers folder; result as ``loader.load_checkpoint``. ``dtypes``/``narrow``:
    each part's (``"unet"``, ``"vae"``, ``"text"``) compute dtype and whether its weight
    matrices may keep the files' narrower dtype."""
    root = Path(root)
    for needed in ("unet", "text_encoder"):
        if not (root / needed / "config.json").is_file():
            raise UnknownCheckpointError(f"{root}: not a diffusers folder (no {needed}/config.json)")
    unet_cfg = _read_json(root / "unet" / "config.json")
    enc_dirs = [d for d in ("text_encoder", "text_encoder_2") if (root / d / "config.json").is_file()]
    enc_cfgs = [_read_json(root / d / "config.json") for d in enc_dirs]
    family = _family(root, unet_cfg, enc_cfgs[0])
    layouts = {"sd1": ("hf",), "sd2": ("open_clip",), "sdxl": ("hf", "open_clip")}[family]
    if len(enc_cfgs) != len(layouts):
        raise UnknownCheckpointError(f"{root}: {family} needs {len(layouts)} text encoders, found {enc_dirs}")

    sched_path = root / "scheduler" / "scheduler_config.json"
    default_name = "sd2_v" if family == "sd2" else family
    scheduler = (
        _read_json(sched_path) if sched_path.is_file() else dict(bundled_configs(default_name).scheduler)
    )
    pred = normalize_prediction_type(
        prediction_type
        or scheduler.get("prediction_type")
        or bundled_configs(default_name).scheduler["prediction_type"]
    )
    scheduler["prediction_type"] = pred

    unet = _fill_part(build.empty_unet(unet_cfg), root / "unet", device, dtypes["unet"], narrow["unet"],
                      _same_key)
    vae = None
    vae_scale = VAE_SCALE_FACTORS[family]
    if (root / "vae" / "config.json").is_file():
        vae_cfg = _read_json(root / "vae" / "config.json")
        vae = _fill_part(build.empty_vae(vae_cfg), root / "vae", device, dtypes["vae"], narrow["vae"], _same_key)
        vae_scale = float(vae_cfg.get("scaling_factor", vae_scale))
    encoders = tuple(
        _fill_part(build.empty_text_encoder(cfg), root / d, device, dtypes["text"], narrow["text"], _clip_keys)
        for d, cfg in zip(enc_dirs, enc_cfgs, strict=True)
    )
    tok_dirs = ("tokenizer", "tokenizer_2")
    tokenizers = tuple(
        folder_clip_tokenizer(root / t, lay) for t, lay in zip(tok_dirs, layouts, strict=False)
    )
    return LoadedCheckpoint(
        family=family,
        unet=unet,
        vae=vae,
        text_encoders=encoders,
        tokenizers=tokenizers,
        text_encoder_layouts=layouts,
        prediction_type=pred,
        scheduler_config=scheduler,
        vae_scale_factor=vae_scale,
        in_channels=int(unet_cfg.get("in_channels", 4)),
        dtype=dtypes["unet"],
        device=torch.device(device),
        source=root,
    )
