"""The headless interface: ``python -m graph run|validate|nodes|convert``.

It builds one ``Engine`` over the nodes package's registry and runtime: the package
(``--nodes-package``, default ``nodes``) may provide ``add_runtime_flags(parser)`` (its
device flags on ``run``), ``make_runtime(folders, args=...)`` (which reads the model folders
from ``args.models_directory`` and ``args.extra_model_paths_config``) and ``tune_process()``
(process set-up before any thread starts).

Models are found as the server finds them: ``--models-directory`` (default: the
installation's ``models/``, wherever the command runs) plus ``--extra-model-paths-config``
files and the installation's own ``extra_model_paths.yaml`` when there is one.

Exit codes of ``run``: 0 success, 1 invalid workflow (per-node errors printed),
2 a node failed, 130 interrupted with Ctrl+C.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

from graph.cache import DEFAULT_BUDGET_BYTES, OutputCache
from graph.context import Folders
from graph.engine import Engine
from graph.executor import ExecutionResult
from graph.preparation import parse_workflow
from graph.registry import NodeRegistry, build_registry
from graph.ui_format import is_ui_format, ui_to_api
from graph.validate import ValidationResult

# The installation (the folder holding graph/): default model folders are found from here,
# not from the working directory, as the server does (latentgraph_server/config.py).
INSTALL_ROOT = Path(__file__).resolve().parent.parent

EXIT_INVALID = 1
EXIT_NODE_FAILED = 2
EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    package = importlib.import_module(_nodes_package(argv))
    args = _parser(package).parse_args(argv)
    tune_process = getattr(package, "tune_process", None)
    if callable(tune_process):
        tune_process()
    registry = build_registry(args.nodes_package, args.custom_nodes, disable_plugins=args.disable_all_custom_nodes)
    for failure in registry.plugin_failures:
        print(f"warning: plugin {failure.name} failed to load and was skipped:\n{failure.traceback}", file=sys.stderr)
    return args.handler(args, registry, package)


def _nodes_package(argv: list[str] | None) -> str:
    """The ``--nodes-package`` value, read before the full parser (whose flags it adds)."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--nodes-package", default="nodes")
    return early.parse_known_args(argv)[0].nodes_package


def _engine(package: ModuleType, registry: NodeRegistry, args: argparse.Namespace, cache_budget: int = 0) -> Engine:
    """The one engine of this process, over the package's runtime (when it makes one)."""
    folders = Folders(args.input_directory, args.output_directory, args.temp_directory)
    _model_configs(args)
    make_runtime = getattr(package, "make_runtime", None)
    try:
        runtime = make_runtime(folders, args=args) if callable(make_runtime) else None
    except (OSError, ValueError) as exc:  # an unreadable or malformed extra_model_paths.yaml
        raise SystemExit(f"error: cannot read the model folders: {exc}") from exc
    return Engine(registry, runtime, cache=OutputCache(cache_budget), folders=folders)


def _model_configs(args: argparse.Namespace) -> None:
    """Puts the installation's own extra_model_paths.yaml (when present) before the given
    ones, as the server does, and refuses a given one that does not exist."""
    given = list(getattr(args, "extra_model_paths_config", None) or [])
    for path in given:
        if not path.is_file():
            raise SystemExit(f"error: --extra-model-paths-config {path}: no such file")
    own = INSTALL_ROOT / "extra_model_paths.yaml"
    args.extra_model_paths_config = [*([own] if own.is_file() and own not in given else []), *given]


