"""Models saved as separate files: a diffusion model (UNet) file and text-encoder files.

ComfyUI's split loaders (UNETLoader, CLIPLoader, DualCLIPLoader) read a model's parts from
one file each; the VAE comes from a VAE file (``loader.load_vae``). The parts are built
and filled by the same code as a checkpoint's (``build``, the key maps, ``loader._read_part``),
so a part loaded here is the same module, with the same weights, as the checkpoint's.

Key layouts read:

* UNet, LDM keys (``input_blocks.*``, ``middle_block.*``, ``output_blocks.*``), bare as
  ComfyUI saves a diffusion model, or under any prefix (``model.diffusion_model.`` in a
  whole checkpoint); or diffusers keys (``conv_in``, ``down_blocks.*``...), as diffusers
  writes ``unet/diffusion_pytorch_model.safetensors``.
* Text encoder, transformers keys (``text_model.embeddings...``, or ``embeddings...``
  without the ``text_model.`` level as transformers 5 saves ``CLIPTextModel``), with a
  projection's ``text_projection.weight`` beside ``text_model.``: transformers'
  ``model.safetensors`` and ComfyUI's ``clip_l``/``clip_h``/``clip_g`` files; or OpenCLIP keys
  (``token_embedding``, ``transformer.resblocks.N`` with fused q/k/v, ``text_projection``
  ``[D, P]``), as SD2.x and SDXL checkpoints hold them, under any prefix.

Family by structure, as ``detect`` does for checkpoints. UNet: SDXL has ``label_emb``
(its added-conditioning input); otherwise a linear ``proj_in`` ``[C, C]`` in the
transformer blocks is SD2.x and a 1x1 convolution ``[C, C, 1, 1]`` SD1.x. Text encoders
are one of three kinds: ``clip_l`` (OpenAI CLIP ViT-L, quick-GELU: SD1.x and SDXL's
first), ``clip_h`` (OpenCLIP ViT-H: SD2.x) and ``clip_g`` (OpenCLIP bigG with projection:
SDXL's second). A file's own config tells them apart (activation, projection); without
one, the width (768, 1024, 1280) or else the depth (12, 23-24, 32 layers) does.

Architecture, in order: the file's ``latentgraph.config`` metadata (``unet``, or
``text_encoders`` with one entry), a diffusers/transformers ``config.json`` in the file's
folder, the bundled family config. Prediction type as for checkpoints (``detect``),
with a diffusers ``../scheduler/scheduler_config.json`` counted as metadata.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTokenizer

from nodes.models import build, cast_weights
from nodes.models.build import TextEncoder
from nodes.models.detect import Shapes, _prediction, arch_config_from_metadata, describe
from nodes.models.errors import ModelLoadError, UnknownCheckpointError
from nodes.models.family_config import CONFIG_ROOT, VAE_SCALE_FACTORS, bundled_configs, resolve_configs
from nodes.models.keymap import KeyMap, KeySource, gather, with_prefix
from nodes.models.keymap_clip import open_clip_key_map
from nodes.models.keymap_unet import unet_key_map
from nodes.models.loader import _read_part
from nodes.models.side_config import sibling_config
from nodes.models.state_source import StateSource, open_state
from nodes.models.tokenizers import bundled_clip_tokenizer

ENCODER_KINDS = ("clip_l", "clip_h", "clip_g")
KIND_NAMES = {
    "clip_l": "CLIP-L (OpenAI ViT-L, the SD1.x text encoder and SDXL's first)",
    "clip_h": "OpenCLIP ViT-H (the SD2.x text encoder)",
    "clip_g": "OpenCLIP bigG (SDXL's second text encoder)",
}
# Which bundled config builds each kind when the file brings none: (config folder, encoder index).
_BUNDLED_ENCODER = {"clip_l": ("sd1", 0), "clip_h": ("sd2", 0), "clip_g": ("sdxl", 1)}
_KIND_BY_WIDTH = {768: "clip_l", 1024: "clip_h", 1280: "clip_g"}
# How each kind pads its prompts (nodes.sd.text_encode): OpenAI CLIP with <|endoftext|>, OpenCLIP with id 0.
PAD_LAYOUTS = {"clip_l": "hf", "clip_h": "open_clip", "clip_g": "open_clip"}

_HF_TOKEN = "embeddings.token_embedding.weight"
_OPEN_TOKEN = "token_embedding.weight"
_LDM_CONV_IN = "input_blocks.0.0.weight"
_DIFFUSERS_TIME = "time_embedding.linear_1.weight"
_SCALED_FP8 = re.compile(r"(^|\.)(scale_weight|weight_scale|scaled_fp8)$")


# ----------------------------------------------------------------------------- UNet


@dataclass(frozen=True)
class UnetFileInfo:
    """What detection found in a UNet file's header.

    ``layout``: ``"ldm"`` or ``"diffusers"``; ``prefix``: prepended to every key of that
    layout (``""`` for a bare file). ``in_channels``: 4, or 9 for inpainting.
    ``context_dim``: cross-attention width (768 SD1.x, 1024 SD2.x, 2048 SDXL at full size).
    ``adm_channels``: width of SDXL's ``label_emb`` input (0 when absent).
    """

    family: str
    layout: str
    prefix: str
    in_channels: int
    context_dim: int
    adm_channels: int


@dataclass
class LoadedUnet:
    """A UNet loaded from its own file, and what sampling needs to know about it.

    ``unet``: diffusers ``UNet2DConditionModel`` in eval mode, called as a checkpoint's
    (``bundle.LoadedCheckpoint``). ``scheduler_config``: a diffusers scheduler config dict.
    ``vae_scale_factor``: the family's latent scale (0.18215 SD1.x/SD2.x, 0.13025 SDXL).
    """

    unet: UNet2DConditionModel
    family: str
    prediction_type: str
    prediction_source: str
    scheduler_config: dict[str, Any]
    vae_scale_factor: float
    in_channels: int
    info: UnetFileInfo


def _prefix_of(shapes: Shapes, suffix: str) -> str | None:
    """The shortest prefix under which ``suffix`` is a key, or None."""
    found = [key[: -len(suffix)] for key in shapes if key.endswith(suffix)]
    found = [prefix for prefix in found if prefix == "" or prefix.endswith(".")]
    return min(found, key=len) if found else None


def looks_like(shapes: Shapes) -> str | None:
    """A short guess at what kind of model file this is, for error messages, or None."""
    keys = list(shapes)
    if any("zero_convs." in k or "input_hint_block." in k or "controlnet_cond_embedding." in k for k in keys):
        return "a ControlNet, not a diffusion model"
    if _prefix_of(shapes, _LDM_CONV_IN) is not None or _prefix_of(shapes, _DIFFUSERS_TIME) is not None:
        return "a diffusion model (UNet): load it with UNETLoader"
    if any(k.endswith(_OPEN_TOKEN) for k in keys):
        return "a CLIP text encoder: load it with CLIPLoader or DualCLIPLoader"
    if any(k.endswith("decoder.conv_in.weight") for k in keys):
        return "a VAE: load it with VAELoader"
    if any("lora" in k.lower() for k in keys):
        return "a LoRA: load it with LoraLoader"
    if any(".SelfAttention." in k or k.startswith("shared.") for k in keys):
        return "a T5 text encoder, which SD1.x, SD2.x and SDXL do not use"
    if any(k.split(".")[0] in ("double_blocks", "joint_blocks", "single_blocks", "blocks") for k in keys):
        return "a transformer diffusion model (Flux, SD3, ...), a family Latentgraph does not support"
    return None


def _what(shapes: Shapes) -> str:
    hint = looks_like(shapes)
    return (f"it looks like {hint}. " if hint else "") + "Found: " + describe(shapes)


def detect_unet(shapes: Shapes, name: str = "the file") -> UnetFileInfo:
    """Detect an SD1.x / SD2.x / SDXL UNet in a file's key -> shape map.

    Raises ``UnknownCheckpointError`` naming ``name``, what was expected and what the file
    looks like instead.
    """
    ldm = _prefix_of(shapes, _LDM_CONV_IN)
    diffusers = _prefix_of(shapes, _DIFFUSERS_TIME) if ldm is None else None
    if ldm is None and (diffusers is None or diffusers + "conv_in.weight" not in shapes):
        raise UnknownCheckpointError(
            f"{name}: expected an SD1.x, SD2.x or SDXL diffusion model (UNet: LDM input_blocks.* or "
            f"diffusers down_blocks.* keys); {_what(shapes)}")
    layout, prefix = ("ldm", ldm) if ldm is not None else ("diffusers", diffusers)
    decoder = prefix + ("output_blocks." if layout == "ldm" else "up_blocks.")
    if not any(k.startswith(decoder) for k in shapes):  # a ControlNet is a UNet's first half
        raise UnknownCheckpointError(
            f"{name}: expected an SD1.x, SD2.x or SDXL diffusion model (UNet), but it has no "
            f"{decoder}* blocks; {_what(shapes)}")
    if any(_SCALED_FP8.search(k) for k in shapes):
        raise UnknownCheckpointError(f"{name}: scaled fp8 weights (per-tensor scale keys) are not supported; "
                                     "use an fp16, bf16 or fp32 file")
    ours = {k: v for k, v in shapes.items() if k.startswith(prefix)}
    conv_in = prefix + (_LDM_CONV_IN if layout == "ldm" else "conv_in.weight")
    adm_key = prefix + ("label_emb.0.0.weight" if layout == "ldm" else "add_embedding.linear_1.weight")
    to_k = sorted(k for k in ours if k.endswith("attn2.to_k.weight"))
    proj_in = sorted(k for k in ours if k.endswith(".proj_in.weight"))
    if not to_k or not proj_in:
        raise UnknownCheckpointError(f"{name}: a UNet without cross-attention, not an SD1.x/SD2.x/SDXL one. "
                                     "Found: " + describe(shapes))
    adm = int(shapes[adm_key][1]) if adm_key in shapes else 0
    context_dim = int(shapes[to_k[0]][1])
    in_channels = int(shapes[conv_in][1])
    if in_channels not in (4, 9):
        raise UnknownCheckpointError(
            f"{name}: a UNet taking {in_channels} input channels (an upscaler or edit model?); supported are "
            "4 (text to image) and 9 (inpainting)")
    if adm:
        # Only full-size files show these: SDXL base is 2816 wide into label_emb with 2048-wide context.
        if adm == 2560 and context_dim == 1280:
            raise UnknownCheckpointError(f"{name}: an SDXL refiner UNet; only the SDXL base is supported")
        if context_dim in (768, 1024):
            raise UnknownCheckpointError(
                f"{name}: an SD1.x/SD2.x UNet with a class-conditioning input (unCLIP?), which is not supported")
        family = "sdxl"
    else:
        # SD2.x's transformer blocks project in and out with linear layers, SD1.x's with 1x1 convolutions.
        family = "sd2" if len(shapes[proj_in[0]]) == 2 else "sd1"
    return UnetFileInfo(family, layout, prefix, in_channels, context_dim, adm)


def side_files(path: Path) -> list[Path]:
    """Files besides the weights that loading ``path`` reads when present (configs), for
    the loader nodes' fingerprints: editing one must load again."""
    path = Path(path)
    return [p for p in (path.parent / "config.json", path.parent.parent / "scheduler" / "scheduler_config.json")
            if p.is_file()]


