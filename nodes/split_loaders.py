"""Split-file loaders, as ComfyUI declares them: UNETLoader, CLIPLoader, DualCLIPLoader.

A model whose parts come as separate files (the UNet in ``models/diffusion_models/`` or
``models/unet/``, text encoders in ``models/text_encoders/`` or ``models/clip/``, the VAE
through VAELoader) gives the same MODEL and CLIP values as CheckpointLoaderSimple does for
the combined file: the same handle classes (``nodes.sd.handles``), the parts built and
filled by the same code (``nodes.models.split``), so LoRAs, sampling, the output cache's
model pool and POST /free treat them alike.

ComfyUI's choice lists are accepted whole, so that saved workflows validate; families
other than SD1.x, SD2.x and SDXL fail when the node runs, with an error saying so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graph import Input, Node, Output
from nodes.loaders import keep_file_precision, runtime_dtypes
from nodes.models.folders import models_of

# ComfyUI reads each of these kinds from two folders, one under its former name (its
# folder_paths: "diffusion_models" is models/unet + models/diffusion_models, "text_encoders"
# is models/text_encoders + models/clip), in this order.
FOLDER_KINDS: dict[str, tuple[str, ...]] = {
    "diffusion_models": ("unet", "diffusion_models"),
    "text_encoders": ("text_encoders", "clip"),
}

WEIGHT_DTYPES = ("default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2")

# CLIPLoader's ``type`` choices: ComfyUI 0.8.0's nodes.py, then the later names that
# ComfyUI's saved templates (PyPI comfyui-workflow-templates-json 0.1.123) use.
CLIP_TYPES = (
    "stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos",
    "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image", "flux2", "ovis",
    "longcat_image", "cogvideox", "lens", "pixeldit", "ideogram4", "boogu", "krea2", "joyimage", "mage",
    "minimax", "fibo2", "flux3", "moss_image",
)
# DualCLIPLoader's: ComfyUI 0.8.0's, then "ace" from the same templates.
DUAL_CLIP_TYPES = (
    "sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image", "hunyuan_video_15", "kandinsky5",
    "kandinsky5_image", "ltxv", "newbie", "ace",
)
DEVICES = ("default", "cpu")


def folder_choices(kind: str):
    """A ``choices`` callable: the model files of ``kind`` in every folder ComfyUI reads it from."""
    def choices(runtime: Any) -> list[str]:
        folders = models_of(runtime)
        return sorted({name for sub in FOLDER_KINDS[kind] for name in folders.list(sub)})
    return choices


def resolve_file(runtime: Any, kind: str, name: str) -> Path:
    """The path of a listed model file of ``kind`` (first folder first); raises
    FileNotFoundError, UnsafePathError, or ValueError for a diffusers folder."""
    folders = models_of(runtime)
    for sub in FOLDER_KINDS[kind]:
        try:
            path = folders.resolve(sub, name)
        except FileNotFoundError:
            continue
        if path.is_dir():
            raise ValueError(f"{name} is a diffusers folder holding a whole model: put it in models/checkpoints "
                             "and load it with CheckpointLoaderSimple")
        return path
    raise FileNotFoundError(f"no {kind} model named {name!r} in models/{' or models/'.join(FOLDER_KINDS[kind])}")


def files_state(context: Any, kind: str, *names: str) -> list:
    """Each file's path, size and mtime, and those of the configs loading it reads (the
    fingerprint: a changed file or config loads again)."""
    from nodes.models.split import side_files

    state: list = []
    for name in names:
        path = resolve_file(context.runtime, kind, name)
        for part in (path, *side_files(path)):
            stat = part.stat()
            state.append([str(part), stat.st_size, stat.st_mtime_ns])
    return state


class UNETLoader(Node):
    """Loads an SD1.x, SD2.x or SDXL diffusion model (UNet) saved as its own file.

    LDM (ComfyUI) or diffusers key layout; the family is told from the file's structure.
    ``weight_dtype`` fp8 stores the weight matrices in 8 bits (half of fp16's memory) and
    casts each layer's to the compute dtype as it runs; ``fp8_e4m3fn_fast`` is stored the
    same way (ComfyUI's fast fp8 matrix products are not used).
    """

    category = "advanced/loaders"
    unet_name = Input(choices=folder_choices("diffusion_models"),
                      tooltip="file in models/diffusion_models or models/unet")
    weight_dtype = Input(choices=list(WEIGHT_DTYPES))
    outputs = (Output("MODEL"),)

    @classmethod
    def fingerprint(cls, context: Any, unet_name: str | None = None, **_: Any) -> list | None:
        return files_state(context, "diffusion_models", unet_name) if unet_name is not None else None

    def execute(self, unet_name: str, weight_dtype: str) -> tuple:
        import torch

        from nodes.models.split import load_unet_file
        from nodes.sampling import DiscreteSchedule, scaled_linear_betas
        from nodes.sd.handles import ModelHandle

        storage = {"default": None, "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e4m3fn_fast": torch.float8_e4m3fn,
                   "fp8_e5m2": torch.float8_e5m2}[weight_dtype]
        device, dtypes = runtime_dtypes(self.context)
        path = resolve_file(self.context.runtime, "diffusion_models", unet_name)
        loaded = load_unet_file(path, device=device, dtype=dtypes["unet"], weight_storage=storage,
                                keep_file_precision="unet" in keep_file_precision(self.context))
        config = loaded.scheduler_config
        # As CheckpointLoaderSimple builds it, so that both give the same sigmas.
        schedule = DiscreteSchedule.from_betas(scaled_linear_betas(
            config.get("num_train_timesteps", 1000), config.get("beta_start", 0.00085), config.get("beta_end", 0.012)))
        return (ModelHandle(
            unet=loaded.unet, family=loaded.family,
            prediction="v" if loaded.prediction_type == "v_prediction" else "eps",
            schedule=schedule, latent_scale=loaded.vae_scale_factor, in_channels=loaded.in_channels,
            device=torch.device(device), dtype=dtypes["unet"], source=path,
        ),)


def _load_clip(node: Node, names: tuple[str, ...], family: str, device_choice: str) -> tuple:
    """The CLIP value of some text-encoder files (``family`` as ``split.load_text_encoders``)."""
    import torch

    from nodes.models.split import load_text_encoders
    from nodes.sd.handles import ClipHandle
    from nodes.sd.runtime import runtime_of

    device, dtypes = runtime_dtypes(node.context)
    if device_choice == "cpu":  # ComfyUI's "cpu": the text encoders load and run on the CPU
        device = torch.device("cpu")
        dtypes = runtime_of(node.context).part_dtypes(device)
    paths = [resolve_file(node.context.runtime, "text_encoders", name) for name in names]
    loaded = load_text_encoders(paths, family, device=device, dtype=dtypes["text"],
                                keep_file_precision="text" in keep_file_precision(node.context))
    return (ClipHandle(encoders=loaded.encoders, tokenizers=loaded.tokenizers, layouts=loaded.layouts,
                       family=loaded.family, device=torch.device(device)),)


def _unsupported(node: str, clip_type: str, supported: str) -> ValueError:
    return ValueError(f"{node}: type {clip_type!r} is for a model family Latentgraph does not support; "
                      f"supported here: {supported}")


class CLIPLoader(Node):
    """Loads one text encoder file: with type stable_diffusion, SD1.x's CLIP-L or SD2.x's
    OpenCLIP ViT-H (told apart by the file's structure). Other types name model families
    Latentgraph does not support, and fail when the node runs."""

    category = "advanced/loaders"
    clip_name = Input(choices=folder_choices("text_encoders"), tooltip="file in models/text_encoders or models/clip")
    type = Input(choices=list(CLIP_TYPES))
    device = Input(choices=list(DEVICES), optional=True, advanced=True)
    outputs = (Output("CLIP"),)

    @classmethod
    def fingerprint(cls, context: Any, clip_name: str | None = None, **_: Any) -> list | None:
        return files_state(context, "text_encoders", clip_name) if clip_name is not None else None

    def execute(self, clip_name: str, type: str, device: str = "default") -> tuple:  # noqa: A002 - ComfyUI's name
        if type != "stable_diffusion":
            raise _unsupported("CLIPLoader", type, "stable_diffusion (SD1.x CLIP-L, SD2.x OpenCLIP ViT-H)")
        return _load_clip(self, (clip_name,), "stable_diffusion", device)


class DualCLIPLoader(Node):
    """Loads two text encoder files: with type sdxl, SDXL's CLIP-L and OpenCLIP bigG (in
    either order). Other types name model families Latentgraph does not support."""

    category = "advanced/loaders"
    clip_name1 = Input(choices=folder_choices("text_encoders"), tooltip="file in models/text_encoders or models/clip")
    clip_name2 = Input(choices=folder_choices("text_encoders"), tooltip="file in models/text_encoders or models/clip")
    type = Input(choices=list(DUAL_CLIP_TYPES))
    device = Input(choices=list(DEVICES), optional=True, advanced=True)
    outputs = (Output("CLIP"),)

    @classmethod
    def fingerprint(cls, context: Any, clip_name1: str | None = None, clip_name2: str | None = None,
                    **_: Any) -> list | None:
        if clip_name1 is None or clip_name2 is None:
            return None
        return files_state(context, "text_encoders", clip_name1, clip_name2)

    def execute(self, clip_name1: str, clip_name2: str, type: str,  # noqa: A002 - ComfyUI's name
                device: str = "default") -> tuple:
        if type != "sdxl":
            raise _unsupported("DualCLIPLoader", type, "sdxl (SDXL's CLIP-L and OpenCLIP bigG)")
        return _load_clip(self, (clip_name1, clip_name2), "sdxl", device)
