/** "Mark as step...": ask for a step name and upstream steps, write the cell's tags. */

import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Cell } from '@jupyterlab/cells';
import { Notebook } from '@jupyterlab/notebook';
import { Widget } from '@lumino/widgets';

import { h } from './dom';
import {
  afterOf,
  graphProblem,
  parseUpstream,
  stepOf,
  stepsOf,
  validateStep,
  withoutStepTags,
  withStepTags
} from './logic/tags';

const UNMARK = 'Unmark';

interface IChoice {
  name: string;
  after: string[];
}

/** The dialog's body: name input, upstream input, the known steps and the last error. */
class StepForm extends Widget implements Dialog.IBodyWidget<IChoice> {
  constructor(choice: IChoice, known: string[], error: string | null) {
    super({ node: h('form', { class: 'nbmlops-step-form', 'data-nbmlops': 'step-form' }) });
    this._name = h('input', {
      class: 'jp-mod-styled',
      type: 'text',
      value: choice.name,
      placeholder: 'e.g. train',
      'data-nbmlops': 'step-name-input',
      'aria-label': 'step name',
      spellcheck: 'false'
    });
    this._after = h('input', {
      class: 'jp-mod-styled',
      type: 'text',
      value: choice.after.join(', '),
      placeholder: known.length ? `e.g. ${known[known.length - 1]}` : 'none',
      'data-nbmlops': 'step-after-input',
      'aria-label': 'upstream steps',
      spellcheck: 'false'
    });
    const chips = known.map(name => {
      const chip = h(
        'button',
        { type: 'button', class: 'nbmlops-chip', 'data-nbmlops-known-step': name },
        name
      );
      chip.addEventListener('click', () => {
        const ups = parseUpstream(this._after.value);
        this._after.value = (
          ups.includes(name) ? ups.filter(u => u !== name) : [...ups, name]
        ).join(', ');
        sync();
      });
      return chip;
    });
    // A chip is "on" while its step is among the upstream steps typed or picked.
    const sync = () => {
      const ups = parseUpstream(this._after.value);
      chips.forEach((chip, i) => chip.classList.toggle('nbmlops-chip-on', ups.includes(known[i])));
    };
    this._after.addEventListener('input', sync);
    sync();
    this.node.append(
      h('label', { class: 'nbmlops-field' }, h('span', {}, 'Step name'), this._name),
      h(
        'label',
        { class: 'nbmlops-field' },
        h('span', {}, 'After (upstream steps, comma-separated, optional)'),
        this._after
      ),
      known.length
        ? h('div', { class: 'nbmlops-known' }, 'Steps in this notebook: ', ...chips)
        : h('div', { class: 'nbmlops-hint' }, 'No other steps in this notebook yet.'),
      h(
        'div',
        { class: 'nbmlops-hint' },
        'Without "after", the step follows the one before it in the notebook.'
      ),
      h('div', { class: 'nbmlops-error', 'data-nbmlops': 'step-error', hidden: !error }, error ?? '')
    );
    // Enter in a field accepts the dialog (the dialog handles it); never submit the page.
    this.node.addEventListener('submit', ev => ev.preventDefault());
  }

  getValue(): IChoice {
    return { name: this._name.value.trim(), after: parseUpstream(this._after.value) };
  }

  private _name: HTMLInputElement;
  private _after: HTMLInputElement;
}

/** Tags of every cell of the notebook. */
function cellTags(notebook: Notebook): string[][] {
  const out: string[][] = [];
  const cells = notebook.model?.cells;
  if (!cells) {
    return out;
  }
  for (let i = 0; i < cells.length; i++) {
    const tags = cells.get(i).getMetadata('tags');
    out.push(Array.isArray(tags) ? tags.map(String) : []);
  }
  return out;
}

/**
 * Ask for the active cell's step and write its `step:`/`after:` tags. Loops on invalid
 * input with the reason shown; resolves false when cancelled.
 */
