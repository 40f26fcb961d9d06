/** The comparison view's metric curves: for a metric logged by step
 * (`nbmlops.log_metric(name, value, step=i)`), one polyline per run over a shared
 * step axis (x) and value axis (y), scaled into a `width` x `height` box. */

export interface ICurveLine {
  run: number;
  /** SVG `points`: "x,y x,y ...", y growing downwards. */
  points: string;
  last: { step: number; value: number; x: number; y: number };
}

export interface ICurveLayout {
  lines: ICurveLine[];
  steps: [number, number];
  values: [number, number];
}

export function layoutCurve(
  runs: [number, number][][],
  width: number,
  height: number
): ICurveLayout {
  const all = runs.flat();
  const steps: [number, number] = [
    Math.min(...all.map(p => p[0])),
    Math.max(...all.map(p => p[0]))
  ];
  const values: [number, number] = [
    Math.min(...all.map(p => p[1])),
    Math.max(...all.map(p => p[1]))
  ];
  const sx = (step: number) =>
    steps[1] > steps[0] ? ((step - steps[0]) / (steps[1] - steps[0])) * width : width / 2;
  const sy = (value: number) =>
    values[1] > values[0]
      ? height - ((value - values[0]) / (values[1] - values[0])) * height
      : height / 2;
  const round = (v: number) => Math.round(v * 10) / 10;
  const lines: ICurveLine[] = [];
  runs.forEach((points, run) => {
    if (!points.length) {
      return;
    }
    const [step, value] = points[points.length - 1];
    lines.push({
      run,
      points: points.map(([st, v]) => `${round(sx(st))},${round(sy(v))}`).join(' '),
      last: { step, value, x: round(sx(step)), y: round(sy(value)) }
    });
  });
  return { lines, steps, values };
}
