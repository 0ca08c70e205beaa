"""The routes the official ComfyUI frontend reads beyond the core API, for server.py's ROUTES.

Their handlers live one job per module: ``settings.py`` (users and settings), ``jobs.py``,
``model_library.py`` (model folders, previews and metadata, input/output listings),
``server_logs.py`` (the log viewer) and ``frontend.py`` (feature flags, translations,
subgraph blueprints, the template index). A handler named "a.b" is method ``b`` of the
server's ``Handlers.a``.
"""

from __future__ import annotations

from latentgraph_server.openapi import Route

FRONTEND_ROUTES = [
    Route("GET", "/users", "settings.get_users", "The user list (one user: default; settings on the server)"),
    Route("GET", "/settings", "settings.get_settings", "The user's settings"),
    Route("POST", "/settings", "settings.post_settings", "Merge settings (a JSON object)", body="json",
          responses={"400": "not an object, or a bad setting id"}),
    Route("GET", "/settings/{id}", "settings.get_setting", "One setting (null when unset)",
          responses={"400": "bad setting id"}),
    Route("POST", "/settings/{id}", "settings.post_setting", "Set one setting (any JSON value)", body="json",
          responses={"400": "bad setting id or body"}),
    Route("GET", "/jobs", "jobs.list", "Queue and history as jobs",
          query=("status", "workflow_id", "sort_by", "sort_order", "limit", "offset")),
    Route("GET", "/jobs/{job_id}", "jobs.get", "One job with its outputs and workflow", responses={"404": "no such job"}),
    Route("POST", "/jobs/{job_id}/cancel", "jobs.cancel", "Cancel a job: dequeue it, or interrupt it when running"),
    Route("POST", "/jobs/cancel", "jobs.cancel_many", "Cancel jobs ({\"job_ids\": [...]})", body="json",
          responses={"400": "bad body"}),
    Route("GET", "/experiment/models", "model_library.model_folders", "Model kinds and their folders"),
    Route("GET", "/experiment/models/{folder}", "model_library.model_files", "Model files of a kind, with sizes",
          responses={"404": "no such kind"}),
    Route("GET", "/experiment/models/preview/{folder}/{path_index}/{filename:.+}", "model_library.model_preview",
          "The picture saved beside a model", responses={"404": "no picture"}),
    Route("GET", "/view_metadata/{folder}", "model_library.view_metadata", "A .safetensors model's metadata",
          query=("filename",), responses={"404": "no such model or no metadata"}),
    Route("GET", "/internal/folder_paths", "model_library.folder_paths", "Model kinds and their folders"),
    Route("GET", "/internal/files/{type}", "model_library.files", "Files in the input, output or temp folder",
          responses={"400": "unknown type"}),
    Route("GET", "/internal/logs", "server_logs.get_logs", "The server's recent log, as text"),
    Route("GET", "/internal/logs/raw", "server_logs.get_raw", "The server's recent log entries"),
    Route("PATCH", "/internal/logs/subscribe", "server_logs.subscribe", "Follow the log over the websocket",
          body="json", responses={"400": "bad body", "429": "too many followers"}),
    Route("GET", "/features", "front_end.get_features", "The server's feature flags"),
    Route("GET", "/i18n", "front_end.get_i18n", "Translations from custom nodes"),
    Route("GET", "/global_subgraphs", "front_end.get_global_subgraphs", "Subgraph blueprints from custom nodes"),
    Route("GET", "/global_subgraphs/{id}", "front_end.get_global_subgraph", "One subgraph blueprint",
          responses={"404": "no such blueprint"}),
    Route("GET", "/templates/{file}", "front_end.get_template_file",
          "ComfyUI's template index (empty: our examples are under /workflow_templates)",
          responses={"404": "not an index file"}),
]
