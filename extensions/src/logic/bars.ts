/** The comparison view's metric chart: one group of horizontal bars per metric, a bar per
 * run, each scaled to the largest absolute value of its metric. */

import { ICompareRow } from './contract';

export const BAR_HEIGHT = 12;
export const BAR_GAP = 2;
export const LABEL_HEIGHT = 16;
export const GROUP_GAP = 8;

export interface IBar {
  metric: string;
  run: number;
  value: number;
  /** Fraction of the chart's width, 0..1. */
  width: number;
  y: number;
}

export interface IBarLayout {
  labels: { metric: string; y: number }[];
  bars: IBar[];
  height: number;
}

export function layoutBars(metrics: ICompareRow<number>[], runs: number): IBarLayout {
  const labels: { metric: string; y: number }[] = [];
  const bars: IBar[] = [];
  let y = 0;
  for (const m of metrics) {
    labels.push({ metric: m.name, y });
    y += LABEL_HEIGHT;
    const largest = Math.max(0, ...m.values.map(v => (v === null ? 0 : Math.abs(v))));
    for (let i = 0; i < runs; i++) {
      const v = m.values[i];
      if (v !== null && v !== undefined) {
        bars.push({
          metric: m.name,
          run: i,
          value: v,
          width: largest > 0 ? Math.abs(v) / largest : 0,
          y
        });
      }
      y += BAR_HEIGHT + BAR_GAP;
    }
    y += GROUP_GAP;
  }
  return { labels, bars, height: Math.max(y - GROUP_GAP, 0) };
}
