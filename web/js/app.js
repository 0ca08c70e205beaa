// The editor application: the graph and its canvas, the panels, and the actions the top
// bar and keyboard trigger (queue, undo/redo, save/open, groups).

import { LGraph, LGraphCanvas, LGraphGroup, LiteGraph } from "../vendor/litegraph/litegraph.es.js";
import { Api } from "./api.js";
import { ErrorDisplay } from "./errors.js";
import { ExecutionView } from "./execution.js";
import { FRONTEND_DEFS, registerFrontendNodes } from "./frontend_nodes.js";
import { registerNodeDefs } from "./nodes.js";
import { SubgraphView, registerSubgraphTypes } from "./subgraphs.js";
import { showNodeIds } from "./node_ids.js";
import { NodeSearch, Palette, acceptsInput, providesOutput } from "./palette.js";
import { MODE_BYPASSED, MODE_MUTED, graphToPrompt, loadApiPrompt } from "./prompt.js";
import { QueuePanel } from "./queue_panel.js";
import { openTextEditor } from "./text_editor.js";
import { toast } from "./ui.js";
import { UndoHistory } from "./undo.js";
import { applyControl } from "./widgets.js";
import { WorkflowFiles } from "./workflow_io.js";

const STORAGE_KEY = "latentgraph.workflow";
const DEFAULT_EXAMPLE = "txt2img";
const $ = (id) => document.getElementById(id);

export class App {
  constructor() {
    this.api = new Api();
    this.defs = {};
    this.workflowName = "Unsaved workflow";
    this.graph = null;
    this.canvas = null;
  }

  /** Builds everything, loads the node definitions and the last (or default) workflow. */
  async start() {
    showNodeIds();
    this.#setupCanvas();
    this.palette = new Palette(this, $("palette"));
    this.search = new NodeSearch(this);
    this.errors = new ErrorDisplay(this, $("error-panel"));
    this.execution = new ExecutionView(this, { bar: $("progress-bar"), label: $("progress-text") });
    this.queuePanel = new QueuePanel(this, $("queue-panel"));
    this.files = new WorkflowFiles(this, $("library-panel"));
    this.undo = new UndoHistory({
      serialize: () => this.graph.serialize(),
      restore: (workflow) => this.#configure(workflow),
      onChange: (workflow) => this.#persist(workflow),
    });
    this.#wireToolbar();
    this.#wireKeys();
    this.api.addEventListener("status", (e) => this.#showQueueSize(e.detail?.status?.exec_info?.queue_remaining));
    this.api.addEventListener("connected", () => document.body.classList.remove("disconnected"));
    this.api.addEventListener("disconnected", () => document.body.classList.add("disconnected"));
    await this.refreshDefinitions();
    this.api.connect();
    await this.#restoreOrDefault();
    this.queuePanel.refresh();
    this.files.refreshLibrary();
    document.body.dataset.ready = "true";
  }

  #setupCanvas() {
    LiteGraph.release_link_on_empty_shows_menu = false;
    LiteGraph.alwaysSnapToGrid = false;
    this.graph = new LGraph();
    registerSubgraphTypes(this.graph);
    const element = $("graph-canvas");
    this.canvas = new LGraphCanvas(element, this.graph);
    this.canvas.allow_searchbox = false;
    this.canvas.show_info = false;
    this.canvas.render_canvas_border = false;
    this.canvas.low_quality_zoom_threshold = 0.45;
    this.graph.start?.();
    const resize = () => {
      const scale = Math.max(window.devicePixelRatio || 1, 1);
      const { width, height } = element.parentElement.getBoundingClientRect();
      element.width = Math.round(width * scale);
      element.height = Math.round(height * scale);
      element.style.width = `${width}px`;
      element.style.height = `${height}px`;
      element.getContext("2d").scale(scale, scale);
      this.canvas.setDirty(true, true);
    };
    new ResizeObserver(resize).observe(element.parentElement);
    resize();
    element.addEventListener("litegraph:canvas", (event) => {
      const { subType, originalEvent } = event.detail || {};
      if (subType === "empty-double-click") this.openSearch(originalEvent);
      if (subType === "after-change") this.changed();
    });
    this.canvas.linkConnector.events.addEventListener("dropped-on-canvas", (event) => this.#linkDropped(event.detail));
    this.subgraphView = new SubgraphView(this.canvas, this.graph);
    // Most edits end with a pointer or key release: take an undo snapshot then.
    window.addEventListener("pointerup", () => this.changed());
    window.addEventListener("keyup", (event) => event.target === document.body && this.changed());
  }

  // -- node definitions -------------------------------------------------------------------

  /** Fetches /object_info and (re)registers node types; combo choices update in place. */
  async refreshDefinitions() {
    try {
      this.defs = { ...(await this.api.objectInfo()), ...FRONTEND_DEFS };
    } catch (error) {
      toast(`Cannot load the node definitions: ${error.message}`, "error", 10);
      return;
    }
    registerFrontendNodes(this);
    registerNodeDefs(this.defs, this, this.graph);
    this.palette.setDefinitions(this.defs);
    this.canvas.setDirty(true, true);
  }

  // -- loading and saving -------------------------------------------------------------------

  #configure(workflow) {
    this.subgraphView.showRoot();
    this.graph.configuringWorkflow = true;
    try {
      this.graph.configure(structuredClone(workflow));
    } finally {
      this.graph.configuringWorkflow = false;
    }
    for (const node of this.graph._nodes) node.onGraphConfigured?.();
    const missing = this.graph._nodes.filter((n) => n.has_errors && !n.constructor.nodeDef).map((n) => n.type);
    // Draw now, not at the next frame: litegraph finds the node under the mouse among the
    // nodes of its last drawing, which until then are the replaced ones (a right-click right
    // after an undo would open the menu of the node as it was before).
    this.canvas.draw(true, true);
    return missing;
  }

