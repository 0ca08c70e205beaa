// The node palette (left panel: search by name, browse by category) and the search box
// that opens on a double-click on the canvas.

import { h } from "./ui.js";
import { declaredInputs } from "./nodes.js";
import { widgetKind } from "./widgets.js";

const MAX_RESULTS = 50;

/** Nodes matching every word of `query` in class name, display name, search aliases
 * (everyday words such as "prompt" or "upscale", from /object_info) or category, best first. */
export function searchNodes(defs, query, filter = null) {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  const results = [];
  for (const def of Object.values(defs)) {
    if (filter && !filter(def)) continue;
    const name = def.name.toLowerCase();
    const display = (def.display_name || def.name).toLowerCase();
    const aliases = (def.search_aliases || []).map((a) => String(a).toLowerCase());
    const haystack = `${name} ${display} ${aliases.join(" ")} ${(def.category || "").toLowerCase()}`;
    if (!words.every((w) => haystack.includes(w))) continue;
    const q = words.join(" ");
    let score = 4;
    if (name === q.replaceAll(" ", "") || display === q) score = 0;
    // An alias typed whole ("sampler" for KSampler) ranks with a name's beginning.
    else if (name.startsWith(q.replaceAll(" ", "")) || display.startsWith(q) || aliases.includes(q)) score = 1;
    else if (name.includes(q.replaceAll(" ", "")) || display.includes(q)) score = 2;
    else if (aliases.some((a) => a.includes(q))) score = 3;
    results.push({ def, score });
  }
  results.sort((a, b) => a.score - b.score || a.def.name.localeCompare(b.def.name));
  return results.map((r) => r.def);
}

/** A filter keeping nodes with an input of `type` (when a link is dragged from an output). */
export function acceptsInput(type) {
  return (def) => declaredInputs(def).some(({ spec }) => {
    const t = widgetKind(spec) || spec[0];
    return t === type || t === "*";
  });
}

/** A filter keeping nodes with an output of `type` (when a link is dragged from an input). */
export function providesOutput(type) {
  return (def) => (def.output || []).some((t) => t === type || t === "*");
}

function categoryTree(defs) {
  const root = { children: new Map(), nodes: [] };
  for (const def of Object.values(defs)) {
    let branch = root;
    for (const part of (def.category || "other").split("/")) {
      if (!branch.children.has(part)) branch.children.set(part, { children: new Map(), nodes: [] });
      branch = branch.children.get(part);
    }
    branch.nodes.push(def);
  }
  return root;
}

/** The left-hand panel. `app.addNode(type, canvasPos?)` adds a node. */
export class Palette {
  constructor(app, container) {
    this.app = app;
    this.defs = {};
    this.search = h("input#palette-search", {
      type: "search", placeholder: "Search nodes…", "aria-label": "Search nodes",
      oninput: () => this.render(),
    });
    this.list = h("div#palette-list");
    container.append(h("div.panel-title", {}, "Nodes"), this.search, this.list);
  }

  setDefinitions(defs) {
    this.defs = defs;
    this.render();
  }

  #item(def) {
    return h("div.palette-node", {
      draggable: true,
      title: def.description || def.name,
      dataset: { type: def.name },
      onclick: () => this.app.addNode(def.name),
      ondragstart: (event) => event.dataTransfer.setData("application/x-latentgraph-node", def.name),
    }, def.display_name || def.name);
  }

  #branch(name, branch, depth) {
    const body = h("div.palette-children");
    for (const [child, sub] of [...branch.children].sort(([a], [b]) => a.localeCompare(b))) {
      body.append(this.#branch(child, sub, depth + 1));
    }
    for (const def of branch.nodes.sort((a, b) => (a.display_name || a.name).localeCompare(b.display_name || b.name))) {
      body.append(this.#item(def));
    }
    return h("details.palette-category", { open: false, dataset: { category: name } },
      h("summary", {}, name), body);
  }

  render() {
    const query = this.search.value.trim();
    this.list.replaceChildren();
    if (query) {
      const found = searchNodes(this.defs, query);
      if (!found.length) this.list.append(h("div.empty", {}, "No node matches."));
      found.forEach((def) => this.list.append(this.#item(def)));
      return;
    }
    const tree = categoryTree(this.defs);
    for (const [name, branch] of [...tree.children].sort(([a], [b]) => a.localeCompare(b))) {
      this.list.append(this.#branch(name, branch, 0));
    }
  }
}

/** The floating search box: type, pick with arrows/Enter or a click. */
export class NodeSearch {
  constructor(app) {
    this.app = app;
    this.element = null;
  }

  /**
   * Opens at a screen position. `onPick(type)` receives the chosen node type;
   * `filter` narrows the list (e.g. acceptsInput("LATENT")).
   */
  open(clientX, clientY, onPick, filter = null) {
    this.close();
    const input = h("input", { type: "search", placeholder: "Search nodes…", "aria-label": "Search nodes" });
    const list = h("ul.node-search-results", { role: "listbox" });
    const box = h("div.node-search", { role: "dialog", "aria-label": "Add a node" }, input, list);
    box.style.left = `${Math.max(0, Math.min(clientX, window.innerWidth - 340))}px`;
    box.style.top = `${Math.max(0, Math.min(clientY, window.innerHeight - 360))}px`;
    let results = [];
    let selected = 0;
    const choose = (def) => {
      this.close();
      if (def) onPick(def.name);
    };
    const render = () => {
      results = searchNodes(this.app.defs, input.value.trim(), filter).slice(0, MAX_RESULTS);
      selected = Math.min(selected, Math.max(results.length - 1, 0));
      list.replaceChildren(...results.map((def, i) => h(`li${i === selected ? ".selected" : ""}`, {
        role: "option", dataset: { type: def.name },
        onmousedown: (event) => {
          event.preventDefault();
          choose(def);
        },
      }, h("span.name", {}, def.display_name || def.name), h("span.category", {}, def.category || ""))));
      list.children[selected]?.scrollIntoView({ block: "nearest" });
    };
    input.addEventListener("input", () => {
      selected = 0;
      render();
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "ArrowDown") selected = Math.min(selected + 1, results.length - 1);
      else if (event.key === "ArrowUp") selected = Math.max(selected - 1, 0);
      else if (event.key === "Enter") return choose(results[selected]);
      else if (event.key === "Escape") return this.close();
      else return undefined;
      event.preventDefault();
      render();
      return undefined;
    });
    input.addEventListener("blur", () => setTimeout(() => this.element === box && this.close(), 100));
    document.body.append(box);
    this.element = box;
    render();
    input.focus();
  }

  close() {
    this.element?.remove();
    this.element = null;
  }
}
