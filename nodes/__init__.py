"""Latentgraph's built-in nodes.

Each top-level module here declares node classes for one stage (``image``, ``latent``,
``sampling``...). Subpackages (``nodes/models``, ``nodes/sampling``, ``nodes/sd``) are the
model plumbing those nodes share; node modules import them, and torch, lazily inside
``execute`` so that listing nodes (``/object_info``) never pays for importing torch.

An application (the CLI, the server) gets the nodes' runtime from here: ``add_runtime_flags``
adds the device and precision flags to its argument parser, ``make_runtime`` builds the
``nodes.sd.runtime.Runtime`` it hands to the engine, ``tune_process`` sets up the process
before any thread starts. ``DISPLAY_NAMES`` and ``SEARCH_ALIASES`` (``nodes/comfy_names.py``)
are the names ComfyUI users know the node classes by, which the registry gives every class
of that name, built in or plugin.
"""

from __future__ import annotations

import argparse

from graph.context import Folders
from nodes.comfy_names import COMFYUI_DISPLAY_NAMES as DISPLAY_NAMES
from nodes.comfy_names import SEARCH_ALIASES
from nodes.models.folders import ModelFolders
from nodes.sd.runtime import DeviceSettings, Runtime


def add_runtime_flags(parser: argparse.ArgumentParser, *, cpu: bool = True) -> None:
    """Adds ``--cpu`` (unless ``cpu=False``), the precision flags and ``--reserve-vram``."""
    from nodes.sd.runtime_flags import add_runtime_flags as add

    add(parser, cpu=cpu)


def make_runtime(folders: Folders, *, models: ModelFolders | None = None,
                 args: argparse.Namespace | None = None, settings: DeviceSettings | None = None) -> Runtime:
    """The runtime over ``folders`` and ``models``, with the device settings given, or read
    from parsed flags (``args``), or the defaults. Without ``models``, the model folders come
    from ``args.models_directory`` and ``args.extra_model_paths_config`` (the CLI's flags)
    when ``args`` has them, else ``models/``."""
    if settings is None and args is not None:
        from nodes.sd.runtime_flags import device_settings

        settings = device_settings(args)
    if models is None and getattr(args, "models_directory", None) is not None:
        models = ModelFolders.from_configs(args.models_directory, list(getattr(args, "extra_model_paths_config", [])))
    return Runtime(folders, models if models is not None else ModelFolders(), settings or DeviceSettings())


def tune_process() -> None:
    """Process set-up before any thread starts: the C allocator's settings (``nodes.sd.host_memory``)."""
    from nodes.sd.host_memory import tune_allocator

    tune_allocator()


__all__ = ["DISPLAY_NAMES", "SEARCH_ALIASES", "add_runtime_flags", "make_runtime", "tune_process"]
