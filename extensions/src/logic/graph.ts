/** Layered left-to-right layout of a pipeline's steps from their `after` edges. */

export interface IStepLike {
  name: string;
  after: string[];
}

export interface INode {
  name: string;
  /** Column: the longest chain of upstream steps before this one. */
  layer: number;
  /** Row within the column, in the pipeline's step order. */
  row: number;
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

export const NODE_WIDTH = 110;
export const NODE_HEIGHT = 28;
export const GAP_X = 40;
export const GAP_Y = 14;
export const MARGIN = 6;

/**
 * Place each step in the column after its deepest upstream step. Unknown upstream names
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

  const rows = new Map<number, number>();
  const nodes: INode[] = steps.map(s => {
    const l = depth(s.name);
    const row = rows.get(l) ?? 0;
    rows.set(l, row + 1);
    return {
      name: s.name,
      layer: l,
      row,
      x: MARGIN + l * (NODE_WIDTH + GAP_X),
      y: MARGIN + row * (NODE_HEIGHT + GAP_Y)
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
  const maxRows = rows.size ? Math.max(...rows.values()) : 0;
  return {
    nodes,
    edges,
    width: layers ? 2 * MARGIN + layers * NODE_WIDTH + (layers - 1) * GAP_X : 0,
    height: maxRows ? 2 * MARGIN + maxRows * NODE_HEIGHT + (maxRows - 1) * GAP_Y : 0
  };
}
