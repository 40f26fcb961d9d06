import { GAP_X, GAP_Y, layoutSteps, MARGIN, NODE_HEIGHT, NODE_WIDTH } from '../logic/graph';

const byName = (layout: ReturnType<typeof layoutSteps>) =>
  Object.fromEntries(layout.nodes.map(n => [n.name, [n.layer, n.slot]]));

describe('layoutSteps', () => {
  it('puts a chain in consecutive layers, top-down', () => {
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
    expect(layout.width).toBe(2 * MARGIN + NODE_WIDTH);
    expect(layout.height).toBe(2 * MARGIN + 3 * NODE_HEIGHT + 2 * GAP_Y);
    expect(layout.nodes.map(n => n.y)).toEqual([
      MARGIN,
      MARGIN + NODE_HEIGHT + GAP_Y,
      MARGIN + 2 * (NODE_HEIGHT + GAP_Y)
    ]);
  });

  it('places a step below its deepest upstream step and siblings side by side', () => {
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
    expect([baseline.x, baseline.y]).toEqual([
      MARGIN + NODE_WIDTH + GAP_X,
      MARGIN + NODE_HEIGHT + GAP_Y
    ]);
    expect(layout.width).toBe(2 * MARGIN + 2 * NODE_WIDTH + GAP_X);
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
