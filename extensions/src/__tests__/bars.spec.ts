import { layoutBars } from '../logic/bars';

describe('layoutBars', () => {
  it('scales each metric to its largest value, a bar per run', () => {
    const layout = layoutBars(
      [
        { name: 'f1', values: [0.5, 1.0], differs: true },
        { name: 'loss', values: [null, 4], differs: true }
      ],
      2
    );
    expect(layout.labels.map(l => l.metric)).toEqual(['f1', 'loss']);
    expect(layout.bars.map(b => [b.metric, b.run, b.width])).toEqual([
      ['f1', 0, 0.5],
      ['f1', 1, 1],
      ['loss', 1, 1]
    ]);
    expect(layout.height).toBeGreaterThan(layout.bars[2].y);
  });
});
