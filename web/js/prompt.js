// Converting between the editor's graph and API-format prompts.
//
// graphToPrompt: the UI-format workflow (graph.serialize()) plus the API prompt the server
// runs, built the way ComfyUI's frontend does: widget values by input name, links as
// [source_id, slot], muted nodes (mode 2) left out, bypassed nodes (mode 4) passing a
// same-typed input through, reroutes followed, primitives' values taken from the widgets
// they fill (frontend_nodes.js), and subgraph instances flattened into their inner nodes
// (ids "instance:node"). loadApiPrompt: builds a graph from an API prompt (examples,
// dropped files), placing nodes in columns by their depth.

import { ExecutableNodeDTO, LiteGraph } from "../vendor/litegraph/litegraph.es.js";

export const MODE_MUTED = 2;
export const MODE_BYPASSED = 4;

/** A link of the graph by id (LGraph keeps them in a Map). */
export function linkById(graph, linkId) {
  const links = graph._links ?? graph.links;
  return links instanceof Map ? links.get(linkId) : links?.[linkId];
}

function constant(value) {
  return Array.isArray(value) ? { __value__: value } : value;
}

/** Every node of `graph` and of the subgraph definitions it holds. */
function allNodes(graph) {
  return [graph, ...(graph.subgraphs?.values() || [])].flatMap((g) => g._nodes);
}

/**
 * The graph's nodes flattened for execution, by execution id: a node inside a subgraph
 * instance gets the id path "instance:node" (nested: "outer:inner:node"), as in ComfyUI.
 * litegraph's ExecutableNodeDTO resolves each input through subgraph boundaries, bypassed
 * nodes and virtual nodes (Reroute; a PrimitiveNode resolves to nothing).
 */
function executableNodes(graph) {
  const byId = new Map();
  for (const node of graph.computeExecutionOrder(false) || graph._nodes) {
    const dto = new ExecutableNodeDTO(node, [], byId);
    for (const inner of dto.getInnerNodes()) byId.set(inner.id, inner);
    byId.set(dto.id, dto);
  }
  return byId;
}

/** {workflow, output}: the UI-format document and the API-format prompt. */
export function graphToPrompt(graph) {
  for (const node of allNodes(graph)) if (node.type === "PrimitiveNode") node.pushValue();
  const workflow = graph.serialize();
  const output = {};
  const nodes = [...executableNodes(graph).values()];
  // A muted or bypassed subgraph node takes its inner nodes with it (bypassed, its inputs
  // pass through to its outputs of the same type).
  const switchedOff = nodes.filter((dto) => dto.node.isSubgraphNode() && [MODE_MUTED, MODE_BYPASSED].includes(dto.mode))
    .map((dto) => `${dto.id}:`);
  const inside = (id) => switchedOff.some((prefix) => String(id).startsWith(prefix));
  for (const dto of nodes) {
    const { node } = dto;
    if (!node.constructor.nodeDef || dto.mode === MODE_MUTED || dto.mode === MODE_BYPASSED || inside(dto.id)) continue;
    const inputs = {};
    for (const widget of node.inputWidgets()) {
      inputs[widget.name] = constant(widget.value);
    }
    (node.inputs || []).forEach((input, slot) => {
      if (input.link == null) return;
      const name = input.widget?.name || input.name;
      let resolved;
      try {
        resolved = dto.resolveInput(slot);
      } catch (error) {
        // A broken link (e.g. a cycle through reroutes): leave the input out, and the
        // server names it as missing on the node.
        console.warn(`input ${name} of node ${dto.id}: ${error.message}`);
        return;
      }
      if (resolved?.widgetInfo) {
        inputs[name] = constant(resolved.widgetInfo.value); // a subgraph node's own widget
      } else if (resolved && resolved.node.mode !== MODE_MUTED && !inside(resolved.origin_id)) {
        inputs[name] = [String(resolved.origin_id), resolved.origin_slot];
      } else if (resolved && !input.widget) {
        delete inputs[name]; // fed by a muted node (or one inside a muted subgraph node): left out
      }
    });
    output[dto.id] = { class_type: node.type, inputs, _meta: { title: node.title } };
  }
  return { workflow, output };
}

