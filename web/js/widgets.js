// Widgets made from /object_info input declarations.
//
// INT/FLOAT: number widgets honouring min, max, step and round; STRING: a text field, or a
// multi-line text box (edited in an overlay textarea); COMBO: a drop-down whose choices
// can be refreshed; BOOLEAN: a toggle. An INT with control_after_generate gets a second
// widget "control_after_generate" (fixed / increment / decrement / randomize), applied
// after each queued prompt, as in ComfyUI. A COMBO with image_upload gets an upload
// button and shows the chosen image on the node.

import { LiteGraph } from "../vendor/litegraph/litegraph.es.js";

export const CONTROL_VALUES = ["fixed", "increment", "decrement", "randomize"];
const WIDGET_TYPES = new Set(["INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"]);
// ComfyUI's DynamicCombo: a combo whose choices each reveal their own inputs (nodes.js).
export const DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3";
const TEXTAREA_LINES = 5;
const LINE_HEIGHT = 15;

/** "INT" | "FLOAT" | "STRING" | "BOOLEAN" | "COMBO", or null for a socket-only type. */
export function widgetKind(spec) {
  const type = Array.isArray(spec) ? spec[0] : spec;
  if (Array.isArray(type) || type === DYNAMIC_COMBO) return "COMBO";
  return WIDGET_TYPES.has(type) ? type : null;
}

/** The choices of a combo spec: [[a, b], {...}], ["COMBO", {options: [a, b]}] or a
 * DynamicCombo's [DYNAMIC_COMBO, {options: [{key: a, inputs}, ...]}]. */
export function comboValues(spec) {
  if (Array.isArray(spec[0])) return spec[0];
  if (spec[0] === DYNAMIC_COMBO) return (spec[1]?.options || []).map((option) => option.key);
  return spec[1]?.options || [];
}

function decimalsOf(step) {
  if (!step || step >= 1) return 0;
  const text = String(step);
  return text.includes("e-") ? Number(text.split("e-")[1]) : (text.split(".")[1] || "").length;
}

/** Rounds and clamps a number to what the declaration allows. */
export function snapNumber(value, kind, options) {
  let v = Number(value);
  if (!Number.isFinite(v)) v = options.min ?? 0;
  if (kind === "INT") {
    const step = options.step2 || 1;
    const base = Number.isFinite(options.min) ? options.min : 0;
    v = step > 1 ? Math.round((v - base) / step) * step + base : Math.round(v);
  } else if (options.round) {
    v = Number((Math.round(v / options.round) * options.round).toFixed(options.precision));
  }
  if (options.min != null && v < options.min) v = options.min;
  if (options.max != null && v > options.max) v = options.max;
  return v;
}

function numberWidget(node, name, kind, opts, onChange) {
  const step = opts.step ?? (kind === "INT" ? 1 : 0.1);
  const round = kind === "FLOAT" ? (opts.round === false ? 0 : opts.round ?? 0) : 1;
  const precision = kind === "INT" ? 0 : Math.max(decimalsOf(round || step), decimalsOf(step));
  const options = { min: opts.min, max: opts.max, step2: step, step: step * 10, precision, round };
  const initial = opts.default ?? opts.min ?? 0;
  const widget = node.addWidget("number", name, snapNumber(initial, kind, options), (value) => {
    const snapped = snapNumber(value, kind, widget.options);
    if (snapped !== value) widget.value = snapped;
    onChange?.(widget);
  }, options);
  widget.valueKind = kind;
  return widget;
}

