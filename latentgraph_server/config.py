"""Server configuration and its command line (ComfyUI's flag names where one exists)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from graph.cache import DEFAULT_BUDGET_BYTES
from graph.limits import DEFAULT_MAX_NODES, DEFAULT_MAX_SUBGRAPH_INSTANCES, DEFAULT_MAX_TEXT_LENGTH
from latentgraph_server.previews import PREVIEW_METHODS
from nodes.sd.runtime import DeviceSettings
from nodes.sd.runtime_flags import add_runtime_flags, device_settings

MIB = 1024 * 1024
DEFAULT_MAX_UPLOAD_BYTES = 100 * MIB
DEFAULT_MAX_JSON_BYTES = 16 * MIB
DEFAULT_MAX_EXTRA_DATA_BYTES = 8 * MIB
DEFAULT_MEMORY_RESERVE_BYTES = 1024 * MIB
DEFAULT_PLUGIN_IMPORT_TIMEOUT = 30.0
FRONT_ENDS = ("latentgraph", "official")
# The installation (the folder holding server.py). As in ComfyUI, the default folders are
# found from here, not from the working directory, so `python /path/to/server.py` started
# anywhere serves the editor and finds the models; --base-directory moves the data folders.
INSTALL_ROOT = Path(__file__).resolve().parent.parent
# Data folders under the base directory (ComfyUI's --base-directory), by config field.
BASE_FOLDERS = {"input_directory": "input", "output_directory": "output", "temp_directory": "temp",
                "models_directory": "models", "custom_nodes_directory": "custom_nodes", "user_directory": "user",
                "database": "latentgraph_queue.sqlite3"}


@dataclass
class ServerConfig:
    """Everything the server needs to start; ``create_app`` takes one of these."""

    listen: str = "127.0.0.1"
    port: int = 8188
    cpu: bool = False
    input_directory: Path = INSTALL_ROOT / "input"
    output_directory: Path = INSTALL_ROOT / "output"
    temp_directory: Path = INSTALL_ROOT / "temp"
    models_directory: Path = INSTALL_ROOT / "models"
    extra_model_paths_config: list[Path] = field(default_factory=list)
    database: Path = INSTALL_ROOT / "latentgraph_queue.sqlite3"
    auth_token: str | None = None
    cache_budget: int = DEFAULT_BUDGET_BYTES
    model_cache_budget: int | None = None  # bytes of loaded models within cache_budget; None: no separate limit
    # Where and in which precision models run (nodes/sd/runtime_flags.py); force_cpu is ``cpu``.
    device_settings: DeviceSettings = field(default_factory=DeviceSettings)
    max_upload_size: int = DEFAULT_MAX_UPLOAD_BYTES
    # Bounds on one request (README, "Limits"); None disables the node, instance and text bounds.
    max_json_body: int = DEFAULT_MAX_JSON_BYTES
    max_extra_data: int = DEFAULT_MAX_EXTRA_DATA_BYTES
    max_prompt_nodes: int | None = DEFAULT_MAX_NODES
    max_subgraph_instances: int | None = DEFAULT_MAX_SUBGRAPH_INSTANCES
    max_text_length: int | None = DEFAULT_MAX_TEXT_LENGTH
    # Largest memory estimate of one prompt in bytes; None: the machine's memory minus memory_reserve.
    max_prompt_memory: int | None = None
    memory_reserve: int = DEFAULT_MEMORY_RESERVE_BYTES
    plugin_import_timeout: float = DEFAULT_PLUGIN_IMPORT_TIMEOUT
    node_packages: list[str] = field(default_factory=lambda: ["nodes"])
    custom_nodes_directory: Path = INSTALL_ROOT / "custom_nodes"
    disable_all_custom_nodes: bool = False
    web_directory: Path | None = INSTALL_ROOT / "web"
    # Live previews (ComfyUI's --preview-method): "none" sends them only to clients that ask
    # (latentgraph_server/previews.py); "auto", "latent2rgb" and "taesd" send them to every client.
    preview_method: str = "none"
    user_directory: Path = INSTALL_ROOT / "user"
    examples_directory: Path | None = INSTALL_ROOT / "workflows"
    # Scale-out on Ray (latentgraph_server/ray_dispatch.py); None: the local worker thread, no Ray.
    ray_address: str | None = None
    ray_workers: int = 0  # 0: one per GPU of the cluster, or one when it has none
    ray_max_workers: int = 0  # with ray_workers 0: at most this many (0: no bound); CPU-only: one per ray_worker_cpus
    ray_worker_cpus: float = 1.0
    ray_worker_gpus: float | None = None  # None: 1 when the cluster has GPUs (and not --cpu), else 0
    ray_max_tries: int = 3
    ray_ping_timeout: float = 60.0  # seconds a worker may leave a ping unanswered before it is killed
    ray_routing: str = "affinity"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="server.py", description="Latentgraph's ComfyUI-compatible server.")
    parser.add_argument("--listen", default="127.0.0.1", nargs="?", const="0.0.0.0",
                        help="address to bind (default 127.0.0.1; bare --listen binds 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is present")
    add_runtime_flags(parser, cpu=False)
    parser.add_argument("--base-directory", type=Path, default=None, metavar="DIR",
                        help="folder holding models, custom_nodes, input, output, temp, user and the queue "
                             "database (default: the installation, where server.py is)")
    parser.add_argument("--input-directory", type=Path, default=None, help="default: BASE/input")
    parser.add_argument("--output-directory", type=Path, default=None, help="default: BASE/output")
    parser.add_argument("--temp-directory", type=Path, default=None, help="default: BASE/temp")
    parser.add_argument("--models-directory", type=Path, default=None, help="default: BASE/models")
    parser.add_argument("--extra-model-paths-config", type=Path, action="append", default=[],
                        metavar="PATH", help="extra_model_paths.yaml (repeatable)")
    parser.add_argument("--database", type=Path, default=None,
                        help="SQLite file holding the queue and history (default: BASE/latentgraph_queue.sqlite3)")
    parser.add_argument("--auth-token", default=None,
                        help="require 'Authorization: Bearer TOKEN' on every route (websocket: ?token=TOKEN)")
    parser.add_argument("--cache-budget", type=int, default=DEFAULT_BUDGET_BYTES, help="output cache size in bytes")
    parser.add_argument("--model-cache-budget", type=int, default=None, metavar="BYTES",
                        help="bytes of loaded models kept across prompts, within --cache-budget "
                             "(least recently used unloaded first; default: no separate limit)")
    parser.add_argument("--max-upload-size", type=float, default=DEFAULT_MAX_UPLOAD_BYTES / 1024**2,
                        help="largest upload in MiB (default 100)")
    limits = parser.add_argument_group("limits", "bounds on what one request may make the server do")
    limits.add_argument("--max-json-body", type=float, default=DEFAULT_MAX_JSON_BYTES / MIB, metavar="MIB",
                        help="largest JSON request body in MiB (default 16)")
    limits.add_argument("--max-extra-data", type=float, default=DEFAULT_MAX_EXTRA_DATA_BYTES / MIB, metavar="MIB",
                        help="largest extra_data of a prompt in MiB, the editor's workflow included (default 8)")
    limits.add_argument("--max-prompt-nodes", type=int, default=DEFAULT_MAX_NODES, metavar="N",
                        help="most nodes in one prompt, subgraphs expanded (default 10000; 0: no limit)")
    limits.add_argument("--max-subgraph-instances", type=int, default=DEFAULT_MAX_SUBGRAPH_INSTANCES,
                        metavar="N", help="most subgraph instances expanded for one prompt (default 1000; 0: no limit)")
    limits.add_argument("--max-text-length", type=int, default=DEFAULT_MAX_TEXT_LENGTH, metavar="CHARS",
                        help="longest string input of a prompt (default 100000; 0: no limit)")
    limits.add_argument("--max-prompt-memory", type=int, default=None, metavar="BYTES",
                        help="largest estimated memory of one prompt (default: the machine's or its cgroup's "
                             "memory minus --memory-reserve; 0: no limit)")
    limits.add_argument("--memory-reserve", type=int, default=DEFAULT_MEMORY_RESERVE_BYTES, metavar="BYTES",
                        help="memory kept out of the default --max-prompt-memory (default 1 GiB)")
    limits.add_argument("--plugin-import-timeout", type=float, default=DEFAULT_PLUGIN_IMPORT_TIMEOUT,
                        metavar="SECONDS", help="a plugin whose import takes longer is skipped (default 30)")
    parser.add_argument("--nodes-package", action="append", default=None, metavar="PACKAGE",
                        help="package of built-in nodes (repeatable; default: nodes)")
    parser.add_argument("--custom-nodes-directory", type=Path, default=None, help="default: BASE/custom_nodes")
    parser.add_argument("--disable-all-custom-nodes", action="store_true", help="load no plugins")
    front_end = parser.add_argument_group("front end", "which editor is served at /")
    front_end.add_argument("--front-end-root", "--web-directory", dest="web_directory", type=Path, default=None,
                           metavar="DIR", help="static editor files served at / (default: our editor, web/)")
    front_end.add_argument("--front-end", choices=FRONT_ENDS, default="latentgraph",
                           help="latentgraph: our editor (web/); official: ComfyUI's frontend from the installed "
                                "comfyui-frontend-package (pip install latentgraph[frontend])")
    parser.add_argument("--preview-method", choices=PREVIEW_METHODS, default="none",
                        help="live previews for every client, as ComfyUI (default none: only clients that ask, "
                             "such as the editors, get them; taesd needs models/vae_approx/taesd_decoder.*)")
    parser.add_argument("--user-directory", type=Path, default=None,
                        help="the editor's saved workflows and other user files (default: BASE/user)")
    parser.add_argument("--examples-directory", type=Path, default=INSTALL_ROOT / "workflows",
                        help="example workflows offered read-only in the editor (default: the installation's)")
    scale_out = parser.add_argument_group("scale-out", "run prompts on Ray workers (pip install latentgraph[ray])")
    scale_out.add_argument("--ray", dest="ray_address", default=None, metavar="ADDRESS",
                           help="the Ray cluster to run prompts on (ray://HOST:10001 or HOST:6379); 'auto': a "
                                "cluster started on this machine, else a new local one; 'local': a new local one")
    scale_out.add_argument("--ray-workers", type=int, default=0, metavar="N",
                           help="workers to keep (default 0: one per GPU of the cluster, or one without GPUs)")
    scale_out.add_argument("--ray-max-workers", type=int, default=0, metavar="N",
                           help="with --ray-workers 0: keep at most N workers (default 0: no bound); on a "
                                "cluster without GPUs, one per --ray-worker-cpus CPUs up to N, as machines join")
    scale_out.add_argument("--ray-worker-cpus", type=float, default=1.0, metavar="CPUS",
                           help="CPUs Ray reserves for each worker (default 1)")
    scale_out.add_argument("--ray-worker-gpus", type=float, default=None, metavar="GPUS",
                           help="GPUs per worker (default 1 when the cluster has GPUs, else 0)")
    scale_out.add_argument("--ray-max-tries", type=int, default=3, metavar="N",
                           help="a prompt whose worker is lost this many times is recorded as failed (default 3)")
    scale_out.add_argument("--ray-ping-timeout", type=float, default=60.0, metavar="SECONDS",
                           help="a worker that leaves a ping unanswered this long (hung, unreachable) is "
                                "killed and its prompt re-queued (default 60)")
    scale_out.add_argument("--ray-routing", choices=("affinity", "random"), default="affinity",
                           help="affinity: the idle worker holding the prompt's models (default); random: any idle one")
    return parser


def config_from_args(argv: list[str] | None = None) -> ServerConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag, value in (("--cache-budget", args.cache_budget), ("--model-cache-budget", args.model_cache_budget),
                        ("--max-json-body", args.max_json_body), ("--max-extra-data", args.max_extra_data),
                        ("--max-prompt-nodes", args.max_prompt_nodes),
                        ("--max-subgraph-instances", args.max_subgraph_instances),
                        ("--max-text-length", args.max_text_length), ("--max-prompt-memory", args.max_prompt_memory),
                        ("--memory-reserve", args.memory_reserve),
                        ("--plugin-import-timeout", args.plugin_import_timeout)):
        if value is not None and value < 0:
            parser.error(f"{flag} must be >= 0")
    # A folder flag given is taken from the working directory (as ComfyUI does); one left
    # out lies under the base directory, which defaults to the installation.
    base = (args.base_directory if args.base_directory is not None else INSTALL_ROOT).resolve()
    folder = {name: (getattr(args, name).resolve() if getattr(args, name) is not None else base / default)
              for name, default in BASE_FOLDERS.items()}
    return ServerConfig(
        listen=args.listen,
        port=args.port,
        cpu=args.cpu,
        # Folders are made absolute once, here: handlers compare resolved request paths with
        # them, and a relative root would never match (and would move with the working folder).
        input_directory=folder["input_directory"],
        output_directory=folder["output_directory"],
        temp_directory=folder["temp_directory"],
        models_directory=folder["models_directory"],
        # As ComfyUI, the installation's own extra_model_paths.yaml is read when there is one.
        extra_model_paths_config=[*([INSTALL_ROOT / "extra_model_paths.yaml"]
                                    if (INSTALL_ROOT / "extra_model_paths.yaml").is_file() else []),
                                  *args.extra_model_paths_config],
        database=folder["database"],
        auth_token=args.auth_token or None,
        cache_budget=args.cache_budget,
        model_cache_budget=args.model_cache_budget,
        device_settings=device_settings(args),
        max_upload_size=int(args.max_upload_size * 1024**2),
        max_json_body=int(args.max_json_body * MIB),
        max_extra_data=int(args.max_extra_data * MIB),
        max_prompt_nodes=args.max_prompt_nodes or None,
        max_subgraph_instances=args.max_subgraph_instances or None,
        max_text_length=args.max_text_length or None,
        # 0 means "no limit": a bound far beyond any machine.
        max_prompt_memory=(2**62 if args.max_prompt_memory == 0 else args.max_prompt_memory),
        memory_reserve=args.memory_reserve,
        plugin_import_timeout=args.plugin_import_timeout,
        node_packages=args.nodes_package or ["nodes"],
        custom_nodes_directory=folder["custom_nodes_directory"],
        disable_all_custom_nodes=args.disable_all_custom_nodes,
        web_directory=_front_end_root(parser, args),
        preview_method=args.preview_method,
        user_directory=folder["user_directory"],
        examples_directory=args.examples_directory.resolve(),
        ray_address=args.ray_address or None,
        ray_workers=max(args.ray_workers, 0),
        ray_max_workers=max(args.ray_max_workers, 0),
        ray_worker_cpus=args.ray_worker_cpus,
        ray_worker_gpus=args.ray_worker_gpus,
        ray_max_tries=max(args.ray_max_tries, 1),
        ray_ping_timeout=max(args.ray_ping_timeout, 1.0),
        ray_routing=args.ray_routing,
    )


def _front_end_root(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Path:
    """The folder served at /: --front-end-root when given, else the chosen front end's."""
    if args.web_directory is not None:
        if args.front_end != "latentgraph":
            parser.error("--front-end-root and --front-end official name two different front ends; give one")
        return args.web_directory.resolve()
    if args.front_end == "official":
        from latentgraph_server.frontend import FrontEndMissing, official_front_end_root

        try:
            return official_front_end_root()
        except FrontEndMissing as exc:
            parser.error(str(exc))
    return INSTALL_ROOT / "web"