def _parser(package: ModuleType | None = None) -> argparse.ArgumentParser:
    """The CLI's parser; ``package`` (default: the ``nodes`` package) may add its runtime flags."""
    if package is None:
        package = importlib.import_module("nodes")
    parser = argparse.ArgumentParser(prog="python -m graph", description="Run and inspect Latentgraph workflows.")
    parser.add_argument("--nodes-package", default="nodes", help="package of built-in nodes (default: nodes)")
    parser.add_argument("--custom-nodes", default="custom_nodes", help="plugin folder (default: custom_nodes)")
    parser.add_argument("--disable-all-custom-nodes", action="store_true", help="load no plugins")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="validate and run a workflow (API or UI format)")
    run.add_argument("workflow", type=Path)
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE_ID.INPUT=VALUE",
                     help="override an input; VALUE is read as JSON, else as a string")
    _add_folder_flags(run)
    run.add_argument("--cache-budget", type=int, default=DEFAULT_BUDGET_BYTES, help="output cache size in bytes")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    add_runtime_flags = getattr(package, "add_runtime_flags", None)
    if callable(add_runtime_flags):
        add_runtime_flags(run)
    run.set_defaults(handler=_run)

    validate = commands.add_parser("validate", help="check a workflow without running it")
    validate.add_argument("workflow", type=Path)
    _add_folder_flags(validate)
    validate.set_defaults(handler=_validate)

    nodes = commands.add_parser("nodes", help="list the available nodes")
    nodes.add_argument("--json", action="store_true", help="print the /object_info document")
    nodes.set_defaults(handler=_nodes)

    convert = commands.add_parser("convert", help="print the API format of a UI-format workflow")
    convert.add_argument("workflow", type=Path)
    convert.set_defaults(handler=_convert)
    return parser


def _add_folder_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-directory", type=Path, default=Path("output"))
    parser.add_argument("--input-directory", type=Path, default=Path("input"))
    parser.add_argument("--temp-directory", type=Path, default=Path("temp"))
    parser.add_argument("--models-directory", type=Path, default=INSTALL_ROOT / "models",
                        help=f"model folders (default: the installation's, {INSTALL_ROOT / 'models'})")
    parser.add_argument("--extra-model-paths-config", type=Path, action="append", default=[], metavar="PATH",
                        help="extra_model_paths.yaml naming more model folders (repeatable)")


