"""LoRA for the UNet and the CLIP text encoders, applied without touching the loaded model.

Design: a LoRA never changes a weight. The loaded checkpoint lives in the output cache and
is shared by every prompt, so ``LoraLoader`` returns a new handle whose ``unet`` (and
``encoders``) is a *patched view* of the base module tree (``patch.patched_view``): every
module object is a shallow copy with its own child and hook tables (so a library that
installs hooks on first use, as transformers 5 does to record hidden states, cannot reach
the base model through the view), every patched ``Linear``/``Conv2d`` is wrapped in a
``LoraAdapter`` that computes ``base(x) + sum_i strength_i * alpha_i / rank_i *
up_i(down_i(x))`` on the fly, and every parameter and buffer tensor is the very tensor of
the base model. So:

* the cached base model is never modified (nothing is merged in place, not even
  temporarily), and two handles with different LoRAs can be used in the same prompt;
* memory per LoRA is the LoRA's own low-rank tensors, not a copy of the affected weights
  (merging into copies would duplicate most of an SDXL UNet for a LoRA that touches every
  attention and feed-forward layer);
* the cost is two extra rank-r matmuls per patched layer (a few percent of the layer for
  r << width), paid at each step instead of once;
* strength 0 drops the LoRA altogether, so the output is bit-exact the base output;
* stacked LoRAs are one view over the base with all patches (``ModelHandle.patches``),
  not views of views.

Modules, one job each:

- ``file``: read a LoRA file (``.safetensors``; pickles only via ``weights_only``).
- ``keys``: split a LoRA's keys into per-layer groups and say which model part each targets;
  kohya/sd-scripts (``lora_unet_*`` with diffusers or LDM block names, ``lora_te_*``,
  ``lora_te1_``/``lora_te2_``), diffusers (``unet.*.lora.down.weight``, attention
  processors, ``lora_linear_layer``) and PEFT (``lora_A``/``lora_B``) layouts; LoCon
  (conv LoRA, optionally with a Tucker ``lora_mid``).
- ``targets``: every name a layer of our diffusers UNet / transformers CLIP may carry in a
  LoRA file (diffusers and LDM names, dotted and underscored), via ``nodes.models.keymap_unet``.
- ``patch``: ``LoraAdapter`` and ``patched_view``.
- ``apply``: match a LoRA to a model and clip, report unmatched keys, build the new handles.
"""
