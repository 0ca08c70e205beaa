"""Preview nodes from ComfyUI's current core: Preview Mask and Image Compare.

Both write PNGs to the temp folder, as PreviewImage does, and report them in the UI
payload ComfyUI's editor reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graph import Input, Node, NodeResult, Output
from nodes.io import save_png_batch


def _save_preview(node: Node, images: Any, prefix: str) -> list[dict[str, str]]:
    context = node.context
    return save_png_batch(images, Path(context.folders.temp), prefix, "temp", prompt=context.prompt,
                          extra_pnginfo=context.extra_data.get("extra_pnginfo") or {})


class MaskPreview(Node):
    """Shows a mask in the editor (white where it is 1) and passes it on."""

    display_name = "Preview Mask"
    category = "mask"
    output_node = True
    mask = Input("MASK")
    # ComfyUI's newer Preview Mask passes the mask on; older saved workflows have no output.
    outputs = (Output("MASK", "mask"),)

    def execute(self, mask: Any) -> NodeResult:
        grey = mask.reshape(-1, *mask.shape[-2:]).unsqueeze(-1).expand(-1, -1, -1, 3)
        return NodeResult(outputs=(mask,), ui={"images": _save_preview(self, grey, "Latentgraph_mask_preview")})


class ImageCompare(Node):
    """Shows two images for comparison in the editor (ComfyUI draws a slider between them)."""

    display_name = "Compare Images"
    category = "image"
    output_node = True
    image_a = Input("IMAGE", optional=True)
    image_b = Input("IMAGE", optional=True)
    # ComfyUI declares a frontend-only "compare_view" widget (type IMAGECOMPARE) whose saved
    # value is the last pair of URLs shown; it is accepted here and ignored.
    compare_view = Input("IMAGECOMPARE", hidden=True)
    outputs = ()

    def execute(self, image_a: Any = None, image_b: Any = None, compare_view: Any = None) -> NodeResult:
        ui: dict[str, list] = {"a_images": [], "b_images": []}
        if image_a is not None and len(image_a) > 0:
            ui["a_images"] = _save_preview(self, image_a, "Latentgraph_compare_a")
        if image_b is not None and len(image_b) > 0:
            ui["b_images"] = _save_preview(self, image_b, "Latentgraph_compare_b")
        return NodeResult(ui=ui)
