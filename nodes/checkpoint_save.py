"""CheckpointSave: a MODEL, CLIP and VAE written back as one single-file checkpoint.

The file is ``{prefix}_{counter:05}_.safetensors`` in the output folder (the prefix may
name a subfolder: ComfyUI's default is ``checkpoints/ComfyUI``), in the original LDM key
layout every loader reads, with the architecture and prediction type in its
``latentgraph.config`` metadata and, as ComfyUI does, the prompt and workflow. LoRAs
applied on the way (LoraLoader) are merged into the weights they change; each weight keeps
the dtype it is held in (an fp16 file's matrices stay fp16, see
``nodes.models.cast_weights``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graph import Input, Node, NodeResult
from nodes.io import next_counter, output_target, workflow_metadata


def _merge(module: Any, patches: tuple[Any, ...]) -> dict[str, Any]:
    """The merged ``weight`` tensors of ``module``'s layers that ``patches`` change."""
    from nodes.lora.apply import deltas_by_layer

    out = {}
    for name, deltas in deltas_by_layer(patches).items():
        weight = module.get_submodule(name).weight
        total = weight.detach().float()
        for delta in deltas:
            total = total + delta.weight_delta(weight.shape).to(total.device)
        out[f"{name}.weight"] = total.to(weight.dtype)
    return out


class CheckpointSave(Node):
    """Saves the model, CLIP and VAE as a checkpoint in the output folder, LoRAs merged in."""

    category = "advanced/model_merging"
    output_node = True
    model = Input("MODEL")
    clip = Input("CLIP")
    vae = Input("VAE")
    filename_prefix = Input("STRING", default="checkpoints/Latentgraph")
    outputs = ()

    def execute(self, model: Any, clip: Any, vae: Any, filename_prefix: str) -> NodeResult:
        from nodes.models.ldm_writer import save_ldm_checkpoint

        if model.family != clip.family:
            raise ValueError(f"the MODEL is {model.family} but the CLIP is {clip.family}")
        folder, subfolder, prefix = output_target(Path(self.context.folders.output), filename_prefix, "checkpoint")
        path = folder / f"{prefix}_{next_counter(folder, prefix, '.safetensors'):05}_.safetensors"
        metadata = workflow_metadata(self.context.prompt, self.context.extra_data.get("extra_pnginfo") or {})
        base_encoders = clip.original_encoders
        encoder_patches = clip.patches or tuple(() for _ in base_encoders)
        save_ldm_checkpoint(
            path, model.family, model.original_unet, vae.vae, base_encoders, metadata=metadata,
            store_arch_config=True, prediction_type="v_prediction" if model.prediction == "v" else "epsilon",
            replaced=_merge(model.original_unet, model.patches),
            replaced_encoders=[_merge(e, p) for e, p in zip(base_encoders, encoder_patches, strict=True)])
        return NodeResult(ui={"checkpoints": [{"filename": path.name, "subfolder": subfolder, "type": "output"}]})
