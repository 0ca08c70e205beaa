"""ControlNets: loading (offline, detected by structure), the CONTROL_NET handle, and the
control residuals added to the UNet while sampling.

- ``structure``: what a file is (LDM or diffusers ControlNet, union or not, and the formats
  refused), its family and its diffusers ``ControlNetModel`` config, from key names and shapes;
- ``keymap``: diffusers ``ControlNetModel`` keys <- LDM ``control_model.*`` keys;
- ``load``: files and folders -> :class:`~nodes.controlnet.handle.ControlNetHandle`;
- ``union``: union ControlNets (ControlNet++) in diffusers' ``ControlNetUnionModel``: their
  sizes from the shapes, ComfyUI's control types and its forward pass ("auto" or one type);
- ``union_types``: ComfyUI's union control type names and indices (no torch, for the node);
- ``adapter``: T2I-Adapters (TencentARC and diffusers layouts) into diffusers' ``T2IAdapter``;
- ``control_lora``: Control-LoRA files: their tensors at load, their network built from the
  sampled model's UNet (LoRAs merged) at each sampling run's first UNet call;
- ``handle``: the CONTROL_NET value and :class:`~nodes.controlnet.handle.ControlLink`, one
  apply node's hint, strength and window, chained to the previous one (ComfyUI's
  ``previous_controlnet``);
- ``residuals``: the per-UNet-call side: hints resized to the latent, every active link of
  a chain run on its rows of the batch, residuals summed.

The nodes are in ``nodes/controlnet_nodes.py``.
"""
