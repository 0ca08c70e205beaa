"""A diffusers/transformers ``config.json`` kept beside a weights file.

diffusers and transformers save a part as a folder holding its weights and its
``config.json`` (``unet/``, ``vae/``, ``text_encoder/``...). A weights file picked from such
a folder is built from that config when the file itself carries none (sizes other than
the family's standard ones).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def sibling_config(path: Path, class_names: Sequence[str]) -> dict[str, Any] | None:
    """The diffusers/transformers ``config.json`` next to ``path`` when it describes one of
    ``class_names`` (its ``_class_name`` or ``architectures``), else None."""
    config_path = Path(path).parent / "config.json"
    if not config_path.is_file():
        return None
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    names = {config.get("_class_name"), *(config.get("architectures") or [])}
    return config if names & set(class_names) else None
