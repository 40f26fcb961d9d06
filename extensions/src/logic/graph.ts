/**
 * Layered top-down layout of a pipeline's steps from their `after` edges: it fits the
 * narrow side panel (a chain is a column; parallel steps sit side by side).
 */

export interface IStepLike {
  name: string;
  after: string[];
}

export interface INode {
  name: string;
  /** Row of the drawing: the longest chain of upstream steps before this one. */
  layer: number;
  /** Position within the layer, left to right in the pipeline's step order. */
  slot: number;
  x: number;
  y: number;
}

export interface IEdge {
  from: string;
  to: string;
}

export interface ILayout {
  nodes: INode[];
  edges: IEdge[];
  width: number;
  height: number;
}

export const NODE_WIDTH = 104;
export const NODE_HEIGHT = 26;
export const GAP_X = 12;
export const GAP_Y = 22;
export const MARGIN = 6;

/**
 * Place each step in the layer below its deepest upstream step. Unknown upstream names
 * are ignored and cycles are broken (a step on a cycle counts only the edges already
 * resolved), so a half-edited notebook still draws.
 */
export function layoutSteps(steps: readonly IStepLike[]): ILayout {
  const byName = new Map(steps.map(s => [s.name, s]));
  const layer = new Map<string, number>();
  const visiting = new Set<string>();

  const depth = (name: string): number => {
    const known = layer.get(name);
    if (known !== undefined) {
      return known;
    }
    if (visiting.has(name)) {
      return -1;
    }
    visiting.add(name);
    let d = 0;
    for (const up of byName.get(name)?.after ?? []) {
      if (byName.has(up)) {
        d = Math.max(d, depth(up) + 1);
      }
    }
    visiting.delete(name);
    layer.set(name, d);
    return d;
  };

  const slots = new Map<number, number>();
  const nodes: INode[] = steps.map(s => {
    const l = depth(s.name);
    const slot = slots.get(l) ?? 0;
    slots.set(l, slot + 1);
    return {
      name: s.name,
      layer: l,
      slot,
      x: MARGIN + slot * (NODE_WIDTH + GAP_X),
      y: MARGIN + l * (NODE_HEIGHT + GAP_Y)
    };
  });
  const edges: IEdge[] = [];
  for (const s of steps) {
    for (const up of s.after) {
      if (byName.has(up) && up !== s.name) {
        edges.push({ from: up, to: s.name });
      }
    }
  }
  const layers = nodes.length ? Math.max(...nodes.map(n => n.layer)) + 1 : 0;
  const widest = slots.size ? Math.max(...slots.values()) : 0;
  return {
    nodes,
    edges,
    width: widest ? 2 * MARGIN + widest * NODE_WIDTH + (widest - 1) * GAP_X : 0,
    height: layers ? 2 * MARGIN + layers * NODE_HEIGHT + (layers - 1) * GAP_Y : 0
  };
}