def _diffusers_scheduler(path: Path) -> dict[str, Any] | None:
    """``../scheduler/scheduler_config.json`` of a UNet inside a diffusers folder, if any."""
    config_path = Path(path).parent.parent / "scheduler" / "scheduler_config.json"
    if Path(path).parent.name != "unet" or not config_path.is_file():
        return None
    config = json.loads(config_path.read_text(encoding="utf-8"))
    return config if isinstance(config, dict) else None


def _read_with_storage(model: torch.nn.Module, key_map: KeyMap, source: StateSource, what: str,
                       dtype: torch.dtype, storage: torch.dtype) -> torch.nn.Module:
    """As ``loader._read_part``, with every weight matrix stored in ``storage`` (e.g. fp8),
    cast layer by layer to ``dtype`` as it runs (``cast_weights``)."""
    narrow = {key_map[key].key for key in cast_weights.keep_narrow_keys(model) if key in key_map}

    def read(key: str) -> torch.Tensor:
        return source.read(key, storage if key in narrow else dtype)

    try:
        state = gather(key_map, read)
    except KeyError as exc:
        raise ModelLoadError(f"{what}: the file lacks tensor {exc.args[0]!r}") from exc
    return build.fill(model, state, source.device, dtype)


def load_unet_file(
    path: str | Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    keep_file_precision: bool = True,
    weight_storage: torch.dtype | None = None,
    prediction_type: str | None = None,
    config_root: Path = CONFIG_ROOT,
) -> LoadedUnet:
    """Load an SD1.x / SD2.x / SDXL UNet from its own file (see the module docstring).

    ``dtype``: the compute dtype; with ``keep_file_precision`` the weight matrices keep a
    narrower stored dtype (``cast_weights``). ``weight_storage`` (e.g.
    ``torch.float8_e4m3fn``) stores every weight matrix in that dtype instead, cast per
    layer as it runs (ComfyUI's ``weight_dtype``). ``prediction_type`` overrides the file's.
    Raises ``UnknownCheckpointError`` for a file that is not such a UNet.
    """
    path = Path(path)
    with open_state(path, device, dtype) as source:
        info = detect_unet(source.shapes, path.name)
        arch = dict(arch_config_from_metadata(source.metadata) or {})
        if "unet" not in arch:
            found = sibling_config(path, ("UNet2DConditionModel",))
            if found is not None:
                arch["unet"] = {k: v for k, v in found.items() if not k.startswith("_")}
        scheduler = _diffusers_scheduler(path)
        if scheduler is not None and "scheduler" not in arch:
            arch["scheduler"] = scheduler
        override = prediction_type
        if override is None and not any(k in source.metadata for k in
                                        ("latentgraph.prediction_type", "modelspec.prediction_type",
                                         "prediction_type")) and not arch.get("prediction_type"):
            override = (scheduler or {}).get("prediction_type")
        pred, pred_source = _prediction(info.family, source.shapes, source.metadata, arch, override)
        if override is not None and prediction_type is None:
            pred_source = "diffusers scheduler_config.json"
        config_name = "sd2_v" if info.family == "sd2" and pred == "v_prediction" else info.family
        arch.pop("text_encoders", None)  # a whole checkpoint's: not needed for its UNet
        cfgs = resolve_configs(config_name, arch, info.in_channels, pred, config_root)
        unet = build.empty_unet(cfgs.unet)
        keys = unet.state_dict().keys()
        if info.layout == "ldm":
            key_map = with_prefix(unet_key_map(keys, cfgs.unet), info.prefix)
        else:
            key_map = {k: KeySource(info.prefix + k) for k in keys}
        what = f"{path.name} (UNet)"
        if weight_storage is not None:
            unet = _read_with_storage(unet, key_map, source, what, dtype, weight_storage)
        else:
            unet = _read_part(unet, key_map, source, what, dtype, keep_file_precision)
    return LoadedUnet(
        unet=unet, family=info.family, prediction_type=pred, prediction_source=pred_source,
        scheduler_config=cfgs.scheduler,
        vae_scale_factor=float((arch.get("vae") or {}).get("scaling_factor", VAE_SCALE_FACTORS[info.family])),
        in_channels=info.in_channels, info=info,
    )


