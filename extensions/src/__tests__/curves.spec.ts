import { layoutCurve } from '../logic/curves';

describe('layoutCurve', () => {
  it('puts every run on shared step and value axes, y downwards', () => {
    const layout = layoutCurve(
      [
        [
          [0, 1],
          [1, 0.5],
          [2, 0]
        ],
        [[0, 1]],
        []
      ],
      100,
      50
    );
    expect(layout.steps).toEqual([0, 2]);
    expect(layout.values).toEqual([0, 1]);
    expect(layout.lines.map(l => [l.run, l.points])).toEqual([
      [0, '0,0 50,25 100,50'],
      [1, '0,0']
    ]);
    expect(layout.lines[0].last).toEqual({ step: 2, value: 0, x: 100, y: 50 });
  });

  it('centres a flat curve', () => {
    const layout = layoutCurve([[[3, 7]]], 100, 50);
    expect(layout.lines[0].points).toBe('50,25');
  });
});
