"""Where model files live: ``models/<kind>/`` plus folders named in ``extra_model_paths.yaml``.

Kinds follow ComfyUI's folder names (``checkpoints``, ``loras``, ``vae``,
``upscale_models``, ``embeddings``, ...). Loader nodes list a kind's files for their combo
choices and resolve a chosen name to a path that must stay inside one of the kind's
folders. The application's runtime (``nodes.sd.runtime.Runtime``) holds one as ``models``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graph.paths import UnsafePathError, join_following_links, list_files

KINDS = ("checkpoints", "loras", "vae", "upscale_models", "embeddings", "text_encoders", "diffusion_models",
         "controlnet", "clip_vision", "style_models")
# ComfyUI's folder_paths reads these kinds from two folders each, one under the kind's former
# name, in this order; the former names mean the kind (its map_legacy: "unet" ->
# "diffusion_models", "clip" -> "text_encoders"), also as keys of extra_model_paths.yaml.
COMBINED_FOLDERS = {"diffusion_models": ("unet", "diffusion_models"), "text_encoders": ("text_encoders", "clip")}
LEGACY_KINDS = {"unet": "diffusion_models", "clip": "text_encoders"}


def canonical_kind(kind: str) -> str:
    """ComfyUI's name for a kind (``"unet"`` -> ``"diffusion_models"``, ``"clip"`` -> ``"text_encoders"``)."""
    return LEGACY_KINDS.get(kind, kind)
MODEL_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin")


@dataclass
class ModelFolders:
    """The folders searched for each kind of model, in priority order.

    A model is a file with a model extension or a diffusers-format folder. Symlinks in
    these folders are followed, as in ComfyUI (users link models kept on another disk):
    what is listed is what loads.
    """

    root: Path = Path("models")
    extra: dict[str, list[Path]] = field(default_factory=dict)

    @classmethod
    def from_configs(cls, root: str | Path, extra_configs: list[Path]) -> ModelFolders:
        """The models folder plus every folder named in some ``extra_model_paths.yaml`` files."""
        extra: dict[str, list[Path]] = {}
        for config in extra_configs:
            for kind, paths in load_extra_model_paths(config).items():
                extra.setdefault(kind, []).extend(p for p in paths if p not in extra[kind])
        return cls(Path(root), extra)

    def folders(self, kind: str) -> list[Path]:
        """A kind's folders, in priority order: ``models/<kind>`` (for ``diffusion_models`` and
        ``text_encoders`` also their former names' folders, as ComfyUI: ``unet`` and ``clip``,
        either name giving the same list), then the extra folders."""
        kind = canonical_kind(kind)
        names = COMBINED_FOLDERS.get(kind, (kind,))
        extra = [folder for name in (kind, *[n for n in LEGACY_KINDS if LEGACY_KINDS[n] == kind])
                 for folder in self.extra.get(name, [])]
        return [*(Path(self.root) / name for name in names), *dict.fromkeys(extra)]

    def kinds(self) -> list[str]:
        """The standard kinds, the subfolders of the models folder, and the extra kinds, by
        ComfyUI's names (a ``models/unet`` folder is the ``diffusion_models`` kind)."""
        found = set(KINDS) | set(self.extra)
        if Path(self.root).is_dir():
            found.update(p.name for p in Path(self.root).iterdir() if p.is_dir() and not p.name.startswith("."))
        return sorted({canonical_kind(kind) for kind in found})

    def list(self, kind: str, extensions: tuple[str, ...] = MODEL_EXTENSIONS) -> list[str]:
        """Model files of a kind, as names relative to their folder ("sub/name.safetensors")."""
        names: set[str] = set()
        for folder in self.folders(kind):
            bundles = [name[:-len("model_index.json")] for name in list_files(folder, (".json",), follow_links=True)
                       if name.endswith("/model_index.json")]
            # A diffusers folder is one model: list it, not the weight files inside it.
            names.update(name[:-1] for name in bundles)
            names.update(name for name in list_files(folder, extensions, follow_links=True)
                         if not name.startswith(tuple(bundles)))
        return sorted(names)

    def resolve(self, kind: str, name: str) -> Path:
        """The path of a listed model file; raises FileNotFoundError or UnsafePathError."""
        for folder in self.folders(kind):
            path = join_following_links(folder, name)
            if path.is_file() or _is_diffusers_folder(path):
                return path
        raise FileNotFoundError(f"no {kind} model named {name!r} in {', '.join(map(str, self.folders(kind)))}")


def _is_diffusers_folder(path: Path) -> bool:
    """A diffusers-format model folder (``model_index.json`` beside ``unet/`` etc.) counts as one model."""
    return (path / "model_index.json").is_file()


def no_checkpoint_warning(models: ModelFolders) -> str | None:
    """A start-up warning naming where checkpoints were looked for, when none was found
    (a server started with the wrong folders would otherwise just show empty lists)."""
    if models.list("checkpoints"):
        return None
    searched = ", ".join(str(Path(folder).resolve()) for folder in models.folders("checkpoints"))
    return (f"no checkpoint found (looked in {searched}): put a .safetensors checkpoint there, or start the "
            f"server with --base-directory, --models-directory or --extra-model-paths-config naming your models")


def models_of(runtime: Any) -> ModelFolders:
    """The runtime's model folders (the default ``models/`` when there is no runtime)."""
    folders = getattr(runtime, "models", None)
    return folders if isinstance(folders, ModelFolders) else ModelFolders()


def model_choices(kind: str):
    """A ``choices`` callable for loader inputs: the files of ``kind`` in the model folders."""
    def choices(runtime: Any) -> list[str]:
        return models_of(runtime).list(kind)
    return choices


def load_extra_model_paths(path: str | Path) -> dict[str, list[Path]]:
    """Reads ComfyUI's ``extra_model_paths.yaml``.

    Each top-level section may set ``base_path``; every other key names a kind and holds
    one folder or several, one per line, relative to ``base_path``.
    """
    import yaml

    config = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a mapping of sections")
    extra: dict[str, list[Path]] = {}
    for section_name, section in config.items():
        if not isinstance(section, dict):
            raise ValueError(f"{path}: section {section_name!r} must be a mapping")
        base = Path(str(section.get("base_path", ""))).expanduser()
        if not base.is_absolute():
            base = Path(path).parent / base
        for kind, value in section.items():
            if kind in ("base_path", "is_default") or value is None:
                continue
            for line in str(value).splitlines():
                if line.strip():
                    extra.setdefault(str(kind), []).append(base / line.strip())
    return extra


__all__ = ["KINDS", "MODEL_EXTENSIONS", "ModelFolders", "UnsafePathError", "load_extra_model_paths",
           "model_choices", "models_of", "no_checkpoint_warning"]
