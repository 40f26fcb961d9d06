/**
 * Show each cell's step on the cell: attributes `data-nbmlops-step` / `data-nbmlops-label`
 * and the class `nbmlops-step-cell` on the cell node; the CSS draws the label with
 * `::before`. Kept in sync when tags change and when cells are created or scrolled into view.
 */

import { Cell } from '@jupyterlab/cells';
import { NotebookPanel } from '@jupyterlab/notebook';

import { afterOf, stepOf } from './logic/tags';

const CLASS = 'nbmlops-step-cell';

/** Update one cell's badge from its tags. */
export function updateBadge(cell: Cell): void {
  const tags = cell.model?.getMetadata('tags') as string[] | undefined;
  const name = stepOf(tags);
  const node = cell.node;
  if (!name) {
    if (node.classList.contains(CLASS)) {
      node.classList.remove(CLASS);
      delete node.dataset.nbmlopsStep;
      delete node.dataset.nbmlopsAfter;
      delete node.dataset.nbmlopsLabel;
    }
    return;
  }
  const after = afterOf(tags);
  const label = after.length ? `step: ${name}  ← ${after.join(', ')}` : `step: ${name}`;
  if (node.dataset.nbmlopsLabel !== label) {
    node.classList.add(CLASS);
    node.dataset.nbmlopsStep = name;
    node.dataset.nbmlopsAfter = after.join(',');
    node.dataset.nbmlopsLabel = label;
  }
}

/** Follow a notebook's cells for its lifetime. */
export function trackBadges(panel: NotebookPanel): void {
  const notebook = panel.content;
  let scheduled = false;
  const refresh = () => {
    if (scheduled) {
      return;
    }
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      if (panel.isDisposed) {
        return;
      }
      try {
        for (const cell of notebook.widgets) {
          updateBadge(cell);
        }
      } catch (err) {
        console.warn('nbmlops: could not update the step badges', err);
      }
    });
  };
  // Tags live in each cell model's metadata: watch every model we see.
  const watched = new WeakSet<object>();
  const watchModels = () => {
    const cells = notebook.model?.cells;
    if (!cells) {
      return;
    }
    for (let i = 0; i < cells.length; i++) {
      const model = cells.get(i);
      if (!watched.has(model)) {
        watched.add(model);
        model.metadataChanged.connect(refresh);
      }
    }
  };
  notebook.modelContentChanged.connect(() => {
    watchModels();
    refresh();
  });
  notebook.cellInViewportChanged.connect((_, cell) => {
    try {
      updateBadge(cell);
    } catch {
      /* fail-soft */
    }
  });
  notebook.modelChanged.connect(refresh);
  void panel.context.ready.then(
    () => {
      watchModels();
      refresh();
    },
    () => undefined
  );
}
