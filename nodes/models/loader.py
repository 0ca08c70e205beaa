"""Load checkpoints offline: single-file LDM ``.safetensors`` (or safe pickles) and diffusers folders.

Public entry points: ``load_checkpoint`` (CheckpointLoaderSimple) and ``load_vae``
(VAELoader). Nothing here touches the network: architectures come from the bundled configs
(``family_config``) or the file's own ``latentgraph.config`` metadata, tokenizers from the
bundled vocabulary.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from nodes.models import build, cast_weights
from nodes.models.bundle import LoadedCheckpoint
from nodes.models.detect import UNET, VAE, arch_config_from_metadata, describe, detect
from nodes.models.diffusers_folder import load_diffusers_folder
from nodes.models.errors import ModelLoadError, UnknownCheckpointError
from nodes.models.family_config import CONFIG_ROOT, VAE_SCALE_FACTORS, bundled_configs, resolve_configs
from nodes.models.keymap import KeyMap, KeySource, gather, with_prefix
from nodes.models.keymap_clip import hf_clip_key_map, open_clip_key_map
from nodes.models.keymap_unet import unet_key_map
from nodes.models.keymap_vae import vae_key_map
from nodes.models.side_config import sibling_config
from nodes.models.state_source import StateSource, open_state
from nodes.models.tokenizers import bundled_clip_tokenizer

# Parts of a checkpoint, as ``part_dtypes`` and ``keep_file_precision`` name them.
PARTS = ("unet", "vae", "text")


def _read_part(model: torch.nn.Module, key_map: KeyMap, source: StateSource, what: str, dtype: torch.dtype,
               keep_narrow: bool) -> torch.nn.Module:
    """Fill a meta-built ``model`` from ``source`` through ``key_map``, computing in ``dtype``;
    with ``keep_narrow``, its weight matrices keep a narrower stored dtype (``cast_weights``)."""
    narrow = cast_weights.keep_narrow_keys(model) if keep_narrow else set()
    narrow_sources = {key_map[key].key for key in narrow if key in key_map}

    def read(key: str) -> torch.Tensor:
        return source.read(key, dtype, keep_narrow=key in narrow_sources)

    try:
        state = gather(key_map, read)
    except KeyError as exc:
        raise ModelLoadError(f"{what}: the checkpoint lacks tensor {exc.args[0]!r}") from exc
    return build.fill(model, state, source.device, dtype)


def _load_vae_from(source: StateSource, config: dict, prefix: str, dtype: torch.dtype,
                   keep_narrow: bool) -> AutoencoderKL:
    vae = build.empty_vae(config)
    keys = vae.state_dict().keys()
    if prefix == "diffusers":
        key_map: KeyMap = {k: KeySource(k) for k in keys}
    else:
        key_map = with_prefix(vae_key_map(keys, config), prefix)
    return _read_part(vae, key_map, source, "VAE", dtype, keep_narrow)


def load_checkpoint(
    path: str | Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    part_dtypes: Mapping[str, torch.dtype] | None = None,
    keep_file_precision: Collection[str] = PARTS,
    prediction_type: str | None = None,
    config_root: Path = CONFIG_ROOT,
) -> LoadedCheckpoint:
    """Load a checkpoint file or diffusers folder into diffusers/transformers models.

    ``path``: a ``.safetensors`` file in the original LDM layout (SD1.x, SD2.x, SDXL base),
    a ``.ckpt``/``.pt``/``.pth`` that ``torch.load(weights_only=True)`` accepts, or a diffusers
    folder (``unet/``, ``vae/``, ``text_encoder/``...). ``device``: where every weight is
    placed (each tensor is read once, straight there). ``dtype``: the dtype the models compute
    in; ``part_dtypes`` overrides it per part (keys in ``PARTS``). The weight matrices of the
    parts in ``keep_file_precision`` stay in the file's dtype when it is narrower (an fp16
    file computing in fp32) and are cast layer by layer as they run (``cast_weights``);
    other parts are converted at load.
    ``prediction_type``: ``"epsilon"``/``"v_prediction"`` override (LDM files do not record it;
    see ``detect``). ``config_root``: where the per-family configs live (the bundled ones by
    default); used for files whose metadata carries no architecture config. Raises ``UnknownCheckpointError`` for unsupported files,
    ``UnsafeFormatError`` for refused formats, ``ModelLoadError`` for missing tensors.
    """
    path = Path(path)
    dtypes = {part: (part_dtypes or {}).get(part, dtype) for part in PARTS}
    narrow = {part: part in keep_file_precision for part in PARTS}
    if path.is_dir():
        return load_diffusers_folder(path, device=device, dtypes=dtypes, narrow=narrow,
                                     prediction_type=prediction_type)
    with open_state(path, device, dtype) as source:
        info = detect(source.shapes, source.metadata, prediction_type)
        cfgs = resolve_configs(
            info.config_name, info.arch_config, info.in_channels, info.prediction_type, config_root
        )
        if info.family == "sd2" and info.adm_channels:  # SD2.1-unCLIP: label_emb takes the image vector
            cfgs.unet.update(class_embed_type="projection", projection_class_embeddings_input_dim=info.adm_channels)

        unet = build.empty_unet(cfgs.unet)
        unet_map = with_prefix(unet_key_map(unet.state_dict().keys(), cfgs.unet), UNET)
        unet = _read_part(unet, unet_map, source, "UNet", dtypes["unet"], narrow["unet"])

        vae = _load_vae_from(source, cfgs.vae, VAE, dtypes["vae"], narrow["vae"]) if info.has_vae else None

        encoders = []
        for layout, cfg in zip(info.text_encoders, cfgs.text_encoders, strict=True):
            model = build.empty_text_encoder(cfg)
            keys = model.state_dict().keys()
            key_map = hf_clip_key_map(keys) if layout.layout == "hf" else open_clip_key_map(keys)
            encoders.append(_read_part(model, with_prefix(key_map, layout.prefix), source,
                                       f"text encoder at {layout.prefix}", dtypes["text"], narrow["text"]))

    return LoadedCheckpoint(
        family=info.family,
        unet=unet,
        vae=vae,
        text_encoders=tuple(encoders),
        tokenizers=tuple(bundled_clip_tokenizer(e.layout) for e in info.text_encoders),
        text_encoder_layouts=tuple(e.layout for e in info.text_encoders),
        prediction_type=info.prediction_type,
        scheduler_config=cfgs.scheduler,
        vae_scale_factor=float(cfgs.vae.get("scaling_factor", VAE_SCALE_FACTORS[info.family])),
        in_channels=info.in_channels,
        dtype=dtypes["unet"],
        device=torch.device(device),
        source=path,
        info=info,
    )


def _vae_layout(shapes: dict[str, tuple[int, ...]]) -> str:
    """The key prefix of the VAE in a file, or ``"diffusers"`` for diffusers-named keys."""
    if VAE + "decoder.conv_in.weight" in shapes:
        return VAE
    if "decoder.conv_in.weight" in shapes:
        return "diffusers" if any(k.startswith("decoder.up_blocks.") for k in shapes) else ""
    raise UnknownCheckpointError("no VAE found (decoder.conv_in.weight). Found: " + describe(shapes))


def load_vae(
    path: str | Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    keep_file_precision: bool = True,
    config_root: Path = CONFIG_ROOT,
) -> AutoencoderKL:
    """Load a standalone VAE file (LDM keys with or without ``first_stage_model.``, or diffusers keys).

    The architecture comes from the file's ``latentgraph.config`` metadata (its ``vae`` part)
    when present, else a diffusers ``config.json`` beside the file, else the standard SD VAE
    config (identical for SD1/SD2/SDXL; only the latent scale differs, and that belongs to
    the checkpoint: use ``LoadedCheckpoint.vae_scale_factor``, not this VAE's ``config.scaling_factor``).
    Returns an ``AutoencoderKL`` in eval mode on ``device`` computing in ``dtype``; with
    ``keep_file_precision`` its weight matrices keep the file's dtype when narrower
    (``cast_weights``).
    """
    with open_state(path, device, dtype) as source:
        layout = _vae_layout(source.shapes)
        arch = arch_config_from_metadata(source.metadata) or {}
        folder = sibling_config(Path(path), ("AutoencoderKL",))  # a diffusers vae/ folder's config.json
        if folder is not None:
            folder = {k: v for k, v in folder.items() if not k.startswith("_")}
        config = dict(arch.get("vae") or folder or bundled_configs("sd1", config_root).vae)
        return _load_vae_from(source, config, layout, dtype, keep_file_precision)
