"""Model memory on CUDA: keep the model about to run on the GPU, moving others to the CPU.

Loaded models stay across prompts in the output cache (keyed by the file's path, size and
mtime through the loader's fingerprint), count toward its ``"models"`` pool budget, and
are dropped by POST /free ``{"unload_models": true}``. That part is device-independent.

This module adds the CUDA part. ``DeviceModels`` tracks the model modules it has put on
the GPU and when each was last used. Before a node runs a model, the runtime's ``placed``
(``nodes.sd.runtime``) calls ``use``: if free VRAM is below what is needed (the weights not yet on the GPU, plus the node's
estimate of its working memory, plus a reserve), the least recently used *other* modules
are moved to the CPU until it fits; then the model's modules are moved to the GPU.
Modules moved to the CPU come back the same way the next time a node uses them. If
everything else is offloaded and it still does not fit, the node runs anyway and CUDA
reports the out-of-memory error. On the CPU (or MPS) the runtime has no manager.

The policy (``choose_offload``, ``DeviceModels.use``) is unit-tested with fake modules;
the CUDA path itself has not been run on a GPU.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from nodes.memory_estimates import UNET_ACTIVATIONS_PER_LATENT_ELEMENT, VAE_ACTIVATIONS_PER_PIXEL
from nodes.sd.handles import module_bytes

DEFAULT_RESERVE_BYTES = 512 * 1024**2


def choose_offload(resident: Iterable[tuple[Hashable, int, int]], shortfall: int) -> list[Hashable]:
    """Which modules to move off the GPU to free ``shortfall`` bytes.

    ``resident`` lists ``(key, size_bytes, last_used)`` of the candidates (modules on the
    GPU that the next node does not need). Least recently used first, and no more than
    needed; when all of them are not enough, all of them.
    """
    chosen: list[Hashable] = []
    freed = 0
    for key, size, _ in sorted(resident, key=lambda item: item[2]):
        if freed >= shortfall:
            break
        chosen.append(key)
        freed += size
    return chosen


@dataclass
class _Tracked:
    ref: weakref.ref
    size: int
    last_used: int


class DeviceModels:
    """The model modules on one GPU, least recently used first out when VRAM runs short.

    The torch operations are parameters so that the policy can be tested without a GPU:
    ``free_bytes()`` (memory a new allocation can use), ``size_of(module)``,
    ``is_on(module, device)``, ``move(module, device)``, ``empty_cache()``.
    """

    def __init__(self, device: torch.device | str, *, reserve_bytes: int = DEFAULT_RESERVE_BYTES,
                 free_bytes: Callable[[], int] | None = None,
                 size_of: Callable[[Any], int] | None = None,
                 is_on: Callable[[Any, torch.device], bool] | None = None,
                 move: Callable[[Any, torch.device], Any] | None = None,
                 empty_cache: Callable[[], None] | None = None) -> None:
        self.device = torch.device(device)
        self.reserve_bytes = reserve_bytes
        self._free_bytes = free_bytes or (lambda: cuda_free_bytes(self.device))
        self._size_of = size_of or module_bytes
        self._is_on = is_on or module_is_on
        self._move = move or (lambda module, device: module.to(device))
        self._empty_cache = empty_cache or torch.cuda.empty_cache
        self._tracked: dict[int, _Tracked] = {}
        self._clock = 0
        self._lock = threading.Lock()

    def use(self, modules: Iterable[Any], working_bytes: int = 0) -> list[Any]:
        """Puts ``modules`` on the GPU, first offloading others if VRAM is short.

        ``working_bytes``: the caller's estimate of the memory its computation needs
        besides the weights. Returns the modules moved to the CPU.
        """
        modules = [module for module in modules if module is not None]
        with self._lock:
            self._clock += 1
            for module in modules:
                self._track(module).last_used = self._clock
            missing = [module for module in modules if not self._is_on(module, self.device)]
            needed = sum(self._size_of(module) for module in missing) + working_bytes + self.reserve_bytes
            offloaded = self._make_room(needed, {id(module) for module in modules})
            for module in missing:
                self._move(module, self.device)
        return offloaded

    def forget(self) -> None:
        """Stops tracking every module (after POST /free unloads the models)."""
        with self._lock:
            self._tracked.clear()

    def resident(self) -> list[Any]:
        """The tracked modules now on the GPU, least recently used first."""
        with self._lock:
            entries = sorted(self._tracked.values(), key=lambda t: t.last_used)
            modules = [t.ref() for t in entries]
        return [m for m in modules if m is not None and self._is_on(m, self.device)]

    def _make_room(self, needed: int, keep: set[int]) -> list[Any]:
        free = self._free_bytes()
        if free >= needed:
            return []
        candidates = []
        for key, tracked in list(self._tracked.items()):
            module = tracked.ref()
            if key not in keep and module is not None and self._is_on(module, self.device):
                candidates.append((key, tracked.size, tracked.last_used))
        offloaded = []
        for key in choose_offload(candidates, needed - free):
            module = self._tracked[key].ref()
            if module is not None:
                self._move(module, torch.device("cpu"))
                offloaded.append(module)
        if offloaded:
            self._empty_cache()
        return offloaded

    def _track(self, module: Any) -> _Tracked:
        key = id(module)
        tracked = self._tracked.get(key)
        if tracked is None or tracked.ref() is not module:
            tracked = _Tracked(weakref.ref(module, lambda _, key=key: self._tracked.pop(key, None)),
                               self._size_of(module), 0)
            self._tracked[key] = tracked
        return tracked


def sampling_working_bytes(latent_shape: tuple[int, ...], dtype: torch.dtype) -> int:
    """A rough estimate of the UNet's working memory for a latent ``[B, C, h, w]``.

    Classifier-free guidance doubles the batch; attention and activations need on the order
    of a few thousand bytes per latent element and byte of dtype (about 0.3 GB for one
    512x512 SD1 image in fp16). A heuristic, not a measurement.
    """
    elements = 1
    for size in latent_shape:
        elements *= int(size)
    element_size = torch.empty((), dtype=dtype).element_size()
    return elements * UNET_ACTIVATIONS_PER_LATENT_ELEMENT * element_size


def vae_working_bytes(latent_shape: tuple[int, ...], dtype: torch.dtype) -> int:
    """A rough estimate of a VAE decode's or encode's working memory for a latent ``[B, C, h, w]``:
    a few full-resolution activations of 128-256 channels (a heuristic)."""
    batch, _channels, height, width = (int(size) for size in latent_shape)
    element_size = torch.empty((), dtype=dtype).element_size()
    return batch * (height * 8) * (width * 8) * VAE_ACTIVATIONS_PER_PIXEL * element_size


def module_is_on(module: Any, device: torch.device) -> bool:
    """Whether a module's weights are on ``device`` (its first parameter decides)."""
    for parameter in module.parameters():
        return parameter.device.type == device.type
    return True


def cuda_free_bytes(device: torch.device) -> int:
    """Memory a new CUDA allocation can use: free on the card plus what torch holds unused."""
    free, _total = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def empty_device_cache() -> None:
    """Returns the memory torch's CUDA allocator holds unused to the driver (no-op without CUDA)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
