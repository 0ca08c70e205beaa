"""Model folders: the models directory plus those named in extra_model_paths.yaml files.

The YAML format is ComfyUI's: each top-level section may set ``base_path`` and maps
folder names (``checkpoints``, ``loras``...) to one path or several, one per line,
relative to ``base_path``.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("latentgraph.models")

STANDARD_FOLDERS = ("checkpoints", "loras", "vae", "upscale_models", "embeddings")
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")


def model_folders(models_directory: Path, extra_configs: list[Path]) -> dict[str, list[Path]]:
    """Folder name -> directories to search, the models directory's own first."""
    folders: dict[str, list[Path]] = {name: [models_directory / name] for name in STANDARD_FOLDERS}
    if models_directory.is_dir():
        for child in sorted(models_directory.iterdir()):
            if child.is_dir() and not child.name.startswith("."):
                folders.setdefault(child.name, [child])
    for config in extra_configs:
        for name, paths in read_extra_paths(config).items():
            folders.setdefault(name, []).extend(p for p in paths if p not in folders[name])
    return folders


def read_extra_paths(config: Path) -> dict[str, list[Path]]:
    """Parses one extra_model_paths.yaml; an unreadable file is logged and ignored."""
    import yaml

    try:
        document = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        log.warning("cannot read %s: %s", config, exc)
        return {}
    found: dict[str, list[Path]] = {}
    if not isinstance(document, dict):
        return found
    for section in document.values():
        if not isinstance(section, dict):
            continue
        base = Path(str(section.get("base_path", ""))).expanduser()
        if not base.is_absolute():
            base = config.parent / base
        for name, value in section.items():
            if name in ("base_path", "is_default") or value is None:
                continue
            for line in str(value).splitlines():
                if line.strip():
                    found.setdefault(str(name), []).append(base / line.strip())
    return found


def list_models(directories: list[Path], suffixes: tuple[str, ...] | None = MODEL_SUFFIXES) -> list[str]:
    """Relative file names (with '/' separators) found under ``directories``, sorted."""
    names: set[str] = set()
    for directory in directories:
        if not directory.is_dir():
            continue
        for path in directory.rglob("*"):
            if path.is_file() and not path.name.startswith(".") and (
                    suffixes is None or path.suffix.lower() in suffixes):
                names.add(path.relative_to(directory).as_posix())
    return sorted(names)