export async function markAsStep(notebook: Notebook, cell: Cell): Promise<boolean> {
  const model = cell.model;
  if (model.type !== 'code') {
    await showDialog({
      title: 'Mark as step',
      body:
        `This is a ${model.type} cell; a step starts with a code cell. ` +
        'Select the first code cell of the step, then Mark as step.',
      buttons: [Dialog.okButton({ label: 'OK' })]
    });
    return false;
  }
  const current = (model.getMetadata('tags') as string[] | undefined) ?? [];
  const all = cellTags(notebook);
  const index = notebook.widgets.indexOf(cell);
  const others = stepsOf(all.filter((_, i) => i !== index));
  let choice: IChoice = { name: stepOf(current) ?? '', after: afterOf(current) };
  let error: string | null = null;
  const hasStep = stepOf(current) !== null;

  for (;;) {
    const buttons = [
      Dialog.cancelButton(),
      // Not an "accept" button: the dialog keeps a single .jp-mod-accept (Mark).
      ...(hasStep
        ? [Dialog.warnButton({ label: UNMARK, caption: 'remove the step tags', accept: false })]
        : []),
      Dialog.okButton({ label: 'Mark' })
    ];
    const result = await showDialog<IChoice>({
      title: 'Mark as step',
      body: new StepForm(choice, others, error),
      buttons,
      focusNodeSelector: 'input[data-nbmlops="step-name-input"]'
    });
    const tags = (model.getMetadata('tags') as string[] | undefined) ?? [];
    if (result.button.label === UNMARK) {
      const left = withoutStepTags(tags);
      if (left.length) {
        model.setMetadata('tags', left);
      } else {
        model.deleteMetadata('tags');
      }
      return true;
    }
    if (!result.button.accept) {
      return false;
    }
    choice = result.value ?? choice;
    error = validateStep(choice.name, choice.after, others);
    const proposed = withStepTags(tags, choice.name, choice.after);
    // The whole notebook's graph with this cell's new tags: no loop through order or tags.
    error = error ?? graphProblem(cellTags(notebook).map((t, i) => (i === index ? proposed : t)));
    if (!error) {
      model.setMetadata('tags', proposed);
      return true;
    }
  }
}

const PARAMETERS = 'parameters';

async function refuse(title: string, body: string): Promise<false> {
  await showDialog({ title, body, buttons: [Dialog.okButton({ label: 'OK' })] });
  return false;
}

/**
 * "Mark as parameters": tag the active cell `parameters` (the defaults a run overrides),
 * moving the tag from the cell that had it; on a cell already tagged, remove it. Refused,
 * with the reason, for a markdown cell and for a cell at or below the first step.
 */
export async function markAsParameters(notebook: Notebook, cell: Cell): Promise<boolean> {
  const model = cell.model;
  const title = 'Mark as parameters';
  const tags = (model.getMetadata('tags') as string[] | undefined) ?? [];
  if (tags.includes(PARAMETERS)) {
    const left = tags.filter(t => t !== PARAMETERS);
    if (left.length) {
      model.setMetadata('tags', left);
    } else {
      model.deleteMetadata('tags');
    }
    return true;
  }
  if (model.type !== 'code') {
    return refuse(title, `This is a ${model.type} cell; the parameters are a code cell of assignments.`);
  }
  const all = cellTags(notebook);
  const index = notebook.widgets.indexOf(cell);
  const own = stepOf(tags);
  if (own) {
    return refuse(
      title,
      `This cell starts step "${own}". Keep the parameters in their own cell above the first step.`
    );
  }
  const above = all.slice(0, index).findIndex(t => stepOf(t) !== null);
  if (above >= 0) {
    return refuse(
      title,
      `Step "${stepOf(all[above])}" starts above this cell (cell ${above + 1}); ` +
        'the parameters cell comes before the first step.'
    );
  }
  all.forEach((t, i) => {
    if (i !== index && t.includes(PARAMETERS)) {
      const other = notebook.widgets[i].model;
      const left = t.filter(x => x !== PARAMETERS);
      if (left.length) {
        other.setMetadata('tags', left);
      } else {
        other.deleteMetadata('tags');
      }
    }
  });
  model.setMetadata('tags', [...tags, PARAMETERS]);
  return true;
}
