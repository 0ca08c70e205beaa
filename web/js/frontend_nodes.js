// Frontend-only nodes, as in ComfyUI: kept in the workflow, never sent to the server.
//
// Note: a text note on the canvas.
// Reroute: a dot that passes one link through, to tidy long links. Its output takes the
//   type of what feeds it (through other reroutes), so the usual type check applies after it.
// PrimitiveNode: one widget that feeds the widget inputs it is linked to. Its value is
//   written into each target's own widget, and that is what the prompt sends; the link
//   itself is left out (graph/ui_format.py reads saved workflows the same way).
//
// All three are virtual nodes (litegraph's isVirtualNode): graphToPrompt (prompt.js) sends
// none of them, follows links through reroutes and leaves links from primitives out, having
// first had each primitive push its value. While a workflow loads, the app sets
// graph.configuringWorkflow and afterwards calls onGraphConfigured() on every node: the
// types and widgets are worked out once every node and link is in place.

import { LGraphNode, LiteGraph } from "../vendor/litegraph/litegraph.es.js";
import { declaredInputs } from "./nodes.js";
import { linkById } from "./prompt.js";
import { addInputWidget, textareaWidget } from "./widgets.js";

const ANY = "*";
const MAX_HOPS = 256;

export const FRONTEND_DEFS = {
  Note: {
    name: "Note", display_name: "Note", category: "utils", frontendOnly: true,
    description: "A text note on the canvas; it does not run.", input: { required: {} }, output: [],
  },
  Reroute: {
    name: "Reroute", display_name: "Reroute", category: "utils", frontendOnly: true,
    description: "Passes one link through, to tidy the canvas; it does not run.", input: { required: {} },
    output: [],
  },
  PrimitiveNode: {
    name: "PrimitiveNode", display_name: "Primitive", category: "utils", frontendOnly: true,
    description: "One value for the widget inputs it is linked to (e.g. a seed shared by two samplers).",
    input: { required: {} }, output: [],
  },
};

/** The node and output slot at the start of a link, or null. */
function linkOrigin(graph, linkId) {
  const link = linkId == null ? null : linkById(graph, linkId);
  const node = link && graph.getNodeById(link.origin_id);
  return node ? { node, slot: link.origin_slot } : null;
}

/** The type a reroute carries: its first non-reroute source's output type, or "*". */
function rerouteType(reroute) {
  let node = reroute;
  for (let hops = 0; hops < MAX_HOPS; hops++) {
    const origin = linkOrigin(node.graph, node.inputs[0]?.link);
    if (!origin) return ANY;
    if (origin.node.type !== "Reroute") return origin.node.outputs[origin.slot]?.type ?? ANY;
    node = origin.node;
  }
  return ANY;
}

/** Gives every reroute of `graph` (and its outgoing links) the type it carries. */
function updateRerouteTypes(graph) {
  if (!graph) return;
  for (const node of graph._nodes) {
    if (node.type !== "Reroute") continue;
    const type = rerouteType(node);
    node.outputs[0].type = type;
    for (const linkId of node.outputs[0].links || []) {
      const link = linkById(graph, linkId);
      if (link) link.type = type;
    }
  }
}

class Reroute extends LGraphNode {
  constructor(title) {
    super(title);
    this.addInput("", ANY);
    this.addOutput("", ANY);
    this.isVirtualNode = true; // litegraph's execution view passes its input through
    this.setSize([80, 26]);
  }

  onConnectionsChange() {
    if (!this.graph?.configuringWorkflow) updateRerouteTypes(this.graph);
  }

  onGraphConfigured() {
    updateRerouteTypes(this.graph);
  }
}
Reroute.title = "Reroute";
Reroute.title_mode = 1; // TitleMode.NO_TITLE: just the dot-sized body with its two sockets

class PrimitiveNode extends LGraphNode {
  constructor(title) {
    super(title);
    this.addOutput("connect to widget input", ANY);
    this.isVirtualNode = true;
    this.serialize_widgets = true;
    this.savedValues = null;
  }

  /** The linked target widgets: [{node, widget}], skipping targets without that widget. */
  targets() {
    const found = [];
    for (const linkId of this.outputs[0].links || []) {
      const link = linkById(this.graph, linkId);
      const node = link && this.graph.getNodeById(link.target_id);
      const slot = node?.inputs?.[link.target_slot];
      const name = slot?.widget?.name || slot?.name;
      const widget = node?.widgets?.find((w) => w.name === name);
      if (widget) found.push({ node, widget });
    }
    return found;
  }

  /** Writes this node's value into every target widget. */
  pushValue() {
    const own = this.widgets?.[0];
    if (!own) return;
    for (const { node, widget } of this.targets()) {
      widget.value = own.value;
      node.setDirtyCanvas?.(true, false);
    }
  }

  onConfigure(info) {
    this.savedValues = info.widgets_values || null;
  }

  onGraphConfigured() {
    this.adopt();
  }

  onConnectionsChange() {
    if (this.graph && !this.graph.configuringWorkflow) this.adopt();
  }

  /** Takes the widget of the first target (its kind, options and value), or drops it when unlinked. */
  adopt() {
    const [first] = this.targets();
    if (!first) {
      if (!this.outputs[0].links?.length) {
        this.widgets = [];
        this.outputs[0].type = ANY;
        this.outputs[0].name = "connect to widget input";
        delete this.outputs[0].widget;
      }
      return;
    }
    const name = first.widget.name;
    if (this.widgets?.[0]?.name === name) return;
    const def = first.node.constructor.nodeDef;
    const spec = def && declaredInputs(def).find((input) => input.name === name)?.spec;
    if (!spec) return;
    this.widgets = [];
    const widget = addInputWidget(this, name, spec, first.node.constructor.app);
    if (!widget) return;
    const values = this.savedValues;
    this.savedValues = null;
    widget.value = values ? values[0] : first.widget.value;
    const control = widget.linkedWidgets?.[0];
    if (control && values?.length > 1) control.value = values[1];
    const previous = widget.callback;
    widget.callback = (...args) => {
      previous?.(...args);
      this.pushValue();
    };
    const type = first.node.inputs.find((s) => (s.widget?.name || s.name) === name)?.type ?? ANY;
    this.outputs[0].type = type;
    this.outputs[0].name = type;
    this.outputs[0].widget = { name };
    const size = this.computeSize();
    this.setSize([Math.max(this.size[0], size[0], 220), size[1]]);
    this.pushValue();
  }
}
PrimitiveNode.title = "Primitive";

class Note extends LGraphNode {
  constructor(title) {
    super(title);
    this.serialize_widgets = true;
    this.isVirtualNode = true;
    this.color = "#432";
    this.bgcolor = "#653";
    textareaWidget(this, "text", "", Note.app);
    this.setSize([360, 130]);
  }
}
Note.title = "Note";

/** Registers the frontend-only node types once; `app` serves the Note's text editing. */
export function registerFrontendNodes(app) {
  Note.app = app;
  for (const [name, cls] of [["Note", Note], ["Reroute", Reroute], ["PrimitiveNode", PrimitiveNode]]) {
    if (LiteGraph.registered_node_types[name]) continue;
    LiteGraph.registerNodeType(name, cls);
    cls.category = "utils";
  }
}
