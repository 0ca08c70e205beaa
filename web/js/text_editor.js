// Editing a multi-line text widget: a textarea opened over the widget on the canvas.
// Clicking elsewhere or Ctrl+Enter keeps the text; Escape drops the changes.

/** Opens the editor; `onCommit(text)` is called when the text changed and was kept. */
export function openTextEditor(canvas, node, widget, onCommit) {
  const rect = canvas.canvas.getBoundingClientRect();
  const [x, y] = canvas.ds.convertOffsetToCanvas([node.pos[0] + 15, node.pos[1] + widget.y]);
  const scale = canvas.ds.scale;
  const area = document.createElement("textarea");
  area.className = "widget-textarea";
  area.value = widget.value ?? "";
  area.dataset.node = node.id;
  area.dataset.widget = widget.name;
  area.setAttribute("aria-label", widget.name);
  Object.assign(area.style, {
    left: `${rect.left + x}px`,
    top: `${rect.top + y}px`,
    width: `${Math.max(200, (node.size[0] - 30) * scale)}px`,
    height: `${Math.max(100, (widget.computedHeight || 80) * scale)}px`,
  });
  let done = false;
  const close = (keep) => {
    if (done) return;
    done = true;
    if (keep && area.value !== widget.value) onCommit(area.value);
    area.remove();
    canvas.setDirty(true, true);
  };
  area.addEventListener("blur", () => close(true));
  area.addEventListener("keydown", (event) => {
    event.stopPropagation(); // keys typed here are text, not canvas shortcuts
    if (event.key === "Escape") close(false);
    else if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) close(true);
  });
  document.body.append(area);
  area.focus();
  return area;
}
