"""Loading and saving images: the input, output and temp folders.

Every file name that comes from a workflow is resolved with ``graph.paths.safe_join``,
so no workflow can read or write outside its folder.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from graph import Input, Node, NodeResult, Output
from graph.context import Folders
from graph.paths import list_files, safe_join
from nodes.image import to_uint8

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def input_images(runtime: Any) -> list[str]:
    """Image files in the runtime's input folder (and its subfolders), as paths relative to it."""
    folders = getattr(runtime, "folders", None) or Folders()
    return list_files(folders.input, IMAGE_EXTENSIONS)


class LoadImage(Node):
    """Loads an image from the input folder; its alpha channel becomes the MASK.

    The mask is 1 where the image is transparent (the area to inpaint), as in ComfyUI;
    an image without alpha gives an all-zero 64x64 mask.
    """

    category = "image"
    image = Input(choices=input_images, image_upload=True)
    outputs = (Output("IMAGE"), Output("MASK"))

    @classmethod
    def fingerprint(cls, context: Any, image: str) -> str:
        return file_digest(safe_join(context.folders.input, image))

    def execute(self, image: str) -> tuple:
        pixels, alpha = read_image(safe_join(self.context.folders.input, image))
        mask = 1.0 - alpha if alpha is not None else _empty_mask()
        return (pixels, mask)


class LoadImageMask(Node):
    """Loads one channel of an image from the input folder as a MASK (0..1)."""

    category = "mask"
    image = Input(choices=input_images, image_upload=True)
    channel = Input(choices=["alpha", "red", "green", "blue"], default="alpha")
    outputs = (Output("MASK"),)

    @classmethod
    def fingerprint(cls, context: Any, image: str, channel: str) -> str:
        return file_digest(safe_join(context.folders.input, image))

    def execute(self, image: str, channel: str) -> tuple:
        pixels, alpha = read_image(safe_join(self.context.folders.input, image))
        if channel == "alpha":
            # ComfyUI inverts alpha for masks: opaque = 0, transparent = 1.
            return (1.0 - alpha if alpha is not None else _empty_mask(),)
        index = {"red": 0, "green": 1, "blue": 2}[channel]
        return (pixels[0, :, :, index].unsqueeze(0).clone(),)


class SaveImage(Node):
    """Saves images as PNG files in the output folder, with the workflow in their metadata.

    Files are named ``{prefix}_{counter:05}_.png``; the prefix may name a subfolder.
    The PNG carries a ``prompt`` text chunk (API format) and one chunk per key of
    ``extra_pnginfo`` (the editor sends ``workflow``), so dropping it on the editor
    restores the workflow.
    """

    category = "image"
    output_node = True
    images = Input("IMAGE")
    filename_prefix = Input("STRING", default="Latentgraph")
    outputs = ()
    folder_type = "output"

    def execute(self, images: Any, filename_prefix: str) -> NodeResult:
        folder = self.context.folders.output if self.folder_type == "output" else self.context.folders.temp
        saved = save_png_batch(images, Path(folder), filename_prefix, self.folder_type,
                               prompt=self.context.prompt,
                               extra_pnginfo=self.context.extra_data.get("extra_pnginfo") or {})
        return NodeResult(ui={"images": saved})


class PreviewImage(SaveImage):
    """Shows images in the editor; they are written to the temp folder, not kept as outputs."""

    filename_prefix = Input("STRING", default="Latentgraph_preview", hidden=True)
    folder_type = "temp"

    def execute(self, images: Any, filename_prefix: str = "Latentgraph_preview") -> NodeResult:
        return super().execute(images, filename_prefix)


def read_image(path: Path) -> tuple[Any, Any]:
    """Reads an image file: ``([1, H, W, 3]`` float RGB in 0..1, ``[1, H, W]`` alpha or None).

    Pillow's decompression-bomb guard is active: an oversized image raises.
    """
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    with Image.open(path) as opened:
        picture = ImageOps.exif_transpose(opened)
        has_alpha = "A" in picture.getbands() or (picture.mode == "P" and "transparency" in picture.info)
        rgba = picture.convert("RGBA")
    array = torch.from_numpy(np.asarray(rgba).astype(np.float32) / 255.0)
    alpha = array[None, :, :, 3].clone() if has_alpha else None
    return array[None, :, :, :3].clone(), alpha


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes: the cache fingerprint of a loaded image."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _empty_mask() -> Any:
    import torch

    return torch.zeros((1, 64, 64), dtype=torch.float32)


def save_png_batch(images: Any, folder: Path, filename_prefix: str, folder_type: str,
                   prompt: dict | None, extra_pnginfo: dict) -> list[dict[str, str]]:
    """Writes each image of a ``[B, H, W, C]`` batch as ``{prefix}_{counter:05}_.png``.

    The prefix may contain a subfolder, which must stay inside ``folder``. Returns the
    UI entries ``{"filename", "subfolder", "type"}``.
    """
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    target, subfolder, prefix = output_target(folder, filename_prefix, "image")
    counter = next_counter(target, prefix)
    metadata = PngInfo()
    for key, text in workflow_metadata(prompt, extra_pnginfo).items():
        metadata.add_text(key, text)
    saved = []
    for frame in images:
        filename = f"{prefix}_{counter:05}_.png"
        Image.fromarray(to_uint8(frame)).save(target / filename, pnginfo=metadata, compress_level=4)
        saved.append({"filename": filename, "subfolder": subfolder, "type": folder_type})
        counter += 1
    return saved


def output_target(folder: Path, filename_prefix: str, default_prefix: str) -> tuple[Path, str, str]:
    """Where an output named by ``filename_prefix`` goes: ``(folder it is written to,
    subfolder, file prefix)``. The prefix may name a subfolder, which must stay inside
    ``folder`` (``safe_join``); it is created."""
    subfolder, _, prefix = filename_prefix.replace("\\", "/").rpartition("/")
    target = safe_join(folder, subfolder)
    target.mkdir(parents=True, exist_ok=True)
    return target, subfolder, prefix or default_prefix


def workflow_metadata(prompt: dict | None, extra_pnginfo: dict) -> dict[str, str]:
    """The text entries an output file carries: ``prompt`` (API format) and one JSON entry
    per key of ``extra_pnginfo`` (the editor sends ``workflow``)."""
    entries = {"prompt": json.dumps(prompt)} if prompt is not None else {}
    entries.update({str(key): json.dumps(value) for key, value in extra_pnginfo.items()})
    return entries


def next_counter(folder: Path, prefix: str, suffix: str = ".png") -> int:
    """One more than the highest counter among ``{prefix}_NNNNN_{suffix}`` files in ``folder``."""
    pattern = re.compile(re.escape(prefix) + r"_(\d+)_" + re.escape(suffix) + "$")
    highest = 0
    for path in folder.iterdir():
        match = pattern.match(path.name)
        if match:
            highest = max(highest, int(match.group(1)))
    return highest + 1
