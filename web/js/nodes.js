// Node types built from /object_info: one LGraphNode subclass per definition.
//
// Sockets come first (links only), then one widget per widget input, each with its own
// widget socket (as in ComfyUI's current frontend): a link dropped on a widget turns it
// into an input, and removing the link turns it back. "Convert to input" in the node's
// menu hides a widget behind a plain socket; "Convert to widget" restores it.
// Nodes draw their output images, the running outline and their errors.

import { LGraphNode, LiteGraph } from "../vendor/litegraph/litegraph.es.js";
import { addInputWidget, comboValues, setComboValues, widgetKind } from "./widgets.js";
import { applyWidgetValues, isDynamicCombo, makeDynamicCombo } from "./dynamic_combo.js";

const OPTIONAL_SHAPE = 7; // RenderShape.HollowCircle, as ComfyUI marks optional inputs
const LIST_SHAPE = 6; // RenderShape.GRID, for list outputs
const IMAGE_AREA_MIN = 180;

/** The node's declared inputs in input order: [{name, spec, optional}]. */
export function declaredInputs(def) {
  const result = [];
  for (const section of ["required", "optional"]) {
    const specs = def.input?.[section] || {};
    const order = def.input_order?.[section] || Object.keys(specs);
    for (const name of order) {
      if (specs[name]) result.push({ name, spec: specs[name], optional: section === "optional" });
    }
  }
  return result;
}

function socketType(spec) {
  const kind = widgetKind(spec);
  if (kind) return kind;
  return Array.isArray(spec) ? String(spec[0]) : String(spec);
}

/** Hides a widget and its linked widgets (a converted widget takes no space). */
function hideWidget(widget) {
  for (const w of [widget, ...(widget.linkedWidgets || [])]) {
    w.hidden = true;
    w.computeSize = () => [0, -4];
  }
}

function showWidget(widget) {
  for (const w of [widget, ...(widget.linkedWidgets || [])]) {
    w.hidden = false;
    delete w.computeSize;
  }
}

/** Base class of every node type made from a definition. */
export class ApiNode extends LGraphNode {
  /** Set on each subclass: the /object_info entry and the application. */
  static nodeDef = null;
  static app = null;

  constructor(title) {
    super(title);
    const def = this.constructor.nodeDef;
    const app = this.constructor.app;
    this.serialize_widgets = true;
    this.properties ||= {};
    this.properties["Node name for S&R"] = def.name;
    this.imgs = null;
    for (const { name, spec, optional } of declaredInputs(def)) {
      if (widgetKind(spec)) continue; // added with its widget below
      this.addInput(name, socketType(spec), optional ? { shape: OPTIONAL_SHAPE } : {});
    }
    for (const { name, spec } of declaredInputs(def)) {
      if (!widgetKind(spec)) continue;
      const widget = addInputWidget(this, name, spec, app);
      if (!widget) continue;
      if (spec[1]?.forceInput) {
        this.addInput(name, socketType(spec));
        hideWidget(widget);
        widget.forceInput = true; // link only: never offered as a widget
      } else {
        this.addInput(name, socketType(spec), { widget: { name } });
      }
      if (isDynamicCombo(spec)) makeDynamicCombo(this, widget, spec, app);
    }
    (def.output || []).forEach((type, i) => {
      const extra = def.output_is_list?.[i] ? { shape: LIST_SHAPE } : {};
      this.addOutput(def.output_name?.[i] || type, type, extra);
    });
    const size = this.computeSize();
    this.setSize([Math.max(size[0], 220), size[1]]);
  }

  get app() {
    return this.constructor.app;
  }

  /** Widgets whose value goes into the API prompt (not control or upload widgets). */
  inputWidgets() {
    return (this.widgets || []).filter((w) => !w.isControl && !w.isUpload);
  }

  isConverted(widget) {
    const slot = this.inputs?.find((s) => s.name === widget.name);
    return Boolean(slot && !slot.widget);
  }

  onAdded() {
    const combo = this.widgets?.some((w) => w.isUpload) && this.widgets.find((w) => w.type === "combo");
    if (combo?.value) this.app.showInputImage(this, combo.value);
  }

  onConfigure(info) {
    if (info?.widgets_values && this.widgets?.some((w) => w.dynamicSpec)) applyWidgetValues(this, info.widgets_values);
    // Files saved before widget sockets existed (or by other editors) lack some widget
    // inputs: add them; a socket named like a widget but without the marker is a widget
    // converted to an input.
    for (const widget of this.inputWidgets()) {
      const slot = this.inputs.find((s) => s.name === widget.name || s.widget?.name === widget.name);
      const spec = widget.inputSpec || this.#specOf(widget.name);
      if (!slot) this.addInput(widget.name, socketType(spec), { widget: { name: widget.name } });
      else if (!slot.widget) hideWidget(widget);
    }
    this.onAdded();
  }

