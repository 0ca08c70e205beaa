// Workflows in and out: files (save, open, export API format), drag and drop of a JSON
// file or of a PNG made by SaveImage, and the server-side library panel (the user's own
// workflows plus the read-only examples).

import { readPngText } from "./png.js";
import { isApiPrompt } from "./prompt.js";
import { askText, dialog, download, h, toast } from "./ui.js";

function safeName(name) {
  return name.replace(/[\\/:*?"<>|\x00-\x1f]+/g, "_").trim() || "workflow";
}

export class WorkflowFiles {
  constructor(app, libraryContainer) {
    this.app = app;
    this.userList = h("div.library-section#library-user");
    this.exampleList = h("div.library-section#library-examples");
    libraryContainer.append(
      h("div.panel-title", {}, "My workflows",
        h("button.small#save-to-library", { onclick: () => this.saveToLibrary(), title: "Save in the server library" },
          "Save")),
      this.userList,
      h("div.panel-title", {}, "Examples"),
      this.exampleList,
    );
    this.#installDrop();
  }

  // -- documents --------------------------------------------------------------------------

  /** Loads a parsed document: a UI-format workflow or an API-format prompt. */
  loadDocument(document, name = null) {
    if (document && Array.isArray(document.nodes)) {
      this.app.loadWorkflow(document, name);
      return true;
    }
    if (isApiPrompt(document)) {
      this.app.loadApiPrompt(document, name);
      return true;
    }
    toast("This file holds no workflow.", "error");
    return false;
  }

  /** Opens a .json workflow or a PNG carrying one (from SaveImage). */
  async openFile(file) {
    const stem = file.name.replace(/\.[^.]+$/, "");
    try {
      if (file.type === "image/png" || /\.png$/i.test(file.name)) {
        const text = await readPngText(await file.arrayBuffer());
        if (text.workflow) return this.loadDocument(JSON.parse(text.workflow), stem);
        if (text.prompt) return this.loadDocument(JSON.parse(text.prompt), stem);
        toast(`${file.name} carries no workflow.`, "error");
        return false;
      }
      return this.loadDocument(JSON.parse(await file.text()), stem);
    } catch (error) {
      toast(`Cannot open ${file.name}: ${error.message}`, "error");
      return false;
    }
  }

  chooseFile() {
    const input = h("input", { type: "file", accept: ".json,.png,application/json,image/png" });
    input.addEventListener("change", () => input.files[0] && this.openFile(input.files[0]));
    input.click();
  }

  saveFile() {
    const { workflow } = this.app.buildPrompt();
    download(`${safeName(this.app.workflowName)}.json`, JSON.stringify(workflow, null, 2));
  }

  exportApi() {
    const { output } = this.app.buildPrompt();
    download(`${safeName(this.app.workflowName)}_api.json`, JSON.stringify(output, null, 2));
  }

  #installDrop() {
    const target = document.body;
    target.addEventListener("dragover", (event) => {
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
    });
    target.addEventListener("drop", (event) => {
      event.preventDefault();
      const nodeType = event.dataTransfer.getData("application/x-latentgraph-node");
      if (nodeType) {
        this.app.addNode(nodeType, this.app.canvasPosition(event));
        return;
      }
      const file = event.dataTransfer.files?.[0];
      if (!file) return;
      const node = this.app.nodeAt(event);
      if (node && file.type.startsWith("image/") && node.widgets?.some((w) => w.isUpload)) {
        this.app.uploadImage(node, null, file); // an image dropped on LoadImage is uploaded to it
        return;
      }
      this.openFile(file);
    });
  }

  // -- the library --------------------------------------------------------------------------

  async refreshLibrary() {
    try {
      const [mine, examples] = await Promise.all([this.app.api.listUserWorkflows(), this.app.api.listExamples()]);
      this.userList.replaceChildren(...(mine.length ? mine.filter((p) => p.endsWith(".json")).map((path) =>
        h("div.library-item", { dataset: { path } },
          h("button.link", { onclick: () => this.openFromLibrary(path) }, path.replace(/\.json$/, "")),
          h("button.small", { onclick: () => this.deleteFromLibrary(path), title: "Delete" }, "×")))
        : [h("div.empty", {}, "Nothing saved yet.")]));
      // Each example comes as NAME (editor format) and NAME_api (API format): list it once.
      const listed = examples.filter((name) => !(name.endsWith("_api") && examples.includes(name.slice(0, -4))));
      this.exampleList.replaceChildren(...listed.map((name) => h("div.library-item", { dataset: { example: name } },
        h("button.link", { onclick: () => this.openExample(name) }, name))));
    } catch (error) {
      toast(`Cannot list workflows: ${error.message}`, "error");
    }
  }

  async openFromLibrary(path) {
    try {
      this.loadDocument(await this.app.api.loadUserWorkflow(path), path.replace(/\.json$/, ""));
    } catch (error) {
      toast(`Cannot open ${path}: ${error.message}`, "error");
    }
  }

  async openExample(name) {
    try {
      this.loadDocument(await this.app.api.loadExample(name), name);
    } catch (error) {
      toast(`Cannot open example ${name}: ${error.message}`, "error");
    }
  }

  async saveToLibrary() {
    const name = await askText("Save workflow", "Name", this.app.workflowName);
    if (name === null) return;
    const path = `${safeName(name)}.json`;
    const { workflow } = this.app.buildPrompt();
    try {
      await this.app.api.saveUserWorkflow(path, workflow, { overwrite: false });
    } catch (error) {
      if (error.status !== 409) {
        toast(`Cannot save: ${error.message}`, "error");
        return;
      }
      const replace = await dialog("Replace?", `${path} exists. Replace it?`,
        [{ label: "Cancel", value: false }, { label: "Replace", value: true, primary: true }]);
      if (!replace) return;
      await this.app.api.saveUserWorkflow(path, workflow, { overwrite: true });
    }
    this.app.setWorkflowName(path.replace(/\.json$/, ""));
    toast(`Saved ${path}`, "success");
    this.refreshLibrary();
  }

  async deleteFromLibrary(path) {
    const sure = await dialog("Delete workflow", `Delete ${path}?`,
      [{ label: "Cancel", value: false }, { label: "Delete", value: true, primary: true }]);
    if (!sure) return;
    await this.app.api.deleteUserWorkflow(path);
    this.refreshLibrary();
  }
}
