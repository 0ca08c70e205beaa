"""ComfyUI's union ControlNet control types (its ``comfy/cldm/control_types.py``), in its
order: a type's index is its row of the file's ``task_embedding``. controlnet-union-sdxl-1.0
has the first six, its promax variant all eight. Kept apart from ``nodes.controlnet.union``
so that the SetUnionControlNetType node can list them without importing torch."""

UNION_TYPE_NAMES = ("openpose", "depth", "hed/pidi/scribble/ted", "canny/lineart/anime_lineart/mlsd", "normal",
                    "segment", "tile", "repaint")
UNION_TYPES: dict[str, int] = {name: index for index, name in enumerate(UNION_TYPE_NAMES)}
