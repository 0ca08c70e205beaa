// Validation and execution errors, shown on the offending node and input and listed in a
// panel (a click on an entry brings the node into view). An error of a node inside a
// subgraph ("10:3") is listed under its own id and marks the subgraph node that holds it.

import { displayedNode } from "./subgraphs.js";
import { h } from "./ui.js";

export class ErrorDisplay {
  constructor(app, panel) {
    this.app = app;
    this.panel = panel;
    this.byNode = new Map(); // node id (string) -> [{message, details, input}]
  }

  clear() {
    for (const node of this.app.graph._nodes) node.has_errors = false;
    this.byNode.clear();
    this.panel.hidden = true;
    this.panel.replaceChildren();
    this.app.canvas.setDirty(true, true);
  }

  /** Errors recorded for a node: [{message, details, input}] (input may be null). */
  forNode(nodeId) {
    const own = this.byNode.get(String(nodeId)) || [];
    const inner = [...this.byNode].filter(([key]) => key.startsWith(`${nodeId}:`))
      .flatMap(([, errors]) => errors.map((error) => ({ ...error, input: null }))); // inputs of inner nodes
    return [...own, ...inner];
  }

  #add(nodeId, error) {
    const key = String(nodeId);
    if (!this.byNode.has(key)) this.byNode.set(key, []);
    this.byNode.get(key).push(error);
    const node = displayedNode(this.app.graph, nodeId);
    if (node) node.has_errors = true;
  }

  /** The 400 body of POST /prompt: {error, node_errors}. */
  showValidation(body) {
    this.clear();
    const nodeErrors = body?.node_errors || {};
    for (const [nodeId, entry] of Object.entries(nodeErrors)) {
      for (const error of entry.errors || []) {
        this.#add(nodeId, {
          message: error.message,
          details: error.details || "",
          input: error.extra_info?.input_name ?? null,
        });
      }
    }
    const summary = body?.error?.message || "The workflow is not valid";
    this.#render("Prompt cannot run", summary, body?.error?.details || "");
  }

  /** An execution_error websocket message. */
  showExecution(detail) {
    this.clear();
    this.#add(detail.node_id, {
      message: `${detail.exception_type || "Error"}: ${detail.exception_message}`,
      details: (detail.traceback || []).join(""),
      input: null,
    });
    this.#render(`${detail.node_type || "A node"} failed`, detail.exception_message || "", "");
  }

  #render(title, summary, details) {
    const items = [];
    for (const [nodeId, errors] of this.byNode) {
      const node = displayedNode(this.app.graph, nodeId);
      const label = node ? `${node.title} (#${nodeId})` : `node #${nodeId}`;
      for (const error of errors) {
        items.push(h("li.error-item", {
          dataset: { node: nodeId, input: error.input || "" },
          title: error.details,
          onclick: () => node && this.app.focusNode(node),
        }, h("strong", {}, label), error.input ? h("span.error-input", {}, ` ${error.input}`) : null,
        h("span", {}, `: ${error.message}`)));
      }
    }
    this.panel.replaceChildren(...[
      h("div.error-header", {}, h("strong", {}, title),
        h("button.close", { onclick: () => this.clear(), title: "Dismiss", "aria-label": "Dismiss errors" }, "×")),
      summary ? h("div.error-summary", {}, summary) : null,
      details && !items.length ? h("pre.error-details", {}, details) : null,
      items.length ? h("ul", {}, items) : null,
    ].filter(Boolean));
    this.panel.hidden = false;
    this.app.canvas.setDirty(true, true);
  }

  /** Draws a node's errors: the failing inputs outlined in red, the messages under the node. */
  draw(node, ctx) {
    const errors = this.forNode(node.id);
    if (!errors.length) return;
    ctx.save();
    ctx.strokeStyle = "#ff4444";
    ctx.fillStyle = "#ff4444";
    ctx.lineWidth = 2;
    for (const error of errors) {
      if (!error.input) continue;
      const widget = node.widgets?.find((w) => w.name === error.input && !w.hidden);
      if (widget) {
        ctx.beginPath();
        ctx.roundRect(12, widget.y - 1, node.size[0] - 24, (widget.computedHeight || 24) - 2, 6);
        ctx.stroke();
        continue;
      }
      const index = node.inputs.findIndex((s) => s.name === error.input);
      if (index >= 0) {
        const [x, y] = node.getInputPos(index);
        ctx.beginPath();
        ctx.arc(x - node.pos[0], y - node.pos[1], 7, 0, Math.PI * 2);
        ctx.stroke();
      }
    }
    ctx.font = "12px sans-serif";
    let y = node.size[1] + 30; // below the error outline
    for (const error of errors) {
      const text = error.input ? `${error.input}: ${error.message}` : error.message;
      ctx.fillText(text.length > 90 ? `${text.slice(0, 87)}…` : text, 4, y);
      y += 16;
    }
    ctx.restore();
  }
}