  /** Loads a UI-format workflow (replacing the graph), fitted into view: a view saved with
   * it was made on another screen (`restoreView` keeps it, for the editor's own reloads). */
  loadWorkflow(workflow, name = null, { restoreView = false } = {}) {
    this.errors?.clear();
    let missing;
    try {
      missing = this.#configure(workflow);
    } catch (error) {
      toast(`Cannot load the workflow: ${error.message}`, "error");
      return false;
    }
    const ds = workflow.extra?.ds;
    if (restoreView && ds?.offset && ds.scale) {
      this.canvas.ds.offset = [...ds.offset];
      this.canvas.ds.scale = ds.scale;
    } else {
      this.fitView();
    }
    if (missing.length) toast(`Unknown node types: ${[...new Set(missing)].join(", ")}`, "error", 8);
    this.setWorkflowName(name || this.workflowName);
    this.undo.reset();
    return true;
  }

  /** Loads an API-format prompt, laying its nodes out in columns. */
  loadApiPrompt(prompt, name = null) {
    this.errors?.clear();
    this.subgraphView.showRoot();
    this.graph.clear();
    const problems = loadApiPrompt(this.graph, prompt);
    if (problems.length) toast(problems.join("; "), "error", 8);
    this.fitView();
    this.setWorkflowName(name || this.workflowName);
    this.undo.reset();
    this.canvas.setDirty(true, true);
  }

  setWorkflowName(name) {
    this.workflowName = name;
    $("workflow-name").textContent = name;
    document.title = `${name} - Latentgraph`;
    // A rename (saving to the library) changes no node, so nothing else would store it for
    // the next reload.
    try {
      const saved = JSON.parse(localStorage.getItem(STORAGE_KEY) || "null");
      if (saved?.workflow) localStorage.setItem(STORAGE_KEY, JSON.stringify({ ...saved, name }));
    } catch {
      // storage full, disabled or holding something else: only reloads forget the name
    }
  }