# ----------------------------------------------------------------------------- text encoders


@dataclass(frozen=True)
class TextEncoderFileInfo:
    """One text encoder found in a file.

    ``layout``: ``"hf"`` (transformers keys; ``prefix`` is the level holding
    ``embeddings.``) or ``"open_clip"`` (``prefix`` holds ``token_embedding``).
    ``kind``: one of ``ENCODER_KINDS``; ``kind_source`` says how it was told.
    ``config``: the transformers config the file brought (metadata or ``config.json``), if any.
    """

    kind: str
    kind_source: str
    layout: str
    prefix: str
    width: int
    layers: int
    config: dict[str, Any] | None


def _encoders_in(shapes: Shapes) -> list[tuple[str, str]]:
    """Every ``(layout, prefix)`` of a CLIP text encoder in the file."""
    found = []
    for key in shapes:
        if key.endswith(_HF_TOKEN):
            found.append(("hf", key[: -len(_HF_TOKEN)]))
        elif key.endswith(_OPEN_TOKEN):
            prefix = key[: -len(_OPEN_TOKEN)]
            if prefix + "transformer.resblocks.0.attn.in_proj_weight" in shapes:
                found.append(("open_clip", prefix))
    return sorted(found)


def _depth(shapes: Shapes, layout: str, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + (r"encoder\.layers\.(\d+)\." if layout == "hf"
                                              else r"transformer\.resblocks\.(\d+)\."))
    numbers = {int(m.group(1)) for key in shapes if (m := pattern.match(key))}
    return max(numbers) + 1 if numbers else 0