  #specOf(name) {
    const def = this.constructor.nodeDef;
    return def.input?.required?.[name] || def.input?.optional?.[name] || ["*"];
  }

  /** Turns a widget into a plain input socket. */
  convertToInput(widget) {
    const slot = this.inputs.find((s) => s.widget?.name === widget.name);
    if (!slot) return;
    delete slot.widget;
    delete slot.pos;
    hideWidget(widget);
    this.#relayout();
  }

  /** Turns a converted input back into its widget (dropping its link). */
  convertToWidget(widget) {
    const index = this.inputs.findIndex((s) => s.name === widget.name && !s.widget);
    if (index < 0) return;
    if (this.inputs[index].link != null) this.disconnectInput(index);
    this.inputs[index].widget = { name: widget.name };
    showWidget(widget);
    this.#relayout();
  }

  #relayout() {
    this._setConcreteSlots?.();
    const size = this.computeSize();
    this.setSize([Math.max(this.size[0], size[0]), Math.max(size[1], this.imgs ? this.size[1] : 0)]);
    this.graph?.change?.();
    this.setDirtyCanvas(true, true);
    this.app.changed();
  }

  getExtraMenuOptions() {
    const items = [];
    for (const widget of this.inputWidgets()) {
      if (widget.forceInput) continue;
      if (this.isConverted(widget)) {
        items.push({ content: `Convert ${widget.name} to widget`, callback: () => this.convertToWidget(widget) });
      } else if (this.inputs.some((s) => s.widget?.name === widget.name)) {
        items.push({ content: `Convert ${widget.name} to input`, callback: () => this.convertToInput(widget) });
      }
    }
    if (this.imgs?.length) {
      items.push({ content: "Open image", callback: () => window.open(this.imgs[this.imageIndex || 0].src, "_blank") });
    }
    return items; // litegraph puts these first, then a separator
  }

  /** A websocket "executed" message for this node: shows its images. */
  onExecuted(output) {
    const images = output?.images;
    if (!Array.isArray(images)) return;
    this.showImages(images.map((image) => this.app.api.viewUrl(image)));
  }

  /** Shows images (URLs) below the widgets, growing the node to fit. */
  showImages(urls) {
    this.imgs = urls.map((url) => {
      const img = new Image();
      img.onload = () => this.setDirtyCanvas(true, true);
      img.src = url;
      return img;
    });
    this.imageIndex = 0;
    const needed = this.#contentBottom() + IMAGE_AREA_MIN;
    if (this.size[1] < needed) this.setSize([Math.max(this.size[0], 220), needed]);
    this.setDirtyCanvas(true, true);
  }

  #contentBottom() {
    const visible = (this.widgets || []).filter((w) => !w.hidden);
    if (visible.length) {
      const last = visible.at(-1);
      return (last.y || 0) + (last.computedHeight || LiteGraph.NODE_WIDGET_HEIGHT + 4) + 4;
    }
    const rows = Math.max(this.inputs.filter((s) => !s.widget).length, this.outputs.length, 1);
    return rows * LiteGraph.NODE_SLOT_HEIGHT + 6;
  }

  onDrawForeground(ctx) {
    if (this.flags?.collapsed) return;
    this.#drawImages(ctx);
    this.app.drawNodeState(this, ctx);
  }

  #drawImages(ctx) {
    const images = (this.imgs || []).filter((img) => img.complete && img.naturalWidth);
    if (!images.length) return;
    const top = this.#contentBottom();
    const area = [6, top, this.size[0] - 12, this.size[1] - top - 6];
    if (area[3] < 20) return;
    const columns = Math.ceil(Math.sqrt(images.length));
    const rows = Math.ceil(images.length / columns);
    const cellW = area[2] / columns;
    const cellH = area[3] / rows;
    images.forEach((img, i) => {
      const scale = Math.min(cellW / img.naturalWidth, cellH / img.naturalHeight);
      const w = img.naturalWidth * scale;
      const h = img.naturalHeight * scale;
      const x = area[0] + (i % columns) * cellW + (cellW - w) / 2;
      const y = area[1] + Math.floor(i / columns) * cellH + (cellH - h) / 2;
      ctx.drawImage(img, x, y, w, h);
    });
  }
}

/**
 * Registers (or updates) one node type per definition. Existing nodes keep working; their
 * combo widgets get the new choices (model lists refreshed).
 */
export function registerNodeDefs(defs, app, graph) {
  for (const [name, def] of Object.entries(defs)) {
    if (def.frontendOnly) continue;
    const existing = LiteGraph.registered_node_types[name];
    if (existing && existing.prototype instanceof ApiNode) {
      existing.nodeDef = def;
      continue;
    }
    const cls = class extends ApiNode {};
    Object.defineProperty(cls, "name", { value: name.replace(/\W/g, "_") });
    cls.nodeDef = def;
    cls.app = app;
    cls.title = def.display_name || name;
    cls.description = def.description || "";
    LiteGraph.registerNodeType(name, cls);
    cls.category = def.category || "other";
  }
  for (const node of graph?._nodes || []) {
    const def = defs[node.type];
    if (!def || !node.widgets) continue;
    for (const { name, spec } of declaredInputs(def)) {
      const widget = node.widgets.find((w) => w.name === name && w.type === "combo");
      if (widget && widgetKind(spec) === "COMBO" && !isDynamicCombo(spec)) setComboValues(widget, comboValues(spec));
    }
  }
}
