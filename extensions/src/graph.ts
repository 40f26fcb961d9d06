/** The steps graph: an SVG drawn from logic/graph's layout. */

import { s } from './dom';
import { IStepLike, layoutSteps, NODE_HEIGHT, NODE_WIDTH } from './logic/graph';

/** `statuses`: a running job's step states, to colour the nodes; `cells` (the server's
 * answer, not the live model's links) name a step's cells in its tooltip. */
export function stepsGraph(
  steps: (IStepLike & { cells?: number[] })[],
  statuses: Map<string, string> = new Map()): SVGElement {
  const layout = layoutSteps(steps);
  const svg = s('svg', {
    'data-nbmlops': 'steps-graph',
    class: 'nbmlops-graph',
    width: layout.width,
    height: layout.height,
    viewBox: `0 0 ${layout.width} ${layout.height}`,
    role: 'img',
    'aria-label': `pipeline steps: ${steps.map(st => st.name).join(', ')}`
  });
  svg.appendChild(
    s(
      'defs',
      {},
      s(
        'marker',
        {
          id: 'nbmlops-arrow',
          viewBox: '0 0 10 10',
          refX: 10,
          refY: 5,
          markerWidth: 6,
          markerHeight: 6,
          orient: 'auto-start-reverse'
        },
        s('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'nbmlops-graph-arrow' })
      )
    )
  );
  const at = new Map(layout.nodes.map(n => [n.name, n]));
  for (const e of layout.edges) {
    const a = at.get(e.from)!;
    const b = at.get(e.to)!;
    const x1 = a.x + NODE_WIDTH / 2;
    const y1 = a.y + NODE_HEIGHT;
    const x2 = b.x + NODE_WIDTH / 2;
    const y2 = b.y;
    const mid = (y1 + y2) / 2;
    svg.appendChild(
      s('path', {
        class: 'nbmlops-graph-edge',
        'data-nbmlops-edge': `${e.from}->${e.to}`,
        d: `M ${x1} ${y1} C ${x1} ${mid}, ${x2} ${mid}, ${x2} ${y2}`,
        'marker-end': 'url(#nbmlops-arrow)'
      })
    );
  }
  for (const n of layout.nodes) {
    const status = statuses.get(n.name);
    const step = steps.find(st => st.name === n.name);
    const label = n.name.length > 14 ? n.name.slice(0, 13) + '…' : n.name;
    svg.appendChild(
      s(
        'g',
        {
          class: `nbmlops-graph-node${status ? ` nbmlops-status-${status.toLowerCase()}` : ''}`,
          'data-nbmlops-step': n.name,
          transform: `translate(${n.x}, ${n.y})`
        },
        s(
          'title',
          {},
          `${n.name}${step?.cells?.length ? ` (cells ${step.cells.join(', ')})` : ''}${
            status ? `: ${status}` : ''
          }`
        ),
        s('rect', { width: NODE_WIDTH, height: NODE_HEIGHT, rx: 5, ry: 5 }),
        s('text', { x: NODE_WIDTH / 2, y: NODE_HEIGHT / 2, 'dominant-baseline': 'central' }, label)
      )
    );
  }
  return svg;
}
