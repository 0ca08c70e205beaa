"""The node registry: built-in nodes plus plugins from a ``custom_nodes/`` folder.

Built-in nodes come from a package (``nodes`` by default) whose modules declare
``Node`` subclasses. A plugin is one module (``custom_nodes/foo.py``) or package
(``custom_nodes/foo/__init__.py``); it exports its nodes as ``NODES = [...]``, or, as
ComfyUI plugins do, ``NODE_CLASS_MAPPINGS = {name: cls}`` of our ``Node`` classes.
A plugin that fails to import is reported with its traceback and skipped; so is one
that calls ``sys.exit`` while importing, or (with an import timeout) one that hangs.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
import threading
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from graph.node import Node, NodeDefinition, definition_of


@dataclass
class PluginFailure:
    """A plugin that could not be loaded, with the reason and traceback text."""

    name: str
    path: str
    message: str
    traceback: str


@dataclass
class NodeRegistry:
    """The catalogue of node definitions by name: built-ins, then plugins.

    ``known_names`` and ``known_aliases`` give a class that does not name itself the display
    name and search words it is known by (a node package's ``DISPLAY_NAMES`` and
    ``SEARCH_ALIASES``: for Latentgraph's, ComfyUI's names), whichever package registers it.
    """

    definitions: dict[str, NodeDefinition] = field(default_factory=dict)
    known_names: dict[str, str] = field(default_factory=dict)
    known_aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    builtin_names: set[str] = field(default_factory=set)
    plugin_failures: list[PluginFailure] = field(default_factory=list)
    loaded_plugins: list[str] = field(default_factory=list)

    def register(self, cls: type[Node], *, builtin: bool = False, name: str | None = None) -> NodeDefinition:
        """Adds a node class. A plugin may not replace a built-in node."""
        if not (isinstance(cls, type) and issubclass(cls, Node)):
            raise TypeError(f"{cls!r} is not a Node subclass")
        definition = definition_of(cls)
        key = name or definition.name
        if cls.display_name is None and definition.name in self.known_names:
            definition = replace(definition, display_name=self.known_names[definition.name])
        if not cls.search_aliases and definition.name in self.known_aliases:
            definition = replace(definition, search_aliases=tuple(self.known_aliases[definition.name]))
        if key in self.builtin_names:
            raise ValueError(f"node {key!r} is built in and cannot be replaced")
        self.definitions[key] = definition
        if builtin:
            self.builtin_names.add(key)
        return definition

    def get(self, name: str) -> NodeDefinition | None:
        return self.definitions.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self.definitions

    def object_info(self, runtime: Any = None) -> dict[str, Any]:
        """The whole ``GET /object_info`` document; ``runtime`` feeds computed combo choices."""
        return {name: definition.object_info(runtime) for name, definition in sorted(self.definitions.items())}

    def load_package(self, package: str) -> None:
        """Registers every Node subclass defined in the top-level modules of a package (built-ins)."""
        root = importlib.import_module(package)
        self.known_names.update(getattr(root, "DISPLAY_NAMES", {}))
        self.known_aliases.update(getattr(root, "SEARCH_ALIASES", {}))
        modules = [root]
        if hasattr(root, "__path__"):
            # Only the package's own modules declare nodes; its subpackages are support
            # libraries (model loading, samplers) that nodes import lazily, so that listing
            # nodes never imports torch.
            for info in pkgutil.iter_modules(root.__path__, prefix=f"{package}."):
                if not info.ispkg:
                    modules.append(importlib.import_module(info.name))
        for module in modules:
            for cls in _declared_nodes(module):
                if definition_of(cls).name not in self.builtin_names:
                    self.register(cls, builtin=True)

    def load_plugins(self, folder: str | Path, import_timeout: float | None = None) -> None:
        """Loads each plugin in ``folder``; failures are recorded, never raised.

        With ``import_timeout`` (seconds), each plugin is imported on a thread of its own
        and skipped if its import has not finished in time (the thread is left behind: a
        Python thread cannot be stopped, but it no longer holds up start-up).
        """
        folder = Path(folder)
        if not folder.is_dir():
            return
        for path in sorted(folder.iterdir()):
            if path.name.startswith((".", "_")):
                continue
            if path.is_dir() and (path / "__init__.py").is_file():
                entry = path / "__init__.py"
            elif path.suffix == ".py" and path.is_file():
                entry = path
            else:
                continue
            self._load_plugin(path.stem if path.is_file() else path.name, entry, import_timeout)

    def _load_plugin(self, name: str, entry: Path, import_timeout: float | None = None) -> None:
        module_name = f"latentgraph_plugins.{name}"
        try:
            module = _import_plugin(module_name, entry, import_timeout)
            classes = _exported_nodes(module)
            # Check every class before registering any, so a bad plugin adds nothing.
            for node_name, cls in classes:
                if node_name in self.builtin_names:
                    raise ValueError(f"node {node_name!r} is built in and cannot be replaced by a plugin")
                if not (isinstance(cls, type) and issubclass(cls, Node)):
                    raise TypeError(f"{node_name!r} is not a latentgraph Node class")
            for node_name, cls in classes:
                self.register(cls, name=node_name)
            self.loaded_plugins.append(name)
        except BaseException as exc:  # a broken plugin, even one calling sys.exit, must not stop the others
            if isinstance(exc, KeyboardInterrupt):
                raise
            sys.modules.pop(module_name, None)
            self.plugin_failures.append(
                PluginFailure(name, str(entry), f"{type(exc).__name__}: {exc}", traceback.format_exc())
            )


def _import_plugin(module_name: str, entry: Path, timeout: float | None) -> ModuleType:
    """Executes a plugin's module; raises what its import raised, or TimeoutError."""
    spec = importlib.util.spec_from_file_location(
        module_name, entry, submodule_search_locations=[str(entry.parent)] if entry.name == "__init__.py" else None
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {entry}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    if timeout is None:
        spec.loader.exec_module(module)
        return module
    failure: list[BaseException] = []

    def run() -> None:
        try:
            spec.loader.exec_module(module)
        except BaseException as exc:  # handed to the loading thread
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"import {module_name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"importing the plugin took longer than {timeout:g} s; skipped (it may still be running)")
    if failure:
        raise failure[0]
    return module


def build_registry(
    builtin_package: str | Sequence[str] | None = "nodes",
    plugin_folder: str | Path | None = "custom_nodes",
    *,
    disable_plugins: bool = False,
    extra: Iterable[type[Node]] = (),
    import_timeout: float | None = None,
) -> NodeRegistry:
    """Builds the registry of the CLI and the server: the built-in package(s), then the
    plugins of ``plugin_folder`` (each import bounded by ``import_timeout`` seconds)."""
    registry = NodeRegistry()
    packages = [builtin_package] if isinstance(builtin_package, str) else list(builtin_package or ())
    for package in packages:
        registry.load_package(package)
    for cls in extra:
        registry.register(cls, builtin=True)
    if plugin_folder is not None and not disable_plugins:
        registry.load_plugins(plugin_folder, import_timeout)
    return registry


def _declared_nodes(module: ModuleType) -> list[type[Node]]:
    """Node subclasses defined (not merely imported) in a module, in source order."""
    return [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, Node)
        and value is not Node
        and value.__module__ == module.__name__
        and not value.__name__.startswith("_")
        and value.__dict__.get("abstract", False) is False
    ]


def _exported_nodes(module: ModuleType) -> list[tuple[str, Any]]:
    mapping = getattr(module, "NODE_CLASS_MAPPINGS", None)
    if isinstance(mapping, dict):
        return list(mapping.items())
    nodes = getattr(module, "NODES", None)
    if nodes is None:
        raise ValueError("plugin exports neither NODES nor NODE_CLASS_MAPPINGS")
    return [(definition_of(cls).name if isinstance(cls, type) and issubclass(cls, Node) else repr(cls), cls)
            for cls in nodes]
