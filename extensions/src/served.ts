/**
 * "Served model": the version holding the alias (its run, when it was promoted, why when
 * forced), the latest drift and performance verdicts over the predictions its service
 * logged, and a button that opens the over-time report in a JupyterLab tab.
 */

import { h } from './dom';
import { IGlance } from './logic/contract';
import { formatStart } from './logic/status';

export function servedView(g: IGlance, openReport: () => void): HTMLElement {
  const box = h('div', { class: 'nbmlops-served', 'data-nbmlops': 'served' });
  const c = g.champion;
  if (!c) {
    box.append(h('p', { class: 'nbmlops-hint', 'data-nbmlops': 'served-note' }, g.note));
    return box;
  }
  const when = c.promoted_at ? formatStart(c.promoted_at) : 'at an unknown time';
  box.append(
    h(
      'div',
      { 'data-nbmlops': 'served-champion' },
      h('code', {}, `${g.model}@${g.alias}`),
      ' is version ',
      h('strong', { 'data-nbmlops': 'served-version' }, c.version),
      c.run_id ? ' from run ' : '',
      c.run_id ? h('code', { title: c.run_id }, c.run_id.slice(0, 8)) : null,
      `, ${c.action === 'rollback' ? 'rolled back' : 'promoted'} ${when}`,
      c.promoted_by ? ` by ${c.promoted_by}` : ''
    )
  );
  if (c.forced) {
    box.append(
      h('div', { class: 'nbmlops-forced', 'data-nbmlops': 'served-forced' }, 'Forced: ', c.reason)
    );
  }
  const verdicts = h('div', { class: 'nbmlops-verdicts' });
  if (g.drift) {
    const drifted = g.drift.verdict === 'drift';
    verdicts.append(
      verdict(
        'served-drift',
        drifted,
        drifted
          ? `Drift in the latest ${g.drift.window} window: ${g.drift.features.join(', ')}`
          : `No drift in the latest ${g.drift.window} window`
      )
    );
  }
  if (g.performance) {
    verdicts.append(
      verdict('served-performance', g.performance.verdict === 'alert', g.performance.summary)
    );
  }
  box.append(verdicts);
  if (g.note) {
    box.append(h('p', { class: 'nbmlops-hint', 'data-nbmlops': 'served-note' }, g.note));
  }
  if (g.drift || g.performance) {
    const open = h(
      'button',
      { type: 'button', class: 'jp-mod-styled nbmlops-button', 'data-nbmlops': 'served-report' },
      'Open the report'
    );
    open.addEventListener('click', openReport);
    box.append(open);
  }
  return box;
}

function verdict(name: string, bad: boolean, text: string): HTMLElement {
  return h(
    'div',
    {
      class: bad ? 'nbmlops-error nbmlops-verdict' : 'nbmlops-success nbmlops-verdict',
      'data-nbmlops': name,
      'data-nbmlops-verdict': bad ? 'alert' : 'ok'
    },
    text
  );
}
