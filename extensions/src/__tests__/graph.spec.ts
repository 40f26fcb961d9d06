import { GAP_X, layoutSteps, MARGIN, NODE_HEIGHT, NODE_WIDTH } from '../logic/graph';

const byName = (layout: ReturnType<typeof layoutSteps>) =>
  Object.fromEntries(layout.nodes.map(n => [n.name, [n.layer, n.row]]));

describe('layoutSteps', () => {
  it('puts a chain in consecutive columns', () => {
    const layout = layoutSteps([
      { name: 'load', after: [] },
      { name: 'train', after: ['load'] },
      { name: 'evaluate', after: ['train'] }
    ]);
    expect(byName(layout)).toEqual({ load: [0, 0], train: [1, 0], evaluate: [2, 0] });
    expect(layout.edges).toEqual([
      { from: 'load', to: 'train' },
      { from: 'train', to: 'evaluate' }
    ]);
    expect(layout.width).toBe(2 * MARGIN + 3 * NODE_WIDTH + 2 * GAP_X);
    expect(layout.height).toBe(2 * MARGIN + NODE_HEIGHT);
  });

  it('places a step after its deepest upstream step and stacks siblings in rows', () => {
    const layout = layoutSteps([
      { name: 'load', after: [] },
      { name: 'features', after: ['load'] },
      { name: 'baseline', after: ['load'] },
      { name: 'train', after: ['features'] },
      { name: 'report', after: ['baseline', 'train'] }
    ]);
    expect(byName(layout)).toEqual({
      load: [0, 0],
      features: [1, 0],
      baseline: [1, 1],
      train: [2, 0],
      report: [3, 0]
    });
    const baseline = layout.nodes.find(n => n.name === 'baseline')!;
    expect(baseline.x).toBe(MARGIN + NODE_WIDTH + GAP_X);
    expect(baseline.y).toBeGreaterThan(MARGIN);
  });

  it('ignores unknown upstream names and still draws a cycle', () => {
    const layout = layoutSteps([
      { name: 'a', after: ['b', 'ghost'] },
      { name: 'b', after: ['a'] }
    ]);
    expect(layout.nodes.map(n => n.name)).toEqual(['a', 'b']);
    expect(layout.edges).toEqual([
      { from: 'b', to: 'a' },
      { from: 'a', to: 'b' }
    ]);
  });

  it('is empty for no steps', () => {
    expect(layoutSteps([])).toEqual({ nodes: [], edges: [], width: 0, height: 0 });
  });
});
