// Node ids on the canvas: errors, the server's messages and the API format all name nodes by
// id ("node 10:3"), so every node shows its id as a badge above its title, as ComfyUI's
// frontend can. Installed once where litegraph adds nodes to a graph (subgraphs included),
// so every kind of node (ours, the frontend-only ones, subgraph nodes) gets it.

import { LGraph, LGraphBadge, LGraphNode } from "../vendor/litegraph/litegraph.es.js";

const BADGE = { fgColor: "#bbb", bgColor: "#333a", fontSize: 11, height: 16, padding: 5 };

function addIdBadge(node) {
  if (!(node instanceof LGraphNode) || node.idBadgeAdded) return;
  node.idBadgeAdded = true;
  // A function, so a node that gets a new id (paste, convert to subgraph) shows the new one.
  node.badges.unshift(() => new LGraphBadge({ ...BADGE, text: `#${node.id}` }));
}

export function showNodeIds() {
  const add = LGraph.prototype.add;
  if (add.showsIds) return;
  const withIds = function (node, ...rest) {
    const added = add.call(this, node, ...rest);
    addIdBadge(node);
    return added;
  };
  withIds.showsIds = true;
  LGraph.prototype.add = withIds;
}
