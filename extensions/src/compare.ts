/** The comparison view: the selected runs side by side (parameters, differences marked;
 * metrics as bars; each step's time and cache status). */

import { fill, h, s } from './dom';
import { BAR_HEIGHT, LABEL_HEIGHT, layoutBars } from './logic/bars';
import { layoutCurve } from './logic/curves';
import { ICompare } from './logic/contract';
import { formatNumber, formatSeconds, formatStart } from './logic/status';

const CHART_WIDTH = 240;
const VALUE_WIDTH = 48;
const CURVE_HEIGHT = 90;
const AXIS = 14;

/** A run's column heading: its number in the selection, start time and aliases. */
function runHead(run: ICompare['runs'][number], i: number): HTMLElement {
  return h(
    'th',
    { class: `nbmlops-compare-run nbmlops-series-${i % 5}`, title: `run ${run.run_id}` },
    h('span', { class: 'nbmlops-swatch' }),
    `#${i + 1} ${formatStart(run.start_time)}`,
    ...run.aliases.map(a => h('span', { class: 'nbmlops-alias', 'data-nbmlops-alias': a }, `@${a}`))
  );
}

function table(
  data: ICompare,
  label: string,
  rows: HTMLElement[],
  attrs: Record<string, string>
): HTMLElement {
  return h(
    'table',
    { class: 'nbmlops-table nbmlops-compare-table', ...attrs },
    h('tr', {}, h('th', {}, label), ...data.runs.map(runHead)),
    ...rows
  );
}

function metricChart(data: ICompare): Element {
  const layout = layoutBars(data.metrics, data.runs.length);
  const width = CHART_WIDTH;
  const svg = s('svg', {
    class: 'nbmlops-bars',
    'data-nbmlops': 'compare-metrics-chart',
    width,
    height: layout.height,
    viewBox: `0 0 ${width} ${layout.height}`,
    role: 'img',
    'aria-label': 'metrics of the selected runs'
  });
  for (const l of layout.labels) {
    svg.appendChild(s('text', { x: 0, y: l.y + LABEL_HEIGHT - 4, class: 'nbmlops-bars-label' }, l.metric));
  }
  for (const b of layout.bars) {
    const w = Math.max(1, b.width * (width - VALUE_WIDTH));
    svg.appendChild(
      s(
        'rect',
        {
          x: 0,
          y: b.y,
          width: w,
          height: BAR_HEIGHT,
          class: `nbmlops-bar nbmlops-series-${b.run % 5}`,
          'data-nbmlops-bar': `${b.metric}:${data.runs[b.run].run_id}`
        },
        s('title', {}, `#${b.run + 1} ${b.metric} = ${b.value}`)
      )
    );
    // Beside its bar, on the panel's background.
    svg.appendChild(
      s(
        'text',
        { x: w + 4, y: b.y + BAR_HEIGHT - 2, class: 'nbmlops-bars-value' },
        formatNumber(b.value)
      )
    );
  }
  return svg;
}

/** A metric logged by step: a line per run, the step range below, the value range left. */
function curveChart(curve: { name: string; runs: [number, number][][] }, data: ICompare): Element {
  const inner = CHART_WIDTH - VALUE_WIDTH;
  const layout = layoutCurve(curve.runs, inner, CURVE_HEIGHT);
  const height = CURVE_HEIGHT + 2 * AXIS;
  const svg = s('svg', {
    class: 'nbmlops-curves',
    'data-nbmlops': 'compare-curve',
    'data-nbmlops-metric': curve.name,
    width: CHART_WIDTH,
    height,
    viewBox: `0 0 ${CHART_WIDTH} ${height}`,
    role: 'img',
    'aria-label': `${curve.name} by step in the selected runs`
  });
  svg.appendChild(s('text', { x: 0, y: AXIS - 3, class: 'nbmlops-bars-label' }, curve.name));
  const plot = s('g', { transform: `translate(0 ${AXIS})` });
  plot.appendChild(
    s('rect', { x: 0, y: 0, width: inner, height: CURVE_HEIGHT, class: 'nbmlops-curve-frame' })
  );
  for (const line of layout.lines) {
    const run = data.runs[line.run].run_id;
    plot.appendChild(
      s(
        'polyline',
        {
          points: line.points,
          class: `nbmlops-curve nbmlops-series-${line.run % 5}`,
          'data-nbmlops-curve': `${curve.name}:${run}`
        },
        s('title', {}, `#${line.run + 1} ${curve.name}: ${line.points.split(' ').length} steps`)
      )
    );
    plot.appendChild(
      s(
        'text',
        { x: inner + 4, y: line.last.y + 4, class: 'nbmlops-bars-value' },
        formatNumber(line.last.value)
      )
    );
  }
  svg.appendChild(plot);
  const [first, last] = layout.steps;
  const [low, high] = layout.values;
  const base = AXIS + CURVE_HEIGHT + AXIS - 3;
  svg.appendChild(
    s('text', { x: 0, y: base, class: 'nbmlops-bars-value' }, `step ${first}–${last}`)
  );
  svg.appendChild(
    s(
      'text',
      { x: inner, y: base, class: 'nbmlops-bars-value', 'text-anchor': 'end' },
      `${formatNumber(low)}–${formatNumber(high)}`
    )
  );
  return svg;
}

/** The view for `data` (two or more runs: side by side; one run: its steps). */
export function compareView(data: ICompare, into: HTMLElement): void {
  if (!data.runs.length) {
    fill(into);
    return;
  }
  const params = data.params.map(p =>
    h(
      'tr',
      {
        class: p.differs ? 'nbmlops-differs' : '',
        'data-nbmlops-compare-param': p.name,
        'data-nbmlops-differs': p.differs ? 'true' : 'false'
      },
      h('td', {}, h('code', {}, p.name), p.differs ? h('span', { class: 'nbmlops-differs-mark' }, ' ≠') : null),
      ...p.values.map(v => h('td', {}, v === null ? '—' : h('code', {}, v)))
    )
  );
  const steps = data.steps.map(st =>
    h(
      'tr',
      { 'data-nbmlops-compare-step': st.name },
      h('td', {}, st.name),
      ...st.runs.map(r =>
        h(
          'td',
          { 'data-nbmlops-cache': r?.cache ?? '' },
          r === null
            ? '—'
            : r.cache === 'hit'
              ? 'cached'
              : `${formatSeconds(r.seconds) || r.status.toLowerCase()}${
                  r.status === 'FINISHED' ? '' : ` (${r.status.toLowerCase()})`
                }`
        )
      )
    )
  );
  fill(
    into,
    h('h3', {}, data.runs.length > 1 ? `Compare ${data.runs.length} runs` : 'Selected run'),
    data.params.length
      ? table(data, 'Parameter', params, { 'data-nbmlops': 'compare-params' })
      : h('p', { class: 'nbmlops-hint' }, 'No parameters.'),
    data.metrics.length
      ? h('div', { class: 'nbmlops-compare-chart' }, h('div', { class: 'nbmlops-hint' }, 'Metrics'), metricChart(data))
      : h('p', { class: 'nbmlops-hint' }, 'No metrics.'),
    data.curves?.length
      ? h(
          'div',
          { class: 'nbmlops-compare-chart' },
          h('div', { class: 'nbmlops-hint' }, 'Metrics by step'),
          ...data.curves.map(c => curveChart(c, data))
        )
      : null,
    table(data, 'Step', steps, { 'data-nbmlops': 'compare-steps' })
  );
}
