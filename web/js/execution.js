// Following a running prompt through the websocket: the running node is outlined, its
// sampler progress drawn on it and in the top bar, live previews shown on it, and
// output images shown on the nodes that produced them (SaveImage, PreviewImage...). A node
// running inside a subgraph is shown on the subgraph node that holds it.

import { displayedNode } from "./subgraphs.js";

export class ExecutionView {
  constructor(app, { bar, label }) {
    this.app = app;
    this.bar = bar;
    this.label = label;
    this.promptId = null;
    this.runningNodeId = null;
    this.progress = null; // {value, max}
    this.previewUrl = null;
    const api = app.api;
    api.addEventListener("execution_start", (e) => this.#start(e.detail));
    api.addEventListener("execution_cached", (e) => this.#cached(e.detail));
    api.addEventListener("executing", (e) => this.#executing(e.detail));
    api.addEventListener("progress", (e) => this.#progress(e.detail));
    api.addEventListener("executed", (e) => this.#executed(e.detail));
    api.addEventListener("execution_success", () => this.#finish("done"));
    api.addEventListener("execution_interrupted", () => this.#finish("interrupted"));
    api.addEventListener("execution_error", (e) => {
      this.#finish("failed");
      app.errors.showExecution(e.detail);
    });
    api.addEventListener("b_preview", (e) => this.#preview(e.detail));
  }

  #node(id) {
    return displayedNode(this.app.graph, id);
  }

  #start({ prompt_id: promptId }) {
    this.promptId = promptId;
    this.finished = false;
    this.app.errors.clear();
    this.#setBar(0, "starting");
  }

  #cached({ nodes }) {
    this.#setBar(0, `${(nodes || []).length} cached`);
  }

  #executing({ node }) {
    const previous = this.#node(this.runningNodeId);
    if (previous) previous.progress = undefined;
    this.runningNodeId = node == null ? null : String(node);
    this.progress = null;
    const current = this.#node(node);
    if (node == null) {
      if (!this.finished) this.#finish("done");
    }
    else this.#setBar(0, current ? `running ${current.title}` : "running");
    this.app.canvas.setDirty(true, true);
  }

  #progress({ value, max, node }) {
    this.progress = { value, max };
    const target = this.#node(node ?? this.runningNodeId);
    if (target) target.progress = max ? value / max : 0;
    this.#setBar(max ? value / max : 0, `${target ? target.title : "step"} ${value}/${max}`);
    this.app.canvas.setDirty(true, true);
  }

  #executed({ node, output }) {
    const target = this.#node(node);
    if (target?.onExecuted) target.onExecuted(output);
    this.app.canvas.setDirty(true, true);
  }

  #preview(blob) {
    const target = this.#node(this.runningNodeId);
    if (!target?.showImages) return;
    if (this.previewUrl) URL.revokeObjectURL(this.previewUrl);
    this.previewUrl = URL.createObjectURL(blob);
    target.showImages([this.previewUrl]);
  }

  #finish(state) {
    this.finished = true;
    const previous = this.#node(this.runningNodeId);
    if (previous) previous.progress = undefined;
    this.runningNodeId = null;
    this.progress = null;
    this.#setBar(state === "done" ? 1 : 0, state);
    this.app.canvas.setDirty(true, true);
  }

  #setBar(fraction, text) {
    this.bar.style.width = `${Math.round(fraction * 100)}%`;
    this.label.textContent = text;
  }

  /** Outlines the running node (called from each node's foreground drawing). */
  draw(node, ctx, titleHeight) {
    // Called for every node every frame: compare ids, no lookup ("10:3" shows on node 10).
    if (this.runningNodeId == null || this.runningNodeId.split(":")[0] !== String(node.id)) return;
    ctx.save();
    ctx.strokeStyle = "#3fd46b";
    ctx.lineWidth = 3;
    ctx.beginPath();
    ctx.roundRect(-4, -titleHeight - 4, node.size[0] + 8, node.size[1] + titleHeight + 8, 10);
    ctx.stroke();
    ctx.restore();
  }
}
