"""Load an upscale model file with spandrel, without unpickling anything.

``.safetensors`` files are read directly; ``.pth``/``.pt``/``.ckpt``/``.bin`` only through
``torch.load(weights_only=True)`` (spandrel's own loader would unpickle with a restricted
unpickler; we do not hand it files). Wrappers such as ``params_ema`` or a ``module.``
prefix are removed by ``spandrel.canonicalize_state_dict``, then spandrel detects the
architecture from the keys and shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from nodes.models.errors import ModelLoadError, UnsafeFormatError
from nodes.models.state_source import PICKLE_SUFFIXES, SAFETENSORS_SUFFIXES
from nodes.sd.handles import module_bytes


@dataclass(frozen=True)
class UpscaleModelHandle:
    """UPSCALE_MODEL: a spandrel ``ImageModelDescriptor`` and where it runs.

    ``scale``: output pixels per input pixel (1 for restoration models);
    ``input_channels``/``output_channels``: 3 for RGB models, 1 for grayscale. A model
    handle like the checkpoint's (``nodes.sd.runtime.ModelHandle``): cached in the "models"
    pool, so POST /free and ``--model-cache-budget`` cover it.
    """

    cache_pool: ClassVar[str] = "models"  # the output cache's pool (graph.cache): POST /free unloads it

    descriptor: Any
    name: str
    device: torch.device
    dtype: torch.dtype

    @property
    def scale(self) -> int:
        return int(self.descriptor.scale)

    @property
    def input_channels(self) -> int:
        return int(self.descriptor.input_channels)

    @property
    def output_channels(self) -> int:
        return int(self.descriptor.output_channels)

    @property
    def architecture(self) -> str:
        return str(self.descriptor.architecture.name)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """``[1, C, h, w]`` in 0..1 (any device/dtype) -> ``[1, C_out, h*scale, w*scale]`` float32 on the CPU."""
        out = self.descriptor(image.to(self.device, self.dtype))
        return out.float().cpu()

    def modules(self) -> tuple[Any, ...]:
        return (self.descriptor.model,)

    def size_bytes(self) -> int:
        return module_bytes(self.descriptor.model)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a model file (CPU), unwrapped from common containers."""
    from safetensors.torch import load_file
    from spandrel import canonicalize_state_dict

    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        state: Any = load_file(str(path), device="cpu")
    elif suffix in PICKLE_SUFFIXES:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError and friends
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise UnsafeFormatError(f"{path.name}: refused, torch.load(weights_only=True) rejects it "
                                    f"({type(exc).__name__}: {first}). Convert it to .safetensors.") from exc
    else:
        raise UnsafeFormatError(f"{path.name}: unsupported file type {suffix or '(none)'}; expected .safetensors, "
                                ".pth, .pt or .ckpt")
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path.name}: not a state dict (found {type(state).__name__})")
    state = canonicalize_state_dict(state)
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def pick_dtype(descriptor: Any, device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The runtime dtype when the architecture supports it (fp16/bf16 on GPUs), else float32."""
    if device.type == "cpu":
        return torch.float32
    if dtype == torch.float16 and descriptor.supports_half:
        return dtype
    if dtype == torch.bfloat16 and descriptor.supports_bfloat16:
        return dtype
    return torch.float32


def load_upscale_model(path: str | Path, *, device: torch.device | str = "cpu",
                       dtype: torch.dtype = torch.float32) -> UpscaleModelHandle:
    """Load an upscale model file; raises ``ModelLoadError`` for files spandrel does not
    recognise or models that are not single-image models (e.g. inpainting), and
    ``UnsafeFormatError`` for refused formats."""
    from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError

    path = Path(path)
    state = read_state_dict(path)
    if not state:
        raise ModelLoadError(f"{path.name}: no tensors found")
    try:
        descriptor = ModelLoader().load_from_state_dict(state)
    except UnsupportedModelError as exc:
        keys = ", ".join(sorted(state)[:5])
        raise ModelLoadError(f"{path.name}: not an upscale model architecture spandrel knows "
                             f"({len(state)} tensors, e.g. {keys})") from exc
    except (KeyError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(f"{path.name}: spandrel could not build the model ({type(exc).__name__}: {exc})") from exc
    if not isinstance(descriptor, ImageModelDescriptor):
        raise ModelLoadError(f"{path.name}: an upscale model must be a single-image model; "
                             f"this is a {descriptor.architecture.name} {descriptor.purpose} model")
    device = torch.device(device)
    dtype = pick_dtype(descriptor, device, dtype)
    descriptor = descriptor.to(device=device, dtype=dtype).eval()
    return UpscaleModelHandle(descriptor, path.name, device, dtype)
