// ComfyUI's DynamicCombo (COMFY_DYNAMICCOMBO_V3): a combo whose choices each reveal their
// own inputs. /object_info describes it as [DYNAMIC_COMBO, {options: [{key, inputs:
// {required, optional}}]}]; a choice's input "width" of the combo "resize_type" is the
// node's input "resize_type.width". As in ComfyUI's frontend, setting the combo's value
// removes the widgets (and input sockets) of the previous choice and adds the new choice's
// right after the combo, so only they are shown and saved: a workflow's widgets_values list
// the combo's value, then its choice's widgets' values, then the node's other widgets.
// Choices may nest (a revealed input that is itself a DynamicCombo).

import { DYNAMIC_COMBO, addInputWidget, comboValues, widgetKind } from "./widgets.js";

const OPTIONAL_SHAPE = 7;

/** True for a DynamicCombo's input spec. */
export function isDynamicCombo(spec) {
  return Array.isArray(spec) && spec[0] === DYNAMIC_COMBO;
}

/** The socket type of an input spec ("COMBO" for a widget combo, else its type name). */
function socketType(spec) {
  return widgetKind(spec) || (Array.isArray(spec) ? String(spec[0]) : String(spec));
}

/** The inputs `choice` reveals: [{name, spec, optional}] with the node's full names. */
function revealedInputs(combo, choice) {
  const option = (combo.dynamicSpec[1]?.options || []).find((o) => o.key === choice);
  const result = [];
  for (const section of ["required", "optional"]) {
    for (const [short, spec] of Object.entries(option?.inputs?.[section] || {})) {
      result.push({ name: `${combo.name}.${short}`, spec, optional: section === "optional" });
    }
  }
  return result;
}

/** A remembered value that still fits the new widget (a combo's value among its choices). */
function fits(widget, spec, value) {
  if (value === undefined) return false;
  if (widgetKind(spec) === "COMBO") return comboValues(spec).includes(value);
  return typeof value === typeof widget.value;
}

/**
 * Makes the combo `widget` of `node` (created from `spec`) a DynamicCombo. `app` is passed
 * on to the widgets it creates. Values of widgets a choice removes are remembered by name and
 * come back when a choice shows them again (as the frontend does).
 */
export function makeDynamicCombo(node, widget, spec, app) {
  widget.dynamicSpec = spec;
  let value = widget.value;
  Object.defineProperty(widget, "value", {
    configurable: true,
    get: () => value,
    set: (next) => {
      value = next;
      reveal(node, widget, app);
    },
  });
  widget.value = value;
}

function reveal(node, combo, app) {
  const prefix = `${combo.name}.`;
  const wanted = revealedInputs(combo, combo.value);
  node.dynamicValues ??= new Map();
  // Drop the previous choice's widgets (nested ones too: their names share the prefix).
  const group = new Set();
  for (const w of node.widgets || []) {
    if (!w.name.startsWith(prefix)) continue;
    group.add(w);
    for (const linked of w.linkedWidgets || []) group.add(linked);
    if (!w.isControl) node.dynamicValues.set(w.name, w.value);
  }
  if (group.size) node.widgets = node.widgets.filter((w) => !group.has(w));
  // Add the new choice's widgets right after the combo (a nested combo adds its own after it).
  const start = node.widgets.length;
  for (const input of wanted) {
    if (!widgetKind(input.spec)) continue;
    const added = addInputWidget(node, input.name, input.spec, app);
    if (!added) continue;
    added.inputSpec = input.spec;
    const remembered = node.dynamicValues.get(input.name);
    if (isDynamicCombo(input.spec)) {
      if (fits(added, input.spec, remembered)) added.value = remembered;
      makeDynamicCombo(node, added, input.spec, app);
    } else if (fits(added, input.spec, remembered)) {
      added.value = remembered;
    }
  }
  const created = node.widgets.splice(start);
  node.widgets.splice(node.widgets.indexOf(combo) + 1, 0, ...created);
  syncSockets(node, prefix, wanted);
  if (node.graph) {
    const size = node.computeSize();
    node.setSize([Math.max(node.size[0], size[0]), size[1]]);
    node.setDirtyCanvas(true, true);
  }
}

/** Input sockets follow the widgets: the old choice's go (with their links), the new one's
 * come (a widget's own socket, or a plain one for a link-only input such as an image). */
function syncSockets(node, prefix, wanted) {
  // A nested combo's widgets (already added) keep their sockets too.
  const names = new Set([...wanted.map((input) => input.name),
    ...node.widgets.filter((w) => w.name.startsWith(prefix)).map((w) => w.name)]);
  for (let slot = (node.inputs || []).length - 1; slot >= 0; slot--) {
    const input = node.inputs[slot];
    if (!input.name.startsWith(prefix) || names.has(input.name)) continue;
    if (input.link != null && node.graph) node.disconnectInput(slot);
    node.removeInput(slot);
  }
  for (const input of wanted) {
    if (node.inputs?.some((s) => s.name === input.name)) continue;
    // Appended, not inserted: other sockets keep their slot numbers (links refer to them).
    if (widgetKind(input.spec)) node.addInput(input.name, socketType(input.spec), { widget: { name: input.name } });
    else node.addInput(input.name, socketType(input.spec), input.optional ? { shape: OPTIONAL_SHAPE } : {});
  }
}

/**
 * Re-reads a saved widgets_values list with the widgets each DynamicCombo value shows:
 * litegraph assigns the list to the widgets the node had before the first combo changed them.
 */
export function applyWidgetValues(node, values) {
  for (let i = 0; i < values.length; i++) {
    const widget = (node.widgets || []).filter((w) => w.serialize !== false)[i];
    if (widget) widget.value = values[i];
  }
}