def _kind_from_config(config: Mapping[str, Any]) -> str:
    # transformers' CLIPTextConfig defaults to quick_gelu, and saved configs may leave defaults out.
    if config.get("hidden_act", "quick_gelu") == "quick_gelu":
        return "clip_l"
    return "clip_g" if build.text_encoder_has_projection(config) else "clip_h"


def _kind_from_structure(width: int, layers: int) -> str | None:
    if width in _KIND_BY_WIDTH:
        return _KIND_BY_WIDTH[width]
    return {12: "clip_l", 23: "clip_h", 24: "clip_h", 32: "clip_g"}.get(layers)


def detect_text_encoder(
    shapes: Shapes,
    metadata: Mapping[str, str] | None = None,
    folder_config: Mapping[str, Any] | None = None,
    name: str = "the file",
) -> TextEncoderFileInfo:
    """Detect the one CLIP text encoder in a file (see the module docstring).

    ``folder_config``: a transformers config found beside the file (``sibling_config``).
    Raises ``UnknownCheckpointError`` naming ``name`` when the file holds no CLIP text
    encoder, several, or one whose kind cannot be told.
    """
    encoders = _encoders_in(shapes)
    if not encoders:
        raise UnknownCheckpointError(
            f"{name}: expected a CLIP text encoder (transformers text_model.* or OpenCLIP "
            f"transformer.resblocks.* keys); {_what(shapes)}")
    if len(encoders) > 1:
        raise UnknownCheckpointError(
            f"{name}: holds {len(encoders)} text encoders (at {', '.join(p or '(top)' for _, p in encoders)}); "
            "expected one per file")
    layout, prefix = encoders[0]
    token = prefix + (_HF_TOKEN if layout == "hf" else _OPEN_TOKEN)
    width, layers = int(shapes[token][1]), _depth(shapes, layout, prefix)
    arch = arch_config_from_metadata(metadata or {}) or {}
    configs = arch.get("text_encoders") or []
    config: dict[str, Any] | None = None
    if len(configs) == 1:
        config, source = dict(configs[0]), "metadata config"
    elif folder_config is not None:
        config, source = {k: v for k, v in folder_config.items() if not k.startswith("_")}, "config.json"
    if config is not None:
        kind, kind_source = _kind_from_config(config), source
    else:
        kind, kind_source = _kind_from_structure(width, layers), f"width {width}, {layers} layers"
        if kind is None:
            raise UnknownCheckpointError(
                f"{name}: a CLIP text encoder of width {width} with {layers} layers, which is none of "
                "CLIP-L (768), OpenCLIP ViT-H (1024) or bigG (1280); a config.json beside it would say")
    return TextEncoderFileInfo(kind, kind_source, layout, prefix, width, layers, config)


