// The queue/history side panel: the running prompt (interrupt), pending prompts (cancel),
// and finished prompts with their images; a finished prompt's workflow can be reloaded.

import { h, toast } from "./ui.js";

const HISTORY_ITEMS = 30;

function outputImages(outputs) {
  const images = [];
  for (const output of Object.values(outputs || {})) {
    for (const image of output?.images || []) images.push(image);
  }
  return images;
}

export class QueuePanel {
  constructor(app, container) {
    this.app = app;
    this.container = container;
    this.pending = null;
    this.running = h("div.queue-section");
    this.queued = h("div.queue-section");
    this.history = h("div.queue-section#history-list");
    container.append(
      h("div.panel-title", {}, "Queue",
        h("button.small", { onclick: () => this.#clearQueue(), title: "Remove every pending prompt" }, "Clear")),
      this.running, this.queued,
      h("div.panel-title", {}, "History",
        h("button.small", { onclick: () => this.#clearHistory(), title: "Forget finished prompts" }, "Clear")),
      this.history,
    );
    app.api.addEventListener("status", () => this.refresh());
    app.api.addEventListener("execution_success", () => this.refresh());
    app.api.addEventListener("execution_error", () => this.refresh());
    app.api.addEventListener("execution_interrupted", () => this.refresh());
  }

  /** Reloads the queue and history (coalescing calls made while one is on its way). */
  refresh() {
    if (this.pending) {
      this.again = true;
      return this.pending;
    }
    this.pending = this.#load().finally(() => {
      this.pending = null;
      if (this.again) {
        this.again = false;
        this.refresh();
      }
    });
    return this.pending;
  }

  async #load() {
    try {
      const [queue, history] = await Promise.all([this.app.api.getQueue(), this.app.api.getHistory(HISTORY_ITEMS)]);
      this.#renderQueue(queue);
      this.#renderHistory(history);
    } catch (error) {
      console.warn("cannot load the queue", error);
    }
  }

  #renderQueue(queue) {
    const running = queue.queue_running || [];
    const pending = [...(queue.queue_pending || [])].sort((a, b) => a[0] - b[0]);
    this.running.replaceChildren(...running.map((item) => h("div.queue-item.running", {},
      h("span", {}, `Running #${item[0]}`),
      h("button.small", { onclick: () => this.app.interrupt(item[1]), title: "Interrupt" }, "Stop"))));
    this.queued.replaceChildren(...pending.map((item) => h("div.queue-item.pending", {},
      h("span", {}, `Pending #${item[0]}`),
      h("button.small", {
        title: "Remove from the queue",
        onclick: async () => {
          await this.app.api.deleteQueued([item[1]]);
          this.refresh();
        },
      }, "Cancel"))));
    if (!running.length && !pending.length) this.queued.replaceChildren(h("div.empty", {}, "Nothing queued."));
  }

  #renderHistory(history) {
    const entries = Object.entries(history).sort(([, a], [, b]) => (b.prompt?.[0] ?? 0) - (a.prompt?.[0] ?? 0));
    if (!entries.length) {
      this.history.replaceChildren(h("div.empty", {}, "No finished prompts."));
      return;
    }
    this.history.replaceChildren(...entries.map(([promptId, entry]) => {
      const status = entry.status?.status_str || "unknown";
      const images = outputImages(entry.outputs);
      const workflow = entry.prompt?.[3]?.extra_pnginfo?.workflow;
      return h(`div.history-item.${status}`, { dataset: { promptId } },
        h("div.history-head", {},
          h("span", {}, `#${entry.prompt?.[0] ?? "?"} ${status}`),
          workflow ? h("button.small", { onclick: () => this.app.loadWorkflow(workflow), title: "Load its workflow" },
            "Load") : null,
          h("button.small", {
            title: "Remove from the history",
            onclick: async () => {
              await this.app.api.deleteHistory([promptId]);
              this.refresh();
            },
          }, "×")),
        images.length ? h("div.history-images", {}, images.map((image) => h("a", {
          href: this.app.api.viewUrl(image), target: "_blank", title: image.filename,
        }, h("img", { src: this.app.api.viewUrl(image), alt: image.filename, loading: "lazy" })))) : null);
    }));
  }

  async #clearQueue() {
    await this.app.api.clearQueue();
    toast("Queue cleared");
    this.refresh();
  }

  async #clearHistory() {
    await this.app.api.clearHistory();
    this.refresh();
  }
}