/** True for an API-format prompt: {id: {class_type, inputs}}. */
export function isApiPrompt(document) {
  if (!document || typeof document !== "object" || Array.isArray(document) || "nodes" in document) return false;
  const entries = Object.values(document);
  return entries.length > 0 && entries.every((e) => e && typeof e === "object" && typeof e.class_type === "string");
}

function isLink(value) {
  return Array.isArray(value) && value.length === 2 && typeof value[1] === "number";
}

/**
 * Fills `graph` from an API prompt. Unknown node types are reported, not fatal.
 * Returns the list of problems (empty when everything was placed).
 */
export function loadApiPrompt(graph, prompt) {
  const problems = [];
  const nodes = new Map();
  for (const [id, entry] of Object.entries(prompt)) {
    const node = LiteGraph.createNode(entry.class_type);
    if (!node) {
      problems.push(`node ${id}: unknown type ${entry.class_type}`);
      continue;
    }
    const numericId = Number(id);
    if (Number.isInteger(numericId) && numericId > 0) node.id = numericId;
    if (entry._meta?.title) node.title = entry._meta.title;
    graph.add(node);
    nodes.set(id, node);
  }
  for (const [id, node] of nodes) {
    const inputs = prompt[id].inputs || {};
    // A DynamicCombo's value first: it makes the widgets of its choice ("combo.input").
    const byDepth = Object.entries(inputs).sort(([a], [b]) => a.split(".").length - b.split(".").length);
    for (const [name, value] of byDepth) {
      if (isLink(value)) continue;
      const widget = node.inputWidgets().find((w) => w.name === name);
      if (widget) widget.value = value && typeof value === "object" && "__value__" in value ? value.__value__ : value;
    }
    const control = node.widgets?.find((w) => w.isControl);
    if (control) control.value = "fixed"; // a prompt's seed is meant to be reproduced
  }
  for (const [id, node] of nodes) {
    for (const [name, value] of Object.entries(prompt[id].inputs || {})) {
      if (!isLink(value)) continue;
      const source = nodes.get(String(value[0]));
      const slot = node.inputs.findIndex((s) => (s.widget?.name || s.name) === name);
      if (!source || slot < 0) {
        problems.push(`node ${id}: cannot connect ${name}`);
        continue;
      }
      if (!source.connect(value[1], node, slot)) problems.push(`node ${id}: ${name} does not accept that type`);
    }
  }
  arrangeByDepth([...nodes.values()]);
  return problems;
}

/** Places nodes in columns by their distance from the graph's sources. */
export function arrangeByDepth(nodes) {
  const depth = new Map();
  const visit = (node, seen = new Set()) => {
    if (depth.has(node.id)) return depth.get(node.id);
    if (seen.has(node.id)) return 0;
    seen.add(node.id);
    let d = 0;
    for (const input of node.inputs || []) {
      if (input.link == null) continue;
      const link = linkById(node.graph, input.link);
      const origin = link && node.graph.getNodeById(link.origin_id);
      if (origin) d = Math.max(d, visit(origin, seen) + 1);
    }
    depth.set(node.id, d);
    return d;
  };
  nodes.forEach((node) => visit(node));
  const columns = new Map();
  for (const node of nodes) {
    const d = depth.get(node.id);
    if (!columns.has(d)) columns.set(d, []);
    columns.get(d).push(node);
  }
  let x = 40;
  for (const d of [...columns.keys()].sort((a, b) => a - b)) {
    let y = 40;
    const column = columns.get(d);
    for (const node of column) {
      node.pos = [x, y];
      y += node.size[1] + 60;
    }
    x += Math.max(...column.map((n) => n.size[0])) + 60;
  }
}
