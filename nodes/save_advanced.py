"""ComfyUI's Save Image (Advanced): PNG at 8 or 16 bits per channel, or OpenEXR in
32-bit float, with the workflow in the file's metadata.

Its ``format`` is a DynamicCombo (``Input.dynamic``) whose choices reveal
``format.bit_depth``, ``format.input_color_space`` and, for AVIF, ``format.crf`` and the
nested ``format.save_mode``, each format declaring them with its own choices, as ComfyUI
does (``FORMAT_OPTIONS``; validation checks the chosen format's). The node-level
declarations hold the union, for a prompt whose format is unknown.
AVIF (an AV1 encoder with 10-bit and HDR modes in ComfyUI) is declared so that saved
workflows validate, but saving it is refused with a node error.

Both encoders are written here: Pillow cannot write 16-bit RGB PNG, nor EXR at all.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from pathlib import Path
from typing import Any

from graph import Input, Node, NodeResult, Output
from nodes.io import output_target

BIT_DEPTHS = {"png": ["8-bit", "16-bit"], "exr": ["32-bit float"], "avif": ["auto", "8-bit YUV420", "10-bit YUV420"]}
COLOR_SPACES = {"png": ["sRGB"], "exr": ["sRGB", "HDR", "linear"], "avif": ["sRGB", "HDR", "HDR PQ"]}
_SAVE_MODES = {"still images": (), "animated": ("format.save_mode.fps", "format.save_mode.loop_count")}


def _format_inputs(file_format: str) -> dict[str, Input]:
    """What choosing ``file_format`` reveals, as ComfyUI declares it for that format."""
    inputs = {
        "format.bit_depth": Input(choices=BIT_DEPTHS[file_format], default=BIT_DEPTHS[file_format][0],
                                  advanced=True),
        "format.input_color_space": Input(choices=COLOR_SPACES[file_format], default="sRGB", advanced=True),
    }
    if file_format == "avif":
        inputs["format.crf"] = Input("INT", default=18, min=1, max=63, advanced=True,
                                     tooltip="AVIF quality: lower is better and larger")
        inputs["format.save_mode"] = Input(dynamic=_SAVE_MODES)
    return inputs


# Each format and its own declarations of the inputs it reveals (ComfyUI's choices per format).
FORMAT_OPTIONS: dict[str, dict[str, Input]] = {name: _format_inputs(name) for name in ("png", "exr", "avif")}


def _union(choices: dict[str, list[str]]) -> list[str]:
    return list(dict.fromkeys(choice for options in choices.values() for choice in options))


# The node-level declarations: what an API prompt's value is checked against when its
# format is not one of the choices (validation uses the chosen format's own, above).
_REVEALED = {
    "format.bit_depth": Input(choices=_union(BIT_DEPTHS), default="8-bit", optional=True),
    "format.input_color_space": Input(choices=_union(COLOR_SPACES), default="sRGB", optional=True),
    "format.crf": Input("INT", default=18, min=1, max=63, optional=True,
                        tooltip="AVIF quality: lower is better and larger"),
    "format.save_mode": Input(dynamic=_SAVE_MODES, optional=True),
    "format.save_mode.fps": Input("FLOAT", default=6.0, min=0.01, max=1000.0, step=0.01, optional=True),
    "format.save_mode.loop_count": Input("INT", default=0, min=0, max=1000, optional=True, advanced=True,
                                         tooltip="0 loops forever"),
}


def _declare_revealed(cls: type[Node]) -> type[Node]:
    # The names hold dots, so they are set here rather than written in the class body.
    for name, inp in _REVEALED.items():
        setattr(cls, name, inp)
    return cls


@_declare_revealed
class SaveImageAdvanced(Node):
    """Saves images in the output folder as PNG (8 or 16 bits per channel) or EXR
    (32-bit float, scene-linear), with the prompt and workflow in their metadata.

    Files are named ``{prefix}_{counter:05}.{png|exr}``, as ComfyUI names them.
    """

    display_name = "Save Image (Advanced)"
    category = "image"
    output_node = True
    images = Input("IMAGE")
    filename_prefix = Input("STRING", default="ComfyUI")
    format = Input(dynamic=FORMAT_OPTIONS, tooltip="The file format in which to save the image.")
    outputs = (Output("IMAGE", "images"),)

    def execute(self, images: Any, filename_prefix: str, format: str, **revealed: Any) -> NodeResult:
        bit_depth = revealed.get("format.bit_depth") or BIT_DEPTHS[format][0]
        color_space = revealed.get("format.input_color_space") or "sRGB"
        if format == "avif":
            raise ValueError("SaveImageAdvanced: AVIF is not supported here yet; choose png or exr")
        if bit_depth not in BIT_DEPTHS[format]:
            raise ValueError(f"bit_depth {bit_depth!r} is not one of {BIT_DEPTHS[format]} for {format}")
        if color_space not in COLOR_SPACES[format]:
            raise ValueError(f"input_color_space {color_space!r} is not one of {COLOR_SPACES[format]} for {format}")
        context = self.context
        metadata = _metadata(context.prompt, context.extra_data.get("extra_pnginfo") or {})
        target, subfolder, prefix = output_target(Path(context.folders.output), filename_prefix, "ComfyUI")
        counter = _next_counter(target, prefix)
        saved = []
        for frame in images:
            filename = f"{prefix}_{counter:05}.{format}"
            if format == "png":
                data = encode_png(frame, 16 if bit_depth == "16-bit" else 8, metadata)
            else:
                data = encode_exr(frame, color_space, metadata)
            (target / filename).write_bytes(data)
            saved.append({"filename": filename, "subfolder": subfolder, "type": "output"})
            counter += 1
        return NodeResult(outputs=(images,), ui={"images": saved})


def _metadata(prompt: dict | None, extra_pnginfo: dict) -> dict[str, str]:
    entries = {"prompt": json.dumps(prompt)} if prompt is not None else {}
    entries.update({str(key): json.dumps(value) for key, value in extra_pnginfo.items()})
    return entries


def _next_counter(folder: Path, prefix: str) -> int:
    """One more than the highest counter of ``{prefix}_NNNNN`` files, whatever follows it
    (SaveImage's ``_.png`` or this node's ``.png``/``.exr``), so they never collide."""
    pattern = re.compile(re.escape(prefix) + r"_(\d+)[_.]")
    found = [int(m.group(1)) for path in folder.iterdir() if (m := pattern.match(path.name))]
    return max(found, default=0) + 1


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_text(key: str, text: str) -> bytes:
    # Latin-1 text in a tEXt chunk, anything else as UTF-8 in iTXt, as Pillow writes them.
    try:
        return _png_chunk(b"tEXt", key.encode("latin-1") + b"\0" + text.encode("latin-1"))
    except UnicodeEncodeError:
        return _png_chunk(b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + text.encode("utf-8"))


def encode_png(frame: Any, bits: int, metadata: dict[str, str]) -> bytes:
    """One ``[H, W, C]`` float image (C = 1, 3 or 4) in 0..1 as PNG bytes, 8 or 16 bits per sample."""
    import numpy as np

    pixels = frame.detach().float().clamp(0.0, 1.0).cpu().numpy()
    height, width, channels = pixels.shape
    color_type = {1: 0, 3: 2, 4: 6}.get(channels)
    if color_type is None:
        raise ValueError(f"cannot save a {channels}-channel image as PNG")
    top = (1 << bits) - 1
    samples = np.round(pixels * top).astype(">u2" if bits == 16 else np.uint8)
    rows = samples.reshape(height, -1).view(np.uint8)
    filtered = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1)  # filter "none" per row
    header = struct.pack(">IIBBBBB", width, height, bits, color_type, 0, 0, 0)
    parts = [b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", header)]
    parts += [_png_text(key, text) for key, text in metadata.items()]
    parts += [_png_chunk(b"IDAT", zlib.compress(filtered.tobytes(), 4)), _png_chunk(b"IEND", b"")]
    return b"".join(parts)


_REC709 = (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290)
_REC2020 = (0.708, 0.292, 0.170, 0.797, 0.131, 0.046, 0.3127, 0.3290)


def to_scene_linear(rgb: Any, color_space: str) -> Any:
    """Decodes the input's transfer function: sRGB's inverse EOTF, HLG's inverse OETF
    (BT.2100, for "HDR"), or nothing for "linear"."""
    import torch

    if color_space == "linear":
        return rgb
    if color_space == "sRGB":
        return torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    a = 0.17883277
    b, c = 1.0 - 4.0 * a, 0.5 - a * torch.log(torch.tensor(4.0 * a)).item()
    return torch.where(rgb <= 0.5, rgb * rgb / 3.0, (torch.exp((rgb - c) / a) + b) / 12.0)


def _exr_attribute(name: str, kind: str, value: bytes) -> bytes:
    return name.encode() + b"\0" + kind.encode() + b"\0" + struct.pack("<i", len(value)) + value


def encode_exr(frame: Any, color_space: str, metadata: dict[str, str]) -> bytes:
    """One ``[H, W, C]`` image as an uncompressed scan-line OpenEXR file of 32-bit floats,
    its colour decoded to scene-linear light (``to_scene_linear``; alpha stays as it is)."""
    import numpy as np

    pixels = frame.detach().float().cpu()
    height, width, channels = pixels.shape
    if channels not in (3, 4):
        raise ValueError(f"cannot save a {channels}-channel image as EXR")
    pixels = pixels.clone()
    pixels[..., :3] = to_scene_linear(pixels[..., :3].clamp(0.0, 1.0), color_space)
    names = ["A", "B", "G", "R"] if channels == 4 else ["B", "G", "R"]  # EXR wants them sorted
    planes = {"R": pixels[..., 0], "G": pixels[..., 1], "B": pixels[..., 2]}
    if channels == 4:
        planes["A"] = pixels[..., 3]
    channel_list = b"".join(name.encode() + b"\0" + struct.pack("<iB3xii", 2, 0, 1, 1) for name in names) + b"\0"
    window = struct.pack("<iiii", 0, 0, width - 1, height - 1)
    header = [
        _exr_attribute("channels", "chlist", channel_list),
        _exr_attribute("chromaticities", "chromaticities",
                       struct.pack("<8f", *(_REC2020 if color_space == "HDR" else _REC709))),
        _exr_attribute("compression", "compression", b"\0"),
        _exr_attribute("dataWindow", "box2i", window),
        _exr_attribute("displayWindow", "box2i", window),
        _exr_attribute("lineOrder", "lineOrder", b"\0"),
        _exr_attribute("pixelAspectRatio", "float", struct.pack("<f", 1.0)),
        _exr_attribute("screenWindowCenter", "v2f", struct.pack("<ff", 0.0, 0.0)),
        _exr_attribute("screenWindowWidth", "float", struct.pack("<f", 1.0)),
    ]
    header += [_exr_attribute(key, "string", text.encode("utf-8")) for key, text in metadata.items()
               if len(key) < 32]  # longer names would need EXR's long-names flag
    head = struct.pack("<ii", 20000630, 2) + b"".join(header) + b"\0"
    # One scan line per chunk: y, byte count, then each channel's row in channel-list order.
    rows = np.stack([planes[name].numpy() for name in names], axis=1).astype("<f4")  # [H, channels, W]
    line_bytes = len(names) * width * 4
    first = len(head) + 8 * height
    offsets = struct.pack(f"<{height}Q", *(first + y * (8 + line_bytes) for y in range(height)))
    lines = b"".join(struct.pack("<ii", y, line_bytes) + rows[y].tobytes() for y in range(height))
    return head + offsets + lines
