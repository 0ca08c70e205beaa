"""The runtime: what Latentgraph's nodes are given to run models.

The server and the CLI each build one ``Runtime`` (``nodes.make_runtime``) and hand it to
the engine (``graph.engine.Engine``); nodes read it as ``self.context.runtime``, and
computed combo choices (model files, input images) get it as their argument. It holds:

- ``folders`` (input/output/temp) and ``models`` (the model folders, ``nodes.models.folders``);
- ``settings``: where and in which precision models run (``DeviceSettings``, from the
  flags in ``nodes.sd.runtime_flags``);
- on CUDA, ``device_models``: the manager that keeps the models about to run on the GPU
  (``nodes.sd.memory``), made by ``start()``.

Building a runtime imports no torch (validation and ``/object_info`` use it); ``start()``,
which the engine calls before the first prompt runs, does.

Every model handle (checkpoint UNet, CLIP, VAE, LoRA-patched handles, upscale models, and
any new kind) follows ``ModelHandle``: the output cache keeps it in its ``cache_pool``
(``POST /free {"unload_models": true}`` and ``--model-cache-budget`` act on that pool),
``size_bytes()`` is what it adds to memory, ``modules()`` what must be on its device to run
it. A node runs a handle inside ``with runtime.placed(handle, working_bytes=...)``.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from graph.context import Folders
from nodes.models.folders import ModelFolders

if TYPE_CHECKING:
    import torch

    from nodes.sd.memory import DeviceModels

log = logging.getLogger("latentgraph.runtime")


@runtime_checkable
class ModelHandle(Protocol):
    """The protocol of every loaded-model value (MODEL, CLIP, VAE, UPSCALE_MODEL, ...)."""

    cache_pool: ClassVar[str]  # the output cache's pool for it: "models"
    device: Any  # the torch.device it runs on

    def modules(self) -> tuple[Any, ...]:
        """The torch modules that must be on ``device`` to run it."""
        ...

    def size_bytes(self) -> int:
        """Bytes it holds beyond what it shares with a handle it was made from."""
        ...


@dataclass(frozen=True)
class DeviceSettings:
    """Where and in which precision models run.

    Dtypes are names ("fp32", "fp16", "bf16"), torch dtypes, or None for the default
    (fp16 on a GPU, fp32 on the CPU). ``dtype`` applies to every part; ``unet_dtype``,
    ``vae_dtype`` and ``text_enc_dtype`` override one. ``device`` forces a device ("cpu",
    "cuda"); None picks the best one (the CPU with ``force_cpu``). ``keep_file_precision``
    names the checkpoint parts whose weights stay in the file's narrower dtype (None: all
    of them). ``reserve_vram``: bytes kept free on the GPU (None: the manager's default).
    """

    force_cpu: bool = False
    device: Any = None
    dtype: Any = None
    unet_dtype: Any = None
    vae_dtype: Any = None
    text_enc_dtype: Any = None
    keep_file_precision: tuple[str, ...] | None = None
    reserve_vram: int | None = None


@dataclass
class Runtime:
    """Folders, model folders, device settings and (on CUDA) the GPU's model manager."""

    folders: Folders = field(default_factory=Folders)
    models: ModelFolders = field(default_factory=ModelFolders)
    settings: DeviceSettings = field(default_factory=DeviceSettings)
    device_models: DeviceModels | None = None

    # -- the engine's side (graph.engine.Engine) ------------------------------------------

    def start(self) -> None:
        """Before the first prompt: on CUDA, the manager that keeps VRAM within bounds."""
        import torch

        from nodes.sd.memory import DEFAULT_RESERVE_BYTES, DeviceModels

        if self.device_models is None and torch.cuda.is_available() and not self.settings.force_cpu:
            reserve = self.settings.reserve_vram
            self.device_models = DeviceModels("cuda", reserve_bytes=DEFAULT_RESERVE_BYTES if reserve is None else reserve)

    def run_context(self) -> AbstractContextManager:
        """What each prompt runs under: ``torch.inference_mode`` (no autograd bookkeeping)."""
        import torch

        return torch.inference_mode()

    def release(self, *, unload_models: bool = False) -> None:
        """Hands memory nothing refers to any more back to the system and the GPU driver
        (after POST /free or a failed prompt); ``unload_models`` also forgets the modules the
        GPU manager tracked (the cache has dropped them)."""
        from nodes.sd.host_memory import return_free_memory
        from nodes.sd.memory import empty_device_cache

        if unload_models and self.device_models is not None:
            self.device_models.forget()
        gc.collect()
        return_free_memory()
        try:
            empty_device_cache()
        except Exception:
            log.exception("emptying the device cache failed")

    # -- the nodes' side ----------------------------------------------------------------

    def load_device(self) -> torch.device:
        """The device models load to: ``settings.device``, else the best available."""
        import torch

        from nodes.sd.device import pick_device

        if self.settings.device is not None:
            return torch.device(self.settings.device)
        return pick_device(self.settings.force_cpu)

    def dtype(self, device: torch.device) -> torch.dtype:
        """The dtype of models other than a checkpoint's parts (e.g. upscale models):
        ``settings.dtype`` or the device's default; the per-part settings do not apply."""
        from nodes.sd.device import resolve_dtype

        return resolve_dtype(self.settings.dtype, device)

    def part_dtypes(self, device: torch.device) -> dict[str, torch.dtype]:
        """The dtype of each checkpoint part, ``{"unet", "vae", "text"}`` (``settings``)."""
        from nodes.sd.device import resolve_dtype

        base = resolve_dtype(self.settings.dtype, device)

        def part(value: Any) -> torch.dtype:
            return resolve_dtype(value, device) if value else base

        return {"unet": part(self.settings.unet_dtype), "vae": part(self.settings.vae_dtype),
                "text": part(self.settings.text_enc_dtype)}

    def keep_file_precision(self) -> tuple[str, ...]:
        """The checkpoint parts whose weight matrices stay in the file's dtype when it is
        narrower than the compute dtype, cast layer by layer (``nodes.models.cast_weights``)."""
        from nodes.models.loader import PARTS

        value = self.settings.keep_file_precision
        return PARTS if value is None else tuple(value)

    @contextmanager
    def placed(self, *handles: ModelHandle, working_bytes: int = 0) -> Iterator[None]:
        """Runs the body with the handles' modules on their device.

        On CUDA the manager first moves the least recently used other modules to the CPU
        when free VRAM is below the modules' size plus ``working_bytes`` (the caller's
        estimate of its computation's memory) plus the reserve. Elsewhere it does nothing.
        The modules stay on the GPU afterwards, for the next node that uses them.
        """
        if self.device_models is not None:
            modules = [module for handle in handles if getattr(handle.device, "type", handle.device) == "cuda"
                       for module in handle.modules()]
            if modules:
                self.device_models.use(modules, working_bytes)
        yield


def runtime_of(context: Any) -> Runtime:
    """The runtime a node's context carries (a default one, over ``models/``, when it has none)."""
    runtime = getattr(context, "runtime", None)
    return runtime if isinstance(runtime, Runtime) else Runtime()
