// Undo/redo by snapshots: after each user action the workflow is serialised and, when it
// differs from the last snapshot (ignoring the view position), the old one is kept.

const LIMIT = 100;

function comparable(workflow) {
  const copy = { ...workflow, extra: { ...(workflow.extra || {}) } };
  delete copy.extra.ds;
  return JSON.stringify(copy);
}

export class UndoHistory {
  /**
   * `serialize()` returns the current workflow; `restore(workflow)` loads one;
   * `onChange(workflow)` is told about every new state (the app saves it for reloads).
   */
  constructor({ serialize, restore, onChange }) {
    this.serialize = serialize;
    this.restore = restore;
    this.onChange = onChange;
    this.undoStack = [];
    this.redoStack = [];
    this.current = null;
    this.paused = false;
  }

  /** Starts over from the current graph (after loading a workflow). */
  reset() {
    this.undoStack = [];
    this.redoStack = [];
    this.current = comparable(this.serialize());
    this.onChange?.(this.serialize());
  }

  /** Records the graph's state if it changed since the last call. */
  check() {
    if (this.paused || this.current === null) return false;
    const workflow = this.serialize();
    const state = comparable(workflow);
    if (state === this.current) return false;
    this.undoStack.push(this.current);
    if (this.undoStack.length > LIMIT) this.undoStack.shift();
    this.redoStack = [];
    this.current = state;
    this.onChange?.(workflow);
    return true;
  }

  undo() {
    this.check();
    return this.#move(this.undoStack, this.redoStack);
  }

  redo() {
    return this.#move(this.redoStack, this.undoStack);
  }

  #move(from, to) {
    if (!from.length) return false;
    to.push(this.current);
    this.current = from.pop();
    this.paused = true;
    try {
      this.restore(JSON.parse(this.current));
    } finally {
      this.paused = false;
    }
    this.onChange?.(this.serialize());
    return true;
  }
}