def _hf_key_map(target_keys: Sequence[str], prefix: str) -> KeyMap:
    """transformers model keys -> keys of an HF-layout file whose ``embeddings.`` level is
    at ``prefix``; a projection's ``text_projection`` sits one level up, beside ``text_model.``."""
    root = prefix.removesuffix("text_model.")
    out: KeyMap = {}
    for key in target_keys:
        bare = key.removeprefix("text_model.")
        out[key] = KeySource((root if bare.startswith("text_projection.") else prefix) + bare)
    return out


def load_text_encoder(
    path: str | Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    keep_file_precision: bool = True,
    config_root: Path = CONFIG_ROOT,
) -> tuple[TextEncoder, TextEncoderFileInfo]:
    """Load the CLIP text encoder of a file; returns it (eval mode) and what detection found.

    The model is a ``CLIPTextModel``, or ``CLIPTextModelWithProjection`` for bigG, as the
    checkpoint loader builds it: input ids ``[B, 77]``, hidden states ``[B, 77, width]``.
    """
    path = Path(path)
    with open_state(path, device, dtype) as source:
        folder_config = sibling_config(path, ("CLIPTextModel", "CLIPTextModelWithProjection"))
        info = detect_text_encoder(source.shapes, source.metadata, folder_config, path.name)
        if info.config is not None:
            config = info.config
        else:
            folder, index = _BUNDLED_ENCODER[info.kind]
            config = bundled_configs(folder, config_root).text_encoders[index]
        model = build.empty_text_encoder(config)
        keys = list(model.state_dict().keys())
        key_map = (_hf_key_map(keys, info.prefix) if info.layout == "hf"
                   else with_prefix(open_clip_key_map(keys), info.prefix))
        model = _read_part(model, key_map, source, f"{path.name} (text encoder)", dtype, keep_file_precision)
    return model, info


