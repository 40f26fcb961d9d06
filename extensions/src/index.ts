/**
 * nbmlops in JupyterLab: the "Mark as step..." command (cell toolbar, context menu,
 * palette), step badges on cells, and the "nbmlops" side panel.
 *
 * Everything is fail-soft: an error here is logged or shown in the panel, never thrown
 * into JupyterLab, so a notebook always opens.
 */

import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, IFrame, MainAreaWidget } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { trackBadges } from './badges';
import { openFailedMessage } from './logic/errors';
import { nbmlopsIcon } from './icon';
import { markAsParameters, markAsStep } from './markstep';
import { NbmlopsPanel, PANEL_ID } from './panel';

const PLUGIN_ID = 'nbmlops-lab:plugin';

export namespace CommandIDs {
  export const markStep = 'nbmlops:mark-step';
  export const markParameters = 'nbmlops:mark-parameters';
  export const openPanel = 'nbmlops:open-panel';
}

function activate(
  app: JupyterFrontEnd,
  tracker: INotebookTracker,
  palette: ICommandPalette | null,
  settings: ISettingRegistry | null
): void {
  try {
    activateUnsafe(app, tracker, palette);
  } catch (err) {
    console.error('nbmlops: the JupyterLab extension could not start', err);
  }
  // Loading our settings makes the cell toolbar pick up our "Mark as step..." button.
  settings?.load(PLUGIN_ID).catch(err => console.warn('nbmlops: settings not loaded', err));
}

function activateUnsafe(
  app: JupyterFrontEnd,
  tracker: INotebookTracker,
  palette: ICommandPalette | null
): void {
  const { commands, shell } = app;

  commands.addCommand(CommandIDs.markStep, {
    label: 'Mark as step...',
    caption: 'Tag this cell as the start of an nbmlops pipeline step',
    icon: args => (args['toolbar'] ? nbmlopsIcon : undefined),
    isEnabled: () => !!tracker.currentWidget?.content.activeCell,
    execute: async () => {
      const panel = tracker.currentWidget;
      const cell = panel?.content.activeCell;
      if (!panel || !cell) {
        return false;
      }
      try {
        return await markAsStep(panel.content, cell);
      } catch (err) {
        console.error('nbmlops: Mark as step failed', err);
        return false;
      }
    }
  });

  commands.addCommand(CommandIDs.markParameters, {
    label: 'Mark as parameters',
    caption: 'Tag this cell "parameters": the defaults a run overrides (again: untag it)',
    isEnabled: () => !!tracker.currentWidget?.content.activeCell,
    execute: async () => {
      const panel = tracker.currentWidget;
      const cell = panel?.content.activeCell;
      if (!panel || !cell) {
        return false;
      }
      try {
        return await markAsParameters(panel.content, cell);
      } catch (err) {
        console.error('nbmlops: Mark as parameters failed', err);
        return false;
      }
    }
  });

  const panel = new NbmlopsPanel({
    openPath: async path => {
      try {
        await app.serviceManager.contents.get(path, { content: false });
      } catch {
        throw new Error(openFailedMessage(path));
      }
      await commands.execute('docmanager:open', { path });
    },
    openPage: (url, title) => {
      // The report is the server's own page (inline SVG images, no scripts): a frame that
      // runs no script but is sent the login cookie (same origin).
      const frame = new IFrame({ sandbox: ['allow-same-origin'] });
      frame.url = url;
      const tab = new MainAreaWidget({ content: frame });
      tab.id = `nbmlops-report-${Date.now()}`;
      tab.title.label = title;
      tab.title.icon = nbmlopsIcon;
      tab.title.closable = true;
      tab.addClass('nbmlops-report');
      shell.add(tab, 'main');
      shell.activateById(tab.id);
    }
  });
  panel.title.icon = nbmlopsIcon;
  shell.add(panel, 'right', { rank: 900 });

  commands.addCommand(CommandIDs.openPanel, {
    label: 'Open the nbmlops panel',
    caption: 'Show the pipeline, runs and promotion of the active notebook',
    execute: () => {
      shell.activateById(PANEL_ID);
    }
  });

  if (palette) {
    palette.addItem({ command: CommandIDs.markStep, category: 'nbmlops' });
    palette.addItem({ command: CommandIDs.markParameters, category: 'nbmlops' });
    palette.addItem({ command: CommandIDs.openPanel, category: 'nbmlops' });
  }
  app.contextMenu.addItem({
    command: CommandIDs.markStep,
    selector: '.jp-Notebook .jp-Cell',
    rank: 20
  });
  app.contextMenu.addItem({
    command: CommandIDs.markParameters,
    selector: '.jp-Notebook .jp-Cell',
    rank: 21
  });

  const follow = (nb: NotebookPanel | null) => {
    try {
      panel.setNotebook(nb);
    } catch (err) {
      console.error('nbmlops: panel update failed', err);
    }
  };
  tracker.currentChanged.connect((_, nb) => follow(nb));
  tracker.widgetAdded.connect((_, nb) => {
    try {
      trackBadges(nb);
    } catch (err) {
      console.warn('nbmlops: step badges unavailable', err);
    }
  });
  tracker.forEach(nb => {
    try {
      trackBadges(nb);
    } catch {
      /* fail-soft */
    }
  });
  follow(tracker.currentWidget);
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'nbmlops: mark cells as pipeline steps, run the pipeline, promote the best model.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette, ISettingRegistry],
  activate
};

export default plugin;
