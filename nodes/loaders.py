"""Loader nodes: checkpoints, VAEs and LoRAs from the model folders, fully offline.

Loading happens in ``nodes.models`` (family detection, key conversion, bundled configs and
tokenizers). A loaded checkpoint stays in the output cache across prompts, keyed by the
file's size and mtime, so a changed file is loaded again; POST /free drops it. LoRAs are
applied as patched views that share the cached checkpoint's weights (``nodes.lora``).
"""

from __future__ import annotations

import threading
from typing import Any

from graph import Input, Node, Output
from nodes.models.folders import model_choices, models_of
from nodes.sd.runtime import runtime_of


def file_state(context: Any, kind: str, name: str) -> list:
    path = models_of(context.runtime).resolve(kind, name)
    stat = path.stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def runtime_device(context: Any) -> tuple[Any, Any]:
    """The (device, dtype) models other than a checkpoint's parts load to (e.g. upscale
    models): the runtime's settings, or the best available; the per-part settings
    (``--bf16-unet``, ``--fp16-text-enc``...) do not apply."""
    runtime = runtime_of(context)
    device = runtime.load_device()
    return device, runtime.dtype(device)


def runtime_dtypes(context: Any) -> tuple[Any, dict[str, Any]]:
    """The device models load to and the dtype of each part (``Runtime.part_dtypes``)."""
    runtime = runtime_of(context)
    device = runtime.load_device()
    return device, runtime.part_dtypes(device)


def keep_file_precision(context: Any) -> tuple[str, ...]:
    """The checkpoint parts kept in the file's precision (``Runtime.keep_file_precision``)."""
    return runtime_of(context).keep_file_precision()


class CheckpointLoaderSimple(Node):
    """Loads a Stable Diffusion checkpoint (SD1.x, SD2.x, SDXL; single file or diffusers folder)."""

    category = "loaders"
    ckpt_name = Input(choices=model_choices("checkpoints"), tooltip="file in models/checkpoints")
    outputs = (Output("MODEL"), Output("CLIP"), Output("VAE"))

    @classmethod
    def fingerprint(cls, context: Any, ckpt_name: str) -> list:
        return file_state(context, "checkpoints", ckpt_name)

    def execute(self, ckpt_name: str) -> tuple:
        from nodes.models.loader import load_checkpoint
        from nodes.sampling import DiscreteSchedule, scaled_linear_betas
        from nodes.sd.handles import ClipHandle, ModelHandle, VaeHandle

        device, dtypes = runtime_dtypes(self.context)
        path = models_of(self.context.runtime).resolve("checkpoints", ckpt_name)
        loaded = load_checkpoint(path, device=device, part_dtypes=dtypes,
                                 keep_file_precision=keep_file_precision(self.context))
        config = loaded.scheduler_config
        schedule = DiscreteSchedule.from_betas(scaled_linear_betas(
            config.get("num_train_timesteps", 1000), config.get("beta_start", 0.00085), config.get("beta_end", 0.012)))
        model = ModelHandle(
            unet=loaded.unet, family=loaded.family,
            prediction="v" if loaded.prediction_type == "v_prediction" else "eps",
            schedule=schedule, latent_scale=loaded.vae_scale_factor, in_channels=loaded.in_channels,
            device=loaded.device, dtype=dtypes["unet"], source=path,
        )
        clip = ClipHandle(encoders=loaded.text_encoders, tokenizers=loaded.tokenizers,
                          layouts=loaded.text_encoder_layouts, family=loaded.family, device=loaded.device)
        vae = VaeHandle(vae=loaded.vae, family=loaded.family, device=loaded.device,
                        dtype=dtypes["vae"]) if loaded.vae is not None else None
        return (model, clip, vae)


class VAELoader(Node):
    """Loads a standalone VAE file from models/vae."""

    category = "loaders"
    vae_name = Input(choices=model_choices("vae"))
    outputs = (Output("VAE"),)

    @classmethod
    def fingerprint(cls, context: Any, vae_name: str) -> list:
        return file_state(context, "vae", vae_name)

    def execute(self, vae_name: str) -> tuple:
        from nodes.models.loader import load_vae
        from nodes.sd.handles import VaeHandle

        device, dtypes = runtime_dtypes(self.context)
        dtype = dtypes["vae"]
        vae = load_vae(models_of(self.context.runtime).resolve("vae", vae_name), device=device, dtype=dtype,
                       keep_file_precision="vae" in keep_file_precision(self.context))
        family = "sdxl" if abs(float(vae.config.get("scaling_factor", 0.18215)) - 0.13025) < 1e-6 else "sd1"
        return (VaeHandle(vae=vae, family=family, device=device, dtype=dtype),)


STRENGTH = {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}
_last_lora: dict[str, Any] = {}  # one LoRA file kept in memory: changing a strength re-reads nothing
_last_lora_lock = threading.Lock()


def _read_lora(context: Any, lora_name: str) -> tuple[dict, str]:
    from nodes.lora.file import read_lora_file

    state_key = file_state(context, "loras", lora_name)
    with _last_lora_lock:
        if _last_lora.get("key") != state_key:
            _last_lora.clear()
            _last_lora.update(key=state_key, state=read_lora_file(state_key[0]))
        return _last_lora["state"], lora_name


class LoraLoader(Node):
    """Applies a LoRA to the diffusion model and the text encoder(s); chain several to stack them.

    The cached base model is not modified: the outputs are new handles whose patched layers
    add the LoRA's low-rank update on the fly. Strength 0 leaves that part exactly as it was.
    """

    category = "loaders"
    model = Input("MODEL", tooltip="the diffusion model the LoRA is applied to")
    clip = Input("CLIP", tooltip="the text encoder(s) the LoRA is applied to")
    lora_name = Input(choices=model_choices("loras"), tooltip="file in models/loras")
    strength_model = Input("FLOAT", **STRENGTH, tooltip="how strongly to modify the diffusion model; may be negative")
    strength_clip = Input("FLOAT", **STRENGTH, tooltip="how strongly to modify the text encoder; may be negative")
    outputs = (Output("MODEL"), Output("CLIP"))

    @classmethod
    def fingerprint(cls, context: Any, lora_name: str | None = None, **_: Any) -> list | None:
        return file_state(context, "loras", lora_name) if lora_name is not None else None

    def execute(self, model: Any, clip: Any, lora_name: str, strength_model: float, strength_clip: float) -> tuple:
        from nodes.lora.apply import apply_to_clip, apply_to_model, match_lora

        if strength_model == 0 and strength_clip == 0:
            return (model, clip)
        state, name = _read_lora(self.context, lora_name)
        match = match_lora(state, name, model.original_unet, clip.original_encoders)
        return (apply_to_model(model, match, strength_model), apply_to_clip(clip, match, strength_clip))


class LoraLoaderModelOnly(Node):
    """Applies a LoRA to the diffusion model only; the text encoder is left as it is."""

    category = "loaders"
    model = Input("MODEL")
    lora_name = Input(choices=model_choices("loras"), tooltip="file in models/loras")
    strength_model = Input("FLOAT", **STRENGTH)
    outputs = (Output("MODEL"),)

    @classmethod
    def fingerprint(cls, context: Any, lora_name: str | None = None, **_: Any) -> list | None:
        return file_state(context, "loras", lora_name) if lora_name is not None else None

    def execute(self, model: Any, lora_name: str, strength_model: float) -> tuple:
        from nodes.lora.apply import apply_to_model, match_lora

        if strength_model == 0:
            return (model,)
        state, name = _read_lora(self.context, lora_name)
        return (apply_to_model(model, match_lora(state, name, model.original_unet, None), strength_model),)