@dataclass
class LoadedTextEncoders:
    """Text encoders for one family, in the order the family uses them (SDXL: CLIP-L, bigG),
    with their tokenizers and padding layouts (``"hf"``/``"open_clip"``), as a checkpoint's."""

    family: str
    encoders: tuple[TextEncoder, ...]
    tokenizers: tuple[CLIPTokenizer, ...]
    layouts: tuple[str, ...]
    infos: tuple[TextEncoderFileInfo, ...]


def _describe_kinds(paths: Sequence[Path], infos: Sequence[TextEncoderFileInfo]) -> str:
    return "; ".join(f"{p.name} is {KIND_NAMES[i.kind]} (by {i.kind_source})" for p, i in zip(paths, infos, strict=True))


def load_text_encoders(
    paths: Sequence[str | Path],
    family: str,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    keep_file_precision: bool = True,
    config_root: Path = CONFIG_ROOT,
) -> LoadedTextEncoders:
    """Load the text encoder files of one family.

    ``family``: ``"stable_diffusion"`` (one file: a CLIP-L gives SD1.x, an OpenCLIP ViT-H
    SD2.x) or ``"sdxl"`` (two files, a CLIP-L and a bigG, in either order). Raises
    ``UnknownCheckpointError`` naming each file and what it is when they do not fit.
    """
    paths = [Path(p) for p in paths]
    loaded = [load_text_encoder(p, device=device, dtype=dtype, keep_file_precision=keep_file_precision,
                                config_root=config_root) for p in paths]
    infos = [info for _, info in loaded]
    kinds = [info.kind for info in infos]
    if family == "stable_diffusion":
        if len(paths) != 1 or kinds[0] == "clip_g":
            raise UnknownCheckpointError(
                f"type stable_diffusion expects one SD1.x CLIP-L or SD2.x OpenCLIP ViT-H text encoder; "
                f"{_describe_kinds(paths, infos)}"
                + ("; load SDXL's pair with DualCLIPLoader, type sdxl" if "clip_g" in kinds else ""))
        family_name, order = ("sd1" if kinds[0] == "clip_l" else "sd2"), [0]
    elif family == "sdxl":
        if sorted(kinds) != ["clip_g", "clip_l"]:
            raise UnknownCheckpointError(
                f"type sdxl expects SDXL's two text encoders, a CLIP-L and an OpenCLIP bigG; "
                f"{_describe_kinds(paths, infos)}")
        family_name, order = "sdxl", [kinds.index("clip_l"), kinds.index("clip_g")]
    else:
        raise ValueError(f"unknown text encoder family {family!r}")
    layouts = tuple(PAD_LAYOUTS[kinds[i]] for i in order)
    return LoadedTextEncoders(
        family=family_name,
        encoders=tuple(loaded[i][0] for i in order),
        tokenizers=tuple(bundled_clip_tokenizer(layout) for layout in layouts),
        layouts=layouts,
        infos=tuple(infos[i] for i in order),
    )
