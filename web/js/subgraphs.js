// Subgraphs (litegraph's own): a group of nodes packed into one node, opened by double-click.
//
// litegraph keeps each subgraph's definition in the root graph and announces every new one
// ("subgraph-created": from "Convert to Subgraph" in a node's menu, or from a loaded
// workflow's `definitions.subgraphs`); its instances are nodes whose type is the subgraph's
// id. This registers that node type, so instances can be made. graphToPrompt (prompt.js)
// flattens instances into their inner nodes, with ComfyUI's "instance:node" ids.
// SubgraphView keeps track of the subgraphs opened on the canvas and the bar that leads back.

import { LiteGraph, SubgraphNode } from "../vendor/litegraph/litegraph.es.js";

/** Registers a node type for every subgraph `rootGraph` creates from now on. */
export function registerSubgraphTypes(rootGraph) {
  rootGraph.events.addEventListener("subgraph-created", (event) => {
    const { id } = event.detail.subgraph;
    if (LiteGraph.registered_node_types[id]) return;
    // The definition is looked up when an instance is made: undo and reload rebuild it.
    // litegraph configures the instance from the saved node afterwards; until then, empty.
    const cls = class extends SubgraphNode {
      constructor() {
        super(rootGraph, rootGraph.subgraphs.get(id), {});
      }

      // A subgraph input left unconnected outside shows the inner widget it feeds on this
      // node (litegraph copies it). That copy is not saved and the prompt reads the inner
      // widget, so an edit here is written through to the inner widgets.
      onWidgetChanged(name, value) {
        for (const widget of innerWidgets(this.subgraph, name)) widget.value = value;
      }
    };
    cls.title = event.detail.subgraph.name; // the title of instances saved without one
    LiteGraph.registerNodeType(id, cls);
    cls.category = "subgraphs";
  });
}

/**
 * The node of `rootGraph` that stands for an execution id: the node itself, or for a node
 * inside subgraphs ("10:3", "10:4:2") the subgraph node of the workflow that holds it.
 */
export function displayedNode(rootGraph, executionId) {
  if (executionId == null) return null;
  const first = String(executionId).split(":")[0];
  return rootGraph.getNodeById(first) || rootGraph.getNodeById(Number(first));
}

/** The widgets inside `subgraph` that its input `name` feeds. */
function innerWidgets(subgraph, name) {
  const slot = subgraph.inputNode.slots.find((s) => s.name === name);
  const widgets = [];
  for (const linkId of slot?.linkIds || []) {
    const link = subgraph.getLink(linkId);
    const node = link && subgraph.getNodeById(link.target_id);
    const input = node?.inputs?.[link.target_slot];
    const widget = input && node.widgets?.find((w) => w.name === (input.widget?.name || input.name));
    if (widget) widgets.push(widget);
  }
  return widgets;
}

/** Which graph the canvas shows: double-clicking a subgraph node opens it (litegraph); the
 * bar above the canvas names it and leads back, one level at a time. */
export class SubgraphView {
  constructor(canvas, rootGraph) {
    this.canvas = canvas;
    this.rootGraph = rootGraph;
    this.opened = []; // the graphs each opened subgraph was opened from, innermost last
    canvas.canvas.addEventListener("subgraph-opened", (event) => {
      this.opened.push(event.detail.closingGraph);
      this.#showBar();
    });
  }

  /** Back to the graph the shown subgraph was opened from. */
  leave() {
    const parent = this.opened.pop();
    if (!parent) return;
    this.#show(parent);
  }

  /** Shows the workflow itself again (before it is replaced). */
  showRoot() {
    if (this.canvas.graph === this.rootGraph) return;
    this.opened = [];
    this.#show(this.rootGraph);
  }

  #show(graph) {
    this.canvas.setGraph(graph);
    this.canvas.subgraph = graph === this.rootGraph ? undefined : graph;
    this.#showBar();
  }

  #showBar() {
    const graph = this.canvas.graph;
    const inside = graph !== this.rootGraph;
    document.getElementById("subgraph-bar").hidden = !inside;
    if (inside) document.getElementById("subgraph-name").textContent = graph.name || "Subgraph";
    this.canvas.setDirty(true, true);
  }
}
