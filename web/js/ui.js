// Small DOM helpers shared by the editor's panels: element creation, toasts, dialogs.

/**
 * Creates an element: h("button.primary#queue", {onclick, title}, "Queue").
 * Props starting with "on" become listeners; "dataset" and "style" objects are merged.
 */
export function h(tag, props = {}, ...children) {
  const [, name, rest] = tag.match(/^([a-z0-9-]*)(.*)$/i);
  const element = document.createElement(name || "div");
  for (const part of rest.match(/[.#][^.#]+/g) || []) {
    if (part[0] === ".") element.classList.add(part.slice(1));
    else element.id = part.slice(1);
  }
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null) continue;
    if (key.startsWith("on") && typeof value === "function") element.addEventListener(key.slice(2), value);
    else if (key === "dataset" || key === "style") Object.assign(element[key], value);
    else if (key in element && typeof value !== "string") element[key] = value;
    else element.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

/** Shows a message at the bottom right for a few seconds. kind: "info" | "error" | "success". */
export function toast(message, kind = "info", seconds = 4) {
  let box = document.getElementById("toasts");
  if (!box) {
    box = h("div#toasts");
    document.body.append(box);
  }
  const item = h(`div.toast.${kind}`, { role: kind === "error" ? "alert" : "status" }, message);
  box.append(item);
  setTimeout(() => item.remove(), seconds * 1000);
  return item;
}

/**
 * A modal dialog. `body` is an element or text; `buttons` is [{label, value, primary}].
 * Resolves to the clicked button's value, or null when dismissed (Escape / backdrop).
 */
export function dialog(title, body, buttons = [{ label: "OK", value: true, primary: true }]) {
  return new Promise((resolve) => {
    const close = (value) => {
      backdrop.remove();
      document.removeEventListener("keydown", onKey, true);
      resolve(value);
    };
    const onKey = (event) => {
      if (event.key === "Escape") {
        event.stopPropagation();
        close(null);
      } else if (event.key === "Enter" && event.target.tagName !== "TEXTAREA") {
        const primary = buttons.find((b) => b.primary);
        if (primary) {
          event.preventDefault();
          close(typeof primary.value === "function" ? primary.value() : primary.value);
        }
      }
    };
    const footer = h("div.dialog-buttons", {},
      buttons.map((b) => h(`button${b.primary ? ".primary" : ""}`, {
        onclick: () => close(typeof b.value === "function" ? b.value() : b.value),
      }, b.label)));
    const box = h("div.dialog", { role: "dialog", "aria-label": title },
      h("h2", {}, title), h("div.dialog-body", {}, body), footer);
    const backdrop = h("div.dialog-backdrop", { onmousedown: (e) => e.target === backdrop && close(null) }, box);
    document.body.append(backdrop);
    document.addEventListener("keydown", onKey, true);
    (box.querySelector("input, textarea") || footer.querySelector(".primary"))?.focus();
  });
}

/** Asks for one line of text; resolves to the text, or null when cancelled. */
export async function askText(title, label, initial = "") {
  const input = h("input", { type: "text", value: initial, "aria-label": label });
  const body = h("label.field", {}, h("span", {}, label), input);
  setTimeout(() => input.select(), 0);
  return dialog(title, body, [
    { label: "Cancel", value: null },
    { label: "OK", value: () => input.value, primary: true },
  ]);
}

/** Offers `text` as a download named `filename`. */
export function download(filename, text, type = "application/json") {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = h("a", { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
