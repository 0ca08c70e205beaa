"""GET /system_stats: the machine and its devices, without importing torch at startup."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import Any


def memory() -> tuple[int, int]:
    """(total, available) RAM in bytes; zeros where the platform does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in handle if line.split()[1:]}
        return fields.get("MemTotal", 0), fields.get("MemAvailable", fields.get("MemFree", 0))
    except (OSError, ValueError, IndexError):
        pass
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return pages * size, os.sysconf("SC_AVPHYS_PAGES") * size
    except (ValueError, OSError, AttributeError):
        return 0, 0


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ""


def devices(force_cpu: bool) -> list[dict[str, Any]]:
    """Devices as torch sees them. Imports torch: call it off the event loop."""
    total, free = memory()
    cpu = {"name": "cpu", "type": "cpu", "index": None, "vram_total": total, "vram_free": free,
           "torch_vram_total": 0, "torch_vram_free": 0}
    if force_cpu:
        return [cpu]
    try:
        import torch
    except ImportError:
        return [cpu]
    found = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            free_bytes, total_bytes = torch.cuda.mem_get_info(index)
            found.append({"name": f"cuda:{index} {torch.cuda.get_device_name(index)}", "type": "cuda",
                          "index": index, "vram_total": total_bytes, "vram_free": free_bytes,
                          "torch_vram_total": torch.cuda.memory_reserved(index),
                          "torch_vram_free": torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index)})
    return found or [cpu]


def system_stats(force_cpu: bool, argv: list[str]) -> dict[str, Any]:
    total, free = memory()
    return {
        "system": {
            "os": sys.platform,
            "platform": platform.platform(),
            "ram_total": total,
            "ram_free": free,
            "python_version": sys.version,
            "pytorch_version": package_version("torch"),
            "latentgraph_version": package_version("latentgraph"),
            "embedded_python": False,
            "argv": argv,
        },
        "devices": devices(force_cpu),
    }