/** Random integer in [min, max] (capped at 2^53 - 1, where doubles stop being exact). */
function randomInteger(min, max) {
  const low = Math.max(0, min ?? 0);
  const high = Math.min(max ?? Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
  return low + Math.floor(Math.random() * (high - low + 1));
}

/** Applies a control_after_generate widget to its number widget (after a prompt is queued). */
export function applyControl(control) {
  const target = control.target;
  if (!target || control.value === "fixed") return;
  const { min, max } = target.options;
  const step = target.options.step2 || 1;
  let value = target.value;
  if (control.value === "increment") value += step;
  else if (control.value === "decrement") value -= step;
  else if (control.value === "randomize") value = randomInteger(min, max);
  target.value = snapNumber(value, target.valueKind || "INT", target.options);
}

function wrapLines(ctx, text, width) {
  const lines = [];
  for (const paragraph of String(text).split("\n")) {
    let line = "";
    for (const word of paragraph.split(" ")) {
      const candidate = line ? `${line} ${word}` : word;
      if (line && ctx.measureText(candidate).width > width) {
        lines.push(line);
        line = word;
      } else {
        line = candidate;
      }
    }
    lines.push(line);
  }
  return lines;
}

/** A multi-line text widget drawn on the canvas; a click opens a textarea over it. */
export function textareaWidget(node, name, value, app) {
  const widget = {
    type: "textarea",
    name,
    value,
    y: 0,
    options: { multiline: true },
    computeSize(width) {
      return [width, TEXTAREA_LINES * LINE_HEIGHT + 8];
    },
    draw(ctx, _node, width, y) {
      const margin = 15;
      const height = TEXTAREA_LINES * LINE_HEIGHT + 8;
      ctx.save();
      ctx.fillStyle = "#1b1b1b";
      ctx.strokeStyle = LiteGraph.WIDGET_OUTLINE_COLOR;
      ctx.beginPath();
      ctx.roundRect(margin, y, width - margin * 2, height, 6);
      ctx.fill();
      ctx.stroke();
      ctx.clip();
      ctx.font = "12px sans-serif";
      const empty = !widget.value;
      ctx.fillStyle = empty ? "#777" : "#ddd";
      const lines = wrapLines(ctx, empty ? name : widget.value, width - margin * 2 - 12);
      lines.slice(0, TEXTAREA_LINES).forEach((line, i) => ctx.fillText(line, margin + 6, y + 16 + i * LINE_HEIGHT));
      ctx.restore();
    },
    onPointerDown(pointer, ownerNode, canvas) {
      if (widget.computedDisabled) return true;
      pointer.onClick = () => app.editText(ownerNode, widget, canvas);
      return true;
    },
  };
  node.addCustomWidget(widget);
  return widget;
}

function comboWidget(node, name, spec, opts) {
  const values = comboValues(spec);
  const initial = opts.default ?? values[0] ?? "";
  const widget = node.addWidget("combo", name, initial, () => {}, { values: [...values] });
  return widget;
}

/**
 * Adds the widget(s) for one widget input and returns the main one.
 * `app` provides editText(node, widget, canvas) and uploadImage(node, widget).
 */
export function addInputWidget(node, name, spec, app) {
  const kind = widgetKind(spec);
  const opts = (Array.isArray(spec) ? spec[1] : null) || {};
  let widget;
  if (kind === "INT" || kind === "FLOAT") {
    widget = numberWidget(node, name, kind, opts);
    if (opts.control_after_generate) {
      const control = node.addWidget("combo", "control_after_generate", "randomize", () => {},
        { values: CONTROL_VALUES });
      control.target = widget;
      control.isControl = true;
      widget.linkedWidgets = [control];
    }
  } else if (kind === "STRING") {
    const initial = opts.default ?? "";
    widget = opts.multiline
      ? textareaWidget(node, name, initial, app)
      : node.addWidget("text", name, initial, () => {}, {});
  } else if (kind === "BOOLEAN") {
    widget = node.addWidget("toggle", name, Boolean(opts.default), () => {},
      { on: opts.label_on || "true", off: opts.label_off || "false" });
  } else if (kind === "COMBO") {
    widget = comboWidget(node, name, spec, opts);
    if (opts.image_upload) {
      widget.callback = () => app.showInputImage(node, widget.value);
      // Serialised as "image" after the file name, as ComfyUI does (graph/ui_format.py skips it).
      const button = node.addWidget("button", "choose file to upload", "image", () => app.uploadImage(node, widget));
      button.isUpload = true;
      button.label = "choose file to upload";
    }
  }
  if (widget && opts.tooltip) widget.tooltip = opts.tooltip;
  return widget;
}

/** Replaces a combo widget's choices (after a refresh), keeping its value. */
export function setComboValues(widget, values) {
  widget.options.values = [...values];
}