def _load_document(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SystemExit(f"error: cannot read workflow {path}: {exc}") from exc


def apply_overrides(document: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Applies ``NODE_ID.INPUT=VALUE`` overrides to an API-format document (a copy)."""
    document = {node_id: dict(node, inputs=dict(node.get("inputs", {}))) if isinstance(node, dict) else node
                for node_id, node in document.items()}
    for item in overrides:
        target, sep, raw = item.partition("=")
        node_id, dot, input_name = target.partition(".")
        if not sep or not dot or not node_id or not input_name:
            raise SystemExit(f"error: --set expects NODE_ID.INPUT=VALUE, got {item!r}")
        if not isinstance(document.get(node_id), dict):
            raise SystemExit(f"error: --set {item!r}: there is no node {node_id!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        document[node_id]["inputs"][input_name] = {"__value__": value} if isinstance(value, list) else value
    return document


def print_validation_errors(checked: ValidationResult, stream: TextIO) -> None:
    error = checked.error or {}
    print(f"invalid workflow: {error.get('message', 'validation failed')}", file=stream)
    if error.get("details"):
        print(f"  {error['details']}", file=stream)
    for node_id, entry in checked.node_errors.items():
        print(f"  node {node_id} ({entry['class_type'] or '?'}):", file=stream)
        for problem in entry["errors"]:
            name = problem["extra_info"].get("input_name")
            where = f"input {name!r}: " if name else ""
            print(f"    - {where}{problem['message']} [{problem['type']}]", file=stream)


def _run(args: argparse.Namespace, registry: NodeRegistry, package: ModuleType) -> int:
    document = _load_document(args.workflow)
    if args.overrides:
        if is_ui_format(document):
            document = ui_to_api(document, registry)
        if not isinstance(document, dict):
            raise SystemExit("error: --set needs a workflow that is a JSON object")
        document = apply_overrides(document, args.overrides)
    engine = _engine(package, registry, args, args.cache_budget)
    checked = engine.prepare(document)
    if not checked.ok:
        print_validation_errors(checked, sys.stderr)
        return EXIT_INVALID
    extra_data = {"extra_pnginfo": {"workflow": document}} if is_ui_format(document) else {}
    progress = _ProgressPrinter(checked.plan.workflow, sys.stderr, quiet=args.quiet)
    interrupt = threading.Event()
    outcome: list[ExecutionResult] = []
    worker = threading.Thread(
        target=lambda: outcome.append(engine.execute(checked.plan, on_event=progress, interrupt=interrupt,
                                                     extra_data=extra_data)),
        name="latentgraph-cli", daemon=True,
    )
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.1)
    except KeyboardInterrupt:
        interrupt.set()
        worker.join()
    result = outcome[0]
    for path in output_files(result, engine.folders):
        print(path)
    if result.status == "error":
        error = result.error or {}
        print(f"node {error.get('node_id')} ({error.get('node_type')}) failed: {error.get('exception_message')}",
              file=sys.stderr)
        print("".join(error.get("traceback", [])), file=sys.stderr)
        return EXIT_NODE_FAILED
    if result.status == "interrupted":
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def output_files(result: ExecutionResult, folders: Folders) -> list[Path]:
    """Paths of the files that output nodes report in their UI payloads."""
    roots = {"output": folders.output, "temp": folders.temp, "input": folders.input}
    paths = []
    for ui in result.outputs.values():
        for key in ("images", "files", "gifs", "audio"):
            for item in ui.get(key) or []:
                if isinstance(item, dict) and "filename" in item:
                    root = roots.get(item.get("type", "output"), folders.output)
                    paths.append(root / item.get("subfolder", "") / item["filename"])
    return paths


class _ProgressPrinter:
    """Turns engine events into a compact progress display on a terminal stream."""

    def __init__(self, workflow: Any, stream: TextIO, quiet: bool = False) -> None:
        self.workflow = workflow
        self.stream = stream
        self.quiet = quiet
        self.bar_open = False

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if self.quiet:
            return
        if event == "executing" and data.get("node") is not None:
            self._end_bar()
            node_id = data["node"]
            print(f"▸ {node_id} {self.workflow.nodes[node_id].class_type}", file=self.stream)
        elif event == "progress":
            total = max(int(data["max"]), 1)
            filled = int(30 * data["value"] / total)
            self.stream.write(f"\r  [{'#' * filled}{'.' * (30 - filled)}] {data['value']}/{total}")
            self.stream.flush()
            self.bar_open = True
        elif event == "execution_cached" and data["nodes"]:
            print(f"cached: {', '.join(data['nodes'])}", file=self.stream)
        elif event in ("execution_success", "execution_error", "execution_interrupted"):
            self._end_bar()

    def _end_bar(self) -> None:
        if self.bar_open:
            self.stream.write("\n")
            self.bar_open = False


def _validate(args: argparse.Namespace, registry: NodeRegistry, package: ModuleType) -> int:
    checked = _engine(package, registry, args).prepare(_load_document(args.workflow))
    if not checked.ok:
        print_validation_errors(checked, sys.stdout)
        return EXIT_INVALID
    print(f"ok: {len(checked.plan.order)} node(s) to run for output(s) {', '.join(checked.plan.outputs)}")
    return 0


def _nodes(args: argparse.Namespace, registry: NodeRegistry, package: ModuleType) -> int:
    if args.json:
        json.dump(registry.object_info(), sys.stdout, indent=1)
        print()
        return 0
    for name, definition in sorted(registry.definitions.items(), key=lambda kv: (kv[1].category, kv[0])):
        print(f"{definition.category or '-':<24} {name}")
    return 0


def _convert(args: argparse.Namespace, registry: NodeRegistry, package: ModuleType) -> int:
    document = _load_document(args.workflow)
    if not is_ui_format(document):
        raise SystemExit("error: not a UI-format workflow (expected 'nodes' and 'links')")
    workflow = parse_workflow(document, registry)
    json.dump(workflow.to_api(), sys.stdout, indent=2)
    print()
    return 0
