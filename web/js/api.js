// The server's HTTP and websocket API (ComfyUI's routes, under /api).
//
// Api is an EventTarget: every websocket JSON message {type, data} is dispatched as a
// CustomEvent named `type` with `data` as its detail; binary preview frames (type 1, or 4 with
// metadata) as "b_preview" with a Blob; connection changes as "connected" / "disconnected".

const PREVIEW_FRAME = 1;
const PREVIEW_WITH_METADATA_FRAME = 4;
// Sent first on every connection, as ComfyUI's frontend does: it asks the server for live previews.
const CLIENT_FEATURE_FLAGS = { supports_preview_metadata: true };
const PREVIEW_MIME = { 1: "image/jpeg", 2: "image/png" };

/** An HTTP error carrying the parsed JSON body when there is one. */
export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

function newClientId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID().replaceAll("-", "");
  return Math.random().toString(16).slice(2) + Date.now().toString(16);
}

export class Api extends EventTarget {
  constructor() {
    super();
    // One id per browser tab, kept across reloads so a reload still sees its prompt's events.
    this.clientId = sessionStorage.getItem("latentgraph.clientId") || newClientId();
    sessionStorage.setItem("latentgraph.clientId", this.clientId);
    this.socket = null;
    this.reconnectDelay = 500;
  }

  /** fetch() under /api; throws ApiError for a status >= 400. */
  async fetchApi(path, init = {}) {
    const response = await fetch(`api${path}`, { cache: "no-store", ...init });
    if (!response.ok) {
      let body = null;
      let message = `${response.status} ${response.statusText}`;
      try {
        body = await response.json();
        message = body?.error?.message || body?.error || message;
      } catch {
        // not JSON: keep the status line
      }
      throw new ApiError(response.status, typeof message === "string" ? message : JSON.stringify(message), body);
    }
    return response;
  }

  async getJson(path) {
    return (await this.fetchApi(path)).json();
  }

  async postJson(path, body) {
    return this.fetchApi(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  }

  // -- nodes and prompts --------------------------------------------------------------

  objectInfo() {
    return this.getJson("/object_info");
  }

  /**
   * Queues an API-format prompt; `workflow` (UI format) travels in extra_pnginfo so that
   * SaveImage embeds it in the PNG. Resolves to {prompt_id, number}; a 400 rejects with
   * an ApiError whose body holds {error, node_errors}.
   */
  async queuePrompt(prompt, workflow, { front = false } = {}) {
    const body = { client_id: this.clientId, prompt, extra_data: { extra_pnginfo: { workflow } } };
    if (front) body.front = true;
    return (await this.postJson("/prompt", body)).json();
  }

  getQueue() {
    return this.getJson("/queue");
  }

  getHistory(maxItems = 50) {
    return this.getJson(`/history?max_items=${maxItems}`);
  }

  deleteQueued(promptIds) {
    return this.postJson("/queue", { delete: promptIds });
  }

  clearQueue() {
    return this.postJson("/queue", { clear: true });
  }

  deleteHistory(promptIds) {
    return this.postJson("/history", { delete: promptIds });
  }

  clearHistory() {
    return this.postJson("/history", { clear: true });
  }

  /** Interrupts ``promptId`` (as ComfyUI: without one, whatever runs, on every worker). */
  interrupt(promptId) {
    return this.postJson("/interrupt", promptId ? { prompt_id: promptId } : {});
  }

  // -- files ------------------------------------------------------------------------------

  /** Uploads an image into the input folder; resolves to {name, subfolder, type}. */
  async uploadImage(file) {
    const form = new FormData();
    form.append("image", file, file.name);
    form.append("type", "input");
    return (await this.fetchApi("/upload/image", { method: "POST", body: form })).json();
  }

  /** The URL of an output/input/temp file, as in a ui output's {filename, subfolder, type}. */
  viewUrl({ filename, subfolder = "", type = "output" }, preview = null) {
    const query = new URLSearchParams({ filename, subfolder, type });
    if (preview) query.set("preview", preview);
    return `api/view?${query}`;
  }

  // -- the workflow library -------------------------------------------------------------

  async listUserWorkflows() {
    try {
      return await this.getJson("/userdata?dir=workflows&recurse=true");
    } catch (error) {
      if (error.status === 404) return []; // nothing saved yet
      throw error;
    }
  }

  async loadUserWorkflow(path) {
    return (await this.fetchApi(`/userdata/${encodeURIComponent(`workflows/${path}`)}`)).json();
  }

  async saveUserWorkflow(path, workflow, { overwrite = true } = {}) {
    const file = encodeURIComponent(`workflows/${path}`);
    const response = await this.fetchApi(`/userdata/${file}?overwrite=${overwrite}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(workflow),
    });
    return response.json();
  }

  deleteUserWorkflow(path) {
    return this.fetchApi(`/userdata/${encodeURIComponent(`workflows/${path}`)}`, { method: "DELETE" });
  }

  async listExamples() {
    const modules = await this.getJson("/workflow_templates");
    return modules.latentgraph || [];
  }

  loadExample(name) {
    return this.getJson(`/workflow_templates/latentgraph/${encodeURIComponent(name)}.json`);
  }

  // -- websocket --------------------------------------------------------------------------

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const base = location.pathname.replace(/[^/]*$/, "");
    const socket = new WebSocket(`${scheme}://${location.host}${base}ws?clientId=${this.clientId}`);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.addEventListener("open", () => {
      socket.send(JSON.stringify({ type: "feature_flags", data: CLIENT_FEATURE_FLAGS }));
      this.reconnectDelay = 500;
      this.dispatchEvent(new CustomEvent("connected"));
    });
    socket.addEventListener("close", () => {
      this.dispatchEvent(new CustomEvent("disconnected"));
      setTimeout(() => this.connect(), this.reconnectDelay);
      this.reconnectDelay = Math.min(this.reconnectDelay * 2, 10000);
    });
    socket.addEventListener("message", (event) => this.#onMessage(event.data));
  }

  #onMessage(data) {
    if (data instanceof ArrayBuffer) {
      const view = new DataView(data);
      if (data.byteLength < 8) return;
      let blob = null;
      if (view.getUint32(0) === PREVIEW_FRAME) {
        blob = new Blob([data.slice(8)], { type: PREVIEW_MIME[view.getUint32(4)] || "image/jpeg" });
      } else if (view.getUint32(0) === PREVIEW_WITH_METADATA_FRAME) {
        // [type][metadata length][metadata JSON][image]; the metadata names the image's type.
        const length = view.getUint32(4);
        if (data.byteLength < 8 + length) return;
        let metadata = {};
        try {
          metadata = JSON.parse(new TextDecoder().decode(data.slice(8, 8 + length)));
        } catch {
          return;
        }
        blob = new Blob([data.slice(8 + length)], { type: metadata.image_type || "image/jpeg" });
      }
      if (blob) this.dispatchEvent(new CustomEvent("b_preview", { detail: blob }));
      return;
    }
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (message && typeof message.type === "string") {
      this.dispatchEvent(new CustomEvent(message.type, { detail: message.data }));
    }
  }
}