  #persist(workflow) {
    try {
      localStorage.setItem(STORAGE_KEY, JSON.stringify({ name: this.workflowName, workflow }));
    } catch {
      // storage full or disabled: the editor still works, only reloads forget
    }
  }

  async #restoreOrDefault() {
    const saved = localStorage.getItem(STORAGE_KEY);
    if (saved) {
      try {
        const { name, workflow } = JSON.parse(saved);
        if (this.loadWorkflow(workflow, name, { restoreView: true })) return;
      } catch {
        // a broken entry: fall back to the default
      }
    }
    await this.loadDefault();
  }

  /** The house-model txt2img example. */
  async loadDefault() {
    try {
      this.files.loadDocument(await this.api.loadExample(DEFAULT_EXAMPLE), DEFAULT_EXAMPLE);
    } catch (error) {
      toast(`Cannot load the default workflow: ${error.message}`, "error");
      this.graph.clear();
      this.undo.reset();
    }
  }

  newWorkflow() {
    this.subgraphView.showRoot();
    this.graph.clear();
    this.canvas.ds.scale = 1;
    this.canvas.ds.offset = [40, 60];
    this.setWorkflowName("Unsaved workflow");
    this.errors.clear();
    this.undo.reset();
    this.canvas.setDirty(true, true);
  }

  /** Records an undo step (and saves for reloads) if the graph changed. */
  changed() {
    setTimeout(() => this.undo?.check(), 0);
  }

  // -- queueing -------------------------------------------------------------------------------

  buildPrompt() {
    return graphToPrompt(this.graph);
  }

  /** Queues the workflow `count` times; control_after_generate applies after each. */
  async queue(count = 1, { front = false } = {}) {
    this.errors.clear();
    for (let i = 0; i < count; i++) {
      const { workflow, output } = this.buildPrompt();
      if (!Object.keys(output).length) {
        toast("The workflow is empty.", "error");
        return false;
      }
      try {
        await this.api.queuePrompt(output, workflow, { front });
      } catch (error) {
        if (error.body?.node_errors || error.body?.error) this.errors.showValidation(error.body);
        else toast(`Cannot queue: ${error.message}`, "error");
        return false;
      }
      for (const node of this.graph._nodes) {
        for (const widget of node.widgets || []) if (widget.isControl) applyControl(widget);
      }
      this.canvas.setDirty(true, true);
    }
    this.changed();
    this.queuePanel.refresh();
    return true;
  }

  /** Interrupts the prompt with this id, by default the one this editor sees running (with
   *  several workers, an id-less interrupt would stop everyone's prompts). */
  async interrupt(promptId = this.execution.finished === false ? this.execution.promptId : undefined) {
    await this.api.interrupt(promptId);
    toast("Interrupting…");
  }

  #showQueueSize(remaining) {
    $("queue-size").textContent = remaining ? `${remaining} in queue` : "";
  }

  // -- nodes on the canvas ----------------------------------------------------------------

  /** Graph coordinates of a mouse event. */
  canvasPosition(event) {
    return this.canvas.convertEventToCanvasOffset(event);
  }

  /** Page coordinates (CSS pixels) of a point in graph coordinates. */
  toScreen(pos) {
    const rect = this.canvas.canvas.getBoundingClientRect();
    const [x, y] = this.canvas.ds.convertOffsetToCanvas(pos);
    return [rect.left + x, rect.top + y];
  }

  nodeAt(event) {
    const [x, y] = this.canvasPosition(event);
    return this.viewedGraph.getNodeOnPos(x, y);
  }

  /** Adds a node of `type` at `pos` (graph coordinates; default: the view's centre). */
  addNode(type, pos = null) {
    const node = LiteGraph.createNode(type);
    if (!node) {
      toast(`Unknown node type ${type}`, "error");
      return null;
    }
    if (!pos) {
      const rect = this.canvas.canvas.getBoundingClientRect();
      const centre = this.canvas.ds.convertCanvasToOffset([rect.width / 2, rect.height / 2]);
      pos = [centre[0] - node.size[0] / 2, centre[1] - node.size[1] / 2];
    }
    node.pos = [pos[0], pos[1]];
    this.viewedGraph.add(node);
    this.canvas.selectNode(node);
    this.changed();
    return node;
  }

  openSearch(event) {
    const pos = this.canvasPosition(event);
    this.search.open(event.clientX, event.clientY, (type) => this.addNode(type, pos));
  }

  /** Zooms and pans so that every node is in view. */
  fitView() {
    const graph = this.viewedGraph;
    const items = [...graph._nodes, ...(graph._groups || [])];
    const rect = this.canvas.canvas.getBoundingClientRect();
    if (!items.length || !rect.width) return;
    const title = LiteGraph.NODE_TITLE_HEIGHT;
    let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
    for (const item of items) {
      x0 = Math.min(x0, item.pos[0]);
      y0 = Math.min(y0, item.pos[1] - title);
      x1 = Math.max(x1, item.pos[0] + item.size[0]);
      y1 = Math.max(y1, item.pos[1] + item.size[1]);
    }
    const margin = 40;
    // Down to the smallest zoom the canvas allows: a wide workflow in a small window is better
    // seen whole and small than partly off-screen.
    const smallest = this.canvas.ds.min_scale ?? 0.1;
    const scale = Math.max(smallest, Math.min(1.1, rect.width / (x1 - x0 + 2 * margin), rect.height / (y1 - y0 + 2 * margin)));
    this.canvas.ds.scale = scale;
    this.canvas.ds.offset = [-x0 + (rect.width / scale - (x1 - x0)) / 2, -y0 + (rect.height / scale - (y1 - y0)) / 2];
    this.canvas.setDirty(true, true);
  }

  /** A link dragged from a slot and released on empty canvas: search for a node to connect. */
  #linkDropped(event) {
    const connector = this.canvas.linkConnector;
    const link = connector.renderLinks[0];
    const towards = connector.state.connectingTo;
    if (!link?.node || !link.fromSlot || !towards || !event) return;
    const { node: from, fromSlotIndex: slot } = link;
    const type = link.fromSlot.type;
    const pos = [event.canvasX, event.canvasY];
    const toInput = towards === "input";
    this.search.open(event.clientX, event.clientY, (nodeType) => {
      const node = this.addNode(nodeType, pos);
      if (!node) return;
      if (toInput) {
        const index = node.inputs.findIndex((s) => s.type === type || s.type === "*");
        if (index >= 0) from.connect(slot, node, index);
      } else {
        const index = node.outputs.findIndex((s) => s.type === type || s.type === "*");
        if (index >= 0) node.connect(index, from, slot);
      }
      this.changed();
    }, toInput ? acceptsInput(type) : providesOutput(type));
  }

  focusNode(node) {
    this.canvas.centerOnNode(node);
    this.canvas.selectNode(node);
  }

  /** Puts the selected nodes in a new group. */
  groupSelected() {
    const nodes = Object.values(this.canvas.selected_nodes || {});
    if (!nodes.length) {
      toast("Select the nodes to group first.");
      return;
    }
    const group = new LGraphGroup("Group");
    this.viewedGraph.add(group);
    group.resizeTo(nodes, 10);
    this.canvas.setDirty(true, true);
    this.changed();
  }

  /** Mutes (mode 2: never runs) or bypasses (mode 4: inputs pass through) the selected nodes. */
  toggleMode(mode) {
    const nodes = Object.values(this.canvas.selected_nodes || {});
    for (const node of nodes) node.mode = node.mode === mode ? 0 : mode;
    this.canvas.setDirty(true, true);
    this.changed();
  }

  /** Called by each node while drawing: muted/bypassed shading, the running outline, errors. */
  drawNodeState(node, ctx) {
    if (node.mode === MODE_MUTED || node.mode === MODE_BYPASSED) {
      const title = LiteGraph.NODE_TITLE_HEIGHT;
      ctx.save();
      ctx.fillStyle = node.mode === MODE_BYPASSED ? "rgba(160, 60, 220, 0.35)" : "rgba(20, 20, 20, 0.55)";
      ctx.beginPath();
      ctx.roundRect(0, -title, node.size[0], node.size[1] + title, 8);
      ctx.fill();
      ctx.restore();
    }
    this.execution?.draw(node, ctx, LiteGraph.NODE_TITLE_HEIGHT);
    this.errors?.draw(node, ctx);
  }

  // -- widget helpers (called by widgets.js) -----------------------------------------------

  /** Opens a textarea over a multi-line text widget. */
  editText(node, widget, canvas) {
    openTextEditor(canvas, node, widget, (text) => {
      widget.value = text;
      widget.callback?.(text);
      this.changed();
    });
  }

  /** Uploads `file` (or one the user picks) and selects it in the node's image combo. */
  async uploadImage(node, widget, file = null) {
    const combo = widget || node.widgets.find((w) => w.type === "combo" && !w.isControl);
    if (!file) {
      const input = document.createElement("input");
      input.type = "file";
      input.accept = "image/png,image/jpeg,image/webp,image/gif,image/bmp";
      input.addEventListener("change", () => input.files[0] && this.uploadImage(node, combo, input.files[0]));
      input.click();
      return;
    }
    try {
      const saved = await this.api.uploadImage(file);
      const name = saved.subfolder ? `${saved.subfolder}/${saved.name}` : saved.name;
      if (!combo.options.values.includes(name)) combo.options.values.push(name);
      combo.value = name;
      this.showInputImage(node, name);
      this.changed();
    } catch (error) {
      toast(`Upload failed: ${error.message}`, "error");
    }
  }

  /** Shows an input-folder image on a LoadImage-like node. */
  /** The graph on the canvas: the workflow itself, or a subgraph opened inside it. */
  get viewedGraph() {
    return this.canvas.graph || this.graph;
  }

  showInputImage(node, name) {
    if (!name) return;
    const parts = String(name).split("/");
    const filename = parts.pop();
    node.showImages([this.api.viewUrl({ filename, subfolder: parts.join("/"), type: "input" })]);
  }

  // -- toolbar and keys ------------------------------------------------------------------------

  #wireToolbar() {
    const on = (id, action) => $(id).addEventListener("click", action);
    on("queue-button", () => this.queue(Math.max(1, Number($("batch-count").value) || 1)));
    on("interrupt-button", () => this.interrupt());
    on("new-button", () => this.newWorkflow());
    on("open-button", () => this.files.chooseFile());
    on("save-button", () => this.files.saveFile());
    on("library-save-button", () => this.files.saveToLibrary());
    on("export-button", () => this.files.exportApi());
    on("default-button", () => this.loadDefault());
    on("subgraph-exit-button", () => this.subgraphView.leave());
    on("undo-button", () => this.undo.undo());
    on("redo-button", () => this.undo.redo());
    on("group-button", () => this.groupSelected());
    on("refresh-button", async () => {
      await this.refreshDefinitions();
      toast("Node definitions and model lists refreshed");
    });
  }

  #wireKeys() {
    window.addEventListener("keydown", (event) => {
      const target = event.target;
      if (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.isContentEditable) return;
      const mod = event.ctrlKey || event.metaKey;
      const key = event.key.toLowerCase();
      let handled = true;
      if (mod && key === "enter") this.queue(Math.max(1, Number($("batch-count").value) || 1), { front: event.shiftKey });
      else if (mod && key === "z" && !event.shiftKey) this.undo.undo();
      else if (mod && (key === "y" || (key === "z" && event.shiftKey))) this.undo.redo();
      else if (mod && key === "s") this.files.saveToLibrary();
      else if (mod && key === "o") this.files.chooseFile();
      else if (mod && key === "g") this.groupSelected();
      else if (!mod && key === ".") this.fitView();
      else if (!mod && key === "r") this.refreshDefinitions();
      else if (mod && key === "m") this.toggleMode(MODE_MUTED);
      else if (mod && key === "b") this.toggleMode(MODE_BYPASSED);
      else handled = false;
      if (handled) event.preventDefault();
    });
  }
}
