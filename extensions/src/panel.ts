/**
 * The "nbmlops" side panel for the active notebook: its steps graph, parameters and
 * recent runs, a "Run pipeline" form that follows the job, and "Promote best".
 *
 * It fetches only while shown (or when shown after the notebook changed) and shows every
 * failure inside itself: nothing here may get in the way of a notebook opening.
 */

import { Dialog, InputDialog, showDialog } from '@jupyterlab/apputils';
import { NotebookPanel } from '@jupyterlab/notebook';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { Widget } from '@lumino/widgets';

import { api } from './api';
import { compareView } from './compare';
import { fill, h } from './dom';
import { stepsGraph } from './graph';
import { ICompare, IGlance, IJob, IPipeline, IRuns } from './logic/contract';
import { servedView } from './served';
import {
  ApiError,
  cellSuffix,
  errorMessage,
  IMessage,
  messageText,
  savesKernelFirst
} from './logic/errors';
import { graphProblem, linkSteps, outputNotebookReason } from './logic/tags';
import {
  changedParameters,
  defaultMode,
  formatMetrics,
  formatNumber,
  formatSeconds,
  formatStart,
  jobFinished,
  jobStatusText,
  parseGates,
  runStatusText
} from './logic/status';

export const PANEL_ID = 'nbmlops-panel';
const POLL_MS = 1000;
const LIVE_MS = 300; // the graph follows edits of the notebook this long after the last
const MAX_POLL_FAILURES = 5;

export interface IPanelOptions {
  /** Open a file in JupyterLab (the `docmanager:open` command); rejects with the reason. */
  openPath: (path: string) => Promise<void>;
  /** Open a page of the server (the served model's report) in a JupyterLab tab. */
  openPage: (url: string, title: string) => void;
}

/** A job started from the panel, for the notebook at `path`. */
interface IJobState {
  path: string;
  job: IJob | null;
  message: IMessage | null;
  stopping?: boolean;
}

export class NbmlopsPanel extends Widget {
  constructor(private readonly _options: IPanelOptions) {
    super();
    this.id = PANEL_ID;
    this.addClass('nbmlops-panel');
    this.title.caption = 'nbmlops';
    this.node.append(
      h(
        'header',
        { class: 'nbmlops-header' },
        h('h2', {}, 'nbmlops'),
        (this._refreshButton = h(
          'button',
          {
            class: 'jp-Button jp-mod-minimal nbmlops-refresh',
            'data-nbmlops': 'refresh-button',
            title: 'Reload the pipeline and runs'
          },
          'Reload'
        ))
      ),
      this._where,
      this._error,
      this._body
    );
    this._refreshButton.addEventListener('click', () => void this.refresh());
    this._body.append(
      h('h3', {}, 'Steps'),
      this._graph,
      h('h3', {}, 'Parameters'),
      this._params,
      this._actions,
      this._runForm,
      this._runStatus,
      this._promoteForm,
      this._promoteResult,
      h('h3', {}, 'Served model'),
      this._served,
      h('h3', {}, 'Recent runs'),
      h('p', { class: 'nbmlops-hint' }, 'Select runs to compare them.'),
      this._runs,
      this._compare
    );
    this._runButton.addEventListener('click', () => this._openRunForm());
    this._promoteButton.addEventListener('click', () => this._openPromoteForm());
    this._actions.append(this._runButton, this._promoteButton);
    this._render();
  }

  /** Follow the active notebook (null: none). */
  setNotebook(panel: NotebookPanel | null): void {
    if (panel === this._notebook) {
      return;
    }
    if (this._notebook) {
      this._notebook.context.saveState.disconnect(this._onSaveState, this);
      this._notebook.context.pathChanged.disconnect(this._onPathChanged, this);
      this._watch(this._notebook, false);
    }
    this._notebook = panel;
    this._liveSteps = null;
    this._liveProblem = null;
    // Show what this notebook showed last time until the reload answers.
    const cached = panel ? this._cache.get(panel.context.path) : undefined;
    this._pipeline = cached?.pipeline ?? null;
    this._runsData = cached?.runs ?? null;
    this._pipelineError = null;
    this._runsError = null;
    this._selected = new Set();
    this._compareData = null;
    this._glance = null;
    this._glanceError = null;
    fill(this._runForm);
    fill(this._promoteForm);
    fill(this._promoteResult);
    if (panel) {
      panel.context.saveState.connect(this._onSaveState, this);
      panel.context.pathChanged.connect(this._onPathChanged, this);
      void panel.context.ready.then(() => {
        if (panel === this._notebook) {
          this._watch(panel, true);
        }
      });
    }
    this._stale = true;
    this._render();
    if (this.isVisible) {
      void this.refresh();
    }
  }

  /** Reload the pipeline and the runs of the active notebook; each shows as it arrives. */
  async refresh(): Promise<void> {
    const panel = this._notebook;
    this._stale = false;
    if (!panel) {
      this._render();
      return;
    }
    const generation = ++this._generation;
    this._loading = true;
    this._render();
    const current = () => generation === this._generation && !this.isDisposed;
    try {
      await panel.context.ready;
      const path = panel.context.path;
      if (this._outputReason(path)) {
        return; // a run's output: nothing to ask the server
      }
      const cache = this._cache.get(path) ?? { pipeline: null, runs: null };
      this._cache.set(path, cache);
      const pipeline = api.pipeline(path).then(
        p => {
          cache.pipeline = p;
          if (current()) {
            this._pipeline = p;
            this._pipelineError = null;
            this._render();
          }
        },
        err => {
          cache.pipeline = null;
          if (current()) {
            this._pipeline = null;
            this._pipelineError = err;
            this._render();
          }
        }
      );
      const runs = api.runs(path).then(
        r => {
          cache.runs = r;
          if (current()) {
            this._runsData = r;
            this._runsError = null;
            this._render();
          }
        },
        err => {
          cache.runs = null;
          if (current()) {
            this._runsData = null;
            this._runsError = err;
            this._render();
          }
        }
      );
      const served = api.glance(path).then(
        g => {
          if (current()) {
            this._glance = g;
            this._glanceError = null;
            this._render();
          }
        },
        err => {
          if (current()) {
            this._glance = null;
            this._glanceError = err;
            this._render();
          }
        }
      );
      await Promise.all([pipeline, runs, served, this._loadCompare(path)]);
    } catch (err) {
      if (current()) {
        this._pipelineError = err;
      }
    } finally {
      if (current()) {
        this._loading = false;
        this._render();
      }
    }
  }

  /** The selected runs side by side, and who holds which alias (no selection: aliases). */
  private async _loadCompare(path: string): Promise<void> {
    const ids = [...this._selected];
    try {
      const data = await api.compare(path, ids);
      if (path === this._path && ids.join() === [...this._selected].join()) {
        this._compareData = data;
        this._compareError = null;
        this._renderRuns();
      }
    } catch (err) {
      if (path === this._path) {
        this._compareData = null;
        this._compareError = err;
        this._renderRuns();
      }
    }
  }

  private _toggle(runId: string): void {
    if (this._selected.has(runId)) {
      this._selected.delete(runId);
    } else {
      this._selected.add(runId);
    }
    this._renderRuns();
    if (this._path) {
      void this._loadCompare(this._path);
    }
  }

  protected onAfterShow(): void {
    if (this._stale) {
      void this.refresh();
    }
  }

  /** Follow (or stop following) edits of `panel`'s model: cells added, moved, removed,
   * edited, and their tags. */
  private _watch(panel: NotebookPanel, on: boolean): void {
    const model = panel.content.model;
    if (!model) {
      return;
    }
    const cells = model.cells;
    for (let i = 0; i < cells.length; i++) {
      if (on) {
        cells.get(i).metadataChanged.connect(this._onEdited, this);
      } else {
        cells.get(i).metadataChanged.disconnect(this._onEdited, this);
      }
    }
    if (on) {
      model.contentChanged.connect(this._onEdited, this);
      cells.changed.connect(this._onCellsChanged, this);
    } else {
      model.contentChanged.disconnect(this._onEdited, this);
      cells.changed.disconnect(this._onCellsChanged, this);
      window.clearTimeout(this._liveTimer);
    }
  }

  private _onCellsChanged(): void {
    if (this._notebook) {
      this._watch(this._notebook, true); // the new cells too (connecting twice is a no-op)
    }
    this._onEdited();
  }

  /** Debounced: the graph of the live model, once the edits pause. */
  private _onEdited(): void {
    window.clearTimeout(this._liveTimer);
    this._liveTimer = window.setTimeout(() => {
      const cells = this._notebook?.content.model?.cells;
      if (!cells) {
        return;
      }
      const tags: string[][] = [];
      for (let i = 0; i < cells.length; i++) {
        const t = cells.get(i).getMetadata('tags');
        tags.push(Array.isArray(t) ? t.map(String) : []);
      }
      this._liveSteps = linkSteps(tags);
      this._liveProblem = this._liveSteps ? null : graphProblem(tags);
      this._renderGraph();
    }, LIVE_MS);
  }

  private _onSaveState(_: unknown, state: DocumentRegistry.SaveState): void {
    if (state === 'completed') {
      this._stale = true;
      if (this.isVisible) {
        void this.refresh();
      }
    }
  }

  private _onPathChanged(): void {
    this._stale = true;
    if (this.isVisible) {
      void this.refresh();
    }
  }

  /** Why the active notebook is a run's output, not a pipeline (null: it is a pipeline). */
  private _outputReason(path: string): string | null {
    const cells = this._notebook?.model?.cells;
    const metadata: Record<string, unknown>[] = [];
    for (let i = 0; cells && i < cells.length; i++) {
      metadata.push(cells.get(i).metadata as Record<string, unknown>);
    }
    return outputNotebookReason(path, metadata);
  }

  private get _path(): string | null {
    return this._notebook?.context.path ?? null;
  }

  // ---- rendering -------------------------------------------------------------------

  private _render(): void {
    try {
      this._renderUnsafe();
    } catch (err) {
      fill(this._error, h('div', { class: 'nbmlops-error' }, `nbmlops panel: ${String(err)}`));
    }
  }

  private _renderUnsafe(): void {
    const path = this._path;
    if (!path) {
      fill(this._where, h('p', { class: 'nbmlops-hint' }, 'Open a notebook to see its pipeline.'));
      fill(this._error);
      this._body.hidden = true;
      return;
    }
    const output = this._outputReason(path);
    if (output) {
      fill(
        this._where,
        h('div', { class: 'nbmlops-path', 'data-nbmlops': 'notebook-path' }, path),
        h(
          'p',
          { class: 'nbmlops-hint', 'data-nbmlops': 'output-notebook' },
          `${output} Open the notebook it was run from to see its pipeline and runs.`
        )
      );
      fill(this._error);
      this._body.hidden = true;
      return;
    }
    this._body.hidden = false;
    const experiment = this._pipeline?.experiment ?? this._runsData?.experiment;
    fill(
      this._where,
      h('div', { class: 'nbmlops-path', 'data-nbmlops': 'notebook-path' }, path),
      experiment
        ? h('div', { class: 'nbmlops-experiment' }, 'experiment ', h('code', {}, experiment))
        : null,
      this._loading ? h('div', { class: 'nbmlops-hint', 'data-nbmlops': 'loading' }, 'Loading…') : null
    );
    this._renderError();
    this._renderGraph();
    this._renderParams();
    // Enabled once both answers are in: the runs query also creates a new MLflow store,
    // which a run started at the same moment would race.
    // One run per notebook at a time: the button waits for the run under way (or Stop).
    this._runButton.disabled = !this._pipeline || this._loading || this._running(path);
    this._runButton.title = this._running(path)
      ? 'A run of this notebook is under way: wait for it or stop it'
      : 'Run the pipeline with parameters';
    this._promoteButton.disabled = !this._runsData;
    this._renderJob();
    this._renderServed(path);
    this._renderRuns();
  }

  private _renderServed(path: string): void {
    if (this._glanceError) {
      fill(
        this._served,
        messageBox(errorMessage(this._glanceError), {
          'data-nbmlops': 'served-error',
          title: 'Could not read the served model'
        })
      );
    } else if (this._glance) {
      const g = this._glance;
      fill(
        this._served,
        servedView(g, () =>
          this._options.openPage(api.reportUrl(path), `${g.model}@${g.alias} report`)
        )
      );
    } else {
      fill(this._served);
    }
  }

  private _renderError(): void {
    const parts: HTMLElement[] = [];
    const unsaved = !!this._pipelineError && savesKernelFirst(errorMessage(this._pipelineError));
    if (unsaved) {
      // A brand-new notebook: its kernel is recorded at its first save; not an error yet.
      parts.push(
        h(
          'p',
          { class: 'nbmlops-hint', 'data-nbmlops': 'save-first' },
          'Save the notebook once to record its kernel; the pipeline shows then.'
        )
      );
    } else if (this._pipelineError) {
      const msg = errorMessage(this._pipelineError);
      const parse = this._pipelineError instanceof ApiError && this._pipelineError.status === 422;
      parts.push(
        messageBox(msg, {
          'data-nbmlops': 'parse-error',
          title: parse ? 'nbmlops cannot read this notebook as a pipeline' : 'Could not load the pipeline'
        })
      );
    }
    if (this._runsError) {
      parts.push(
        messageBox(errorMessage(this._runsError), {
          'data-nbmlops': 'runs-error',
          title: 'Could not load the runs'
        })
      );
    }
    for (const w of this._pipeline?.warnings ?? []) {
      parts.push(h('div', { class: 'nbmlops-warning', 'data-nbmlops': 'tag-warning' }, w.message));
    }
    fill(this._error, ...parts);
  }

  private _renderGraph(): void {
    const p = this._pipeline;
    if (!p) {
      fill(this._graph, h('p', { class: 'nbmlops-hint' }, this._loading ? '' : 'No pipeline.'));
      return;
    }
    const job = this._jobFor(p.path);
    const statuses = new Map<string, string>();
    for (const st of job?.job?.steps ?? []) {
      statuses.set(st.name, st.status);
    }
    if (job?.job?.status === 'running' && job.job.current_step) {
      statuses.set(job.job.current_step, 'running');
    }
    // The live notebook's steps once it is edited (unsaved changes included); a loop
    // there keeps the last graph that ran, the dialog and the warnings say why.
    const live = this._liveSteps;
    const steps = live ?? p.steps;
    const unsaved = live !== null && !!this._notebook?.context.model.dirty;
    fill(
      this._graph,
      steps.length
        ? stepsGraph(steps, statuses)
        : h('p', { class: 'nbmlops-hint' }, 'No steps: mark a cell with "Mark as step...".'),
      h(
        'p',
        { class: 'nbmlops-hint', 'data-nbmlops': 'graph-source' },
        this._liveProblem
          ? `As last read: the edited tags make no pipeline. ${this._liveProblem}`
          : unsaved
            ? 'As edited, not saved yet: a run uses the notebook as saved.'
            : 'As in the notebook; it follows your edits.'
      )
    );
  }

  private _renderParams(): void {
    const params = this._pipeline?.parameters ?? [];
    if (!params.length) {
      fill(
        this._params,
        h('p', { class: 'nbmlops-hint' }, this._pipeline ? 'No parameters cell.' : '')
      );
      return;
    }
    fill(
      this._params,
      h(
        'table',
        { class: 'nbmlops-table', 'data-nbmlops': 'params-table' },
        ...params.map(p =>
          h(
            'tr',
            { 'data-nbmlops-param-row': p.name },
            h('td', {}, h('code', {}, p.name)),
            h('td', {}, h('code', {}, p.value)),
            h('td', { class: 'nbmlops-hint' }, p.type ?? '')
          )
        )
      )
    );
  }

  private _renderRuns(): void {
    const runs = this._runsData?.runs ?? [];
    if (!this._runsData) {
      fill(this._runs);
      fill(this._compare);
      return;
    }
    if (!runs.length) {
      fill(
        this._runs,
        h(
          'table',
          { class: 'nbmlops-table', 'data-nbmlops': 'runs-table' },
          h('tr', {}, h('td', { class: 'nbmlops-hint' }, 'No pipeline runs yet.'))
        )
      );
      fill(this._compare);
      return;
    }
    const held = this._compareData?.aliases ?? {};
    const aliasesOf = (runId: string) => Object.keys(held).filter(a => held[a].run_id === runId);
    fill(
      this._runs,
      h(
        'table',
        { class: 'nbmlops-table nbmlops-runs', 'data-nbmlops': 'runs-table' },
        h(
          'tr',
          {},
          h('th', { class: 'nbmlops-select-cell' }, ''),
          h('th', {}, 'Started'),
          h('th', {}, 'Metrics'),
          h('th', { title: 'steps restored from the cache' }, 'Cache')
        ),
        ...runs.map(r => {
          const when = formatStart(r.start_time);
          const title = `run ${r.run_id}${
            r.duration_s !== null ? `, ${formatSeconds(r.duration_s)}` : ''
          }${r.git_commit ? `, commit ${r.git_commit.slice(0, 8)}` : ''}`;
          const selected = this._selected.has(r.run_id);
          const box = h('input', {
            type: 'checkbox',
            'data-nbmlops-select': r.run_id,
            'aria-label': `compare run ${r.run_id}`,
            checked: selected
          });
          const row = h(
            'tr',
            {
              'data-nbmlops-run': r.run_id,
              class: `nbmlops-run-row${selected ? ' nbmlops-selected' : ''}`,
              title
            },
            h('td', { class: 'nbmlops-select-cell' }, box),
            h(
              'td',
              {},
              r.url ? h('a', { href: r.url, target: '_blank', rel: 'noopener' }, when) : when,
              ' ',
              h('span', { class: `nbmlops-run-${runStatusText(r)}` }, runStatusText(r)),
              ...aliasesOf(r.run_id).map(a =>
                h('span', { class: 'nbmlops-alias', 'data-nbmlops-alias': a }, `@${a}`)
              )
            ),
            h(
              'td',
              { class: 'nbmlops-metrics-cell' },
              // One metric a line: the column is narrow in the sidebar.
              ...formatMetrics(r.metrics)
                .split(', ')
                .filter(Boolean)
                .map(m => h('div', {}, m))
            ),
            h('td', {}, r.cache_hits ?? '')
          );
          // The whole row toggles the selection (a link in it still opens MLflow).
          row.addEventListener('click', ev => {
            if ((ev.target as HTMLElement).closest('a')) {
              return;
            }
            if (ev.target !== box) {
              ev.preventDefault();
            }
            this._toggle(r.run_id);
          });
          return row;
        })
      )
    );
    if (this._compareError) {
      fill(
        this._compare,
        messageBox(errorMessage(this._compareError), {
          'data-nbmlops': 'compare-error',
          title: 'Could not compare the runs'
        })
      );
    } else if (this._compareData && this._selected.size) {
      compareView(this._compareData, this._compare);
    } else {
      fill(this._compare);
    }
  }

  // ---- run pipeline ----------------------------------------------------------------

  private _openRunForm(): void {
    const p = this._pipeline;
    if (!p) {
      return;
    }
    const inputs = p.parameters.map(param =>
      h('input', {
        class: 'jp-mod-styled',
        type: 'text',
        value: param.value,
        'data-nbmlops-param': param.name,
        'aria-label': param.name,
        spellcheck: 'false'
      })
    );
    const form = h(
      'form',
      { class: 'nbmlops-form', 'data-nbmlops': 'run-form' },
      h('h3', {}, 'Run pipeline'),
      p.parameters.length
        ? h(
            'p',
            { class: 'nbmlops-hint' },
            'Python literals, as in the parameters cell (strings in quotes).'
          )
        : h('p', { class: 'nbmlops-hint' }, 'This notebook has no parameters.'),
      ...p.parameters.map((param, i) =>
        h(
          'label',
          { class: 'nbmlops-field' },
          h('span', {}, param.name, param.type ? h('small', {}, ` (${param.type})`) : null),
          inputs[i]
        )
      ),
      h(
        'div',
        { class: 'nbmlops-buttons' },
        h(
          'button',
          { type: 'submit', class: 'jp-mod-styled jp-mod-accept nbmlops-button', 'data-nbmlops': 'run-submit' },
          'Run'
        ),
        h(
          'button',
          { type: 'button', class: 'jp-mod-styled jp-mod-reject nbmlops-button', 'data-nbmlops': 'run-cancel' },
          'Cancel'
        )
      )
    );
    form.addEventListener('submit', ev => {
      ev.preventDefault();
      const entered: Record<string, string> = {};
      p.parameters.forEach((param, i) => (entered[param.name] = inputs[i].value));
      void this._startRun(p, changedParameters(p.parameters, entered));
    });
    form.querySelector('[data-nbmlops="run-cancel"]')!.addEventListener('click', () =>
      fill(this._runForm)
    );
    fill(this._runForm, form);
    (inputs[0] ?? form.querySelector('button'))?.focus();
  }

  /** Whether a run of `path` started from this panel is under way. */
  private _running(path: string): boolean {
    const state = this._jobs.get(path);
    return !!state && !state.message && (!state.job || !jobFinished(state.job));
  }

  /** Start the run; when the server says another run of the notebook goes (another tab,
   * the command line through this server), ask before starting a second one. */
  private async _start(path: string, parameters: Record<string, string>): Promise<string> {
    try {
      return (await api.startRun(path, parameters)).job_id;
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 409) {
        throw err;
      }
      const answer = await showDialog({
        title: 'A run of this notebook is under way',
        body: `${messageText(errorMessage(err))}. Start a second run at the same time?`,
        buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Start another run' })]
      });
      if (!answer.button.accept) {
        throw err;
      }
      return (await api.startRun(path, parameters, true)).job_id;
    }
  }

  private async _stop(state: IJobState): Promise<void> {
    if (!state.job) {
      return;
    }
    state.stopping = true;
    this._renderJob();
    try {
      state.job = await api.stopJob(state.job.job_id);
    } catch (err) {
      state.message = errorMessage(err);
    }
    this._render();
  }

  private async _startRun(p: IPipeline, parameters: Record<string, string>): Promise<void> {
    const path = p.path;
    if (this._running(path)) {
      return; // the button is disabled meanwhile; a second submit does nothing
    }
    const state: IJobState = { path, job: null, message: null };
    this._jobs.set(path, state);
    this._render();
    try {
      const context = this._notebook?.context;
      if (context && context.path === path && context.model.dirty) {
        await context.save();
      }
      const job_id = await this._start(path, parameters);
      fill(this._runForm);
      state.job = {
        job_id,
        path,
        status: 'running',
        current_step: null,
        steps: [],
        run_id: null,
        output_path: null,
        run_url: null,
        error: null
      };
      this._renderJob();
      await this._poll(state, job_id);
    } catch (err) {
      state.message = errorMessage(err);
      this._render();
    }
  }

  private async _poll(state: IJobState, jobId: string): Promise<void> {
    let failures = 0;
    for (;;) {
      await new Promise(resolve => setTimeout(resolve, POLL_MS));
      if (this.isDisposed) {
        return;
      }
      try {
        state.job = await api.job(jobId);
        failures = 0;
      } catch (err) {
        failures += 1;
        if (failures >= MAX_POLL_FAILURES || (err instanceof ApiError && err.status === 404)) {
          state.message = errorMessage(err);
          this._renderJob();
          return;
        }
        continue;
      }
      if (state.path === this._path) {
        this._renderGraph();
        this._renderJob();
      }
      if (jobFinished(state.job)) {
        if (state.path === this._path) {
          this._render();
          void this.refresh();
        }
        return;
      }
    }
  }

  private _jobFor(path: string | null): IJobState | undefined {
    return path ? this._jobs.get(path) : undefined;
  }

  private _renderJob(): void {
    const state = this._jobFor(this._path);
    if (!state) {
      fill(this._runStatus);
      this._runStatus.hidden = true;
      return;
    }
    this._runStatus.hidden = false;
    if (state.message) {
      const prefix = state.job ? 'failed to follow the run' : 'failed to start the run';
      this._runStatus.setAttribute('data-nbmlops-status', 'failed');
      fill(
        this._runStatus,
        h('div', { class: 'nbmlops-error' }, `${prefix}: ${messageText(state.message)}`)
      );
      return;
    }
    const job = state.job;
    if (!job) {
      this._runStatus.setAttribute('data-nbmlops-status', 'starting');
      fill(this._runStatus, h('div', {}, 'starting…'));
      return;
    }
    this._runStatus.setAttribute('data-nbmlops-status', job.status);
    const total = this._pipeline?.path === job.path ? this._pipeline.steps.length : undefined;
    const links: (HTMLElement | null)[] = [];
    if (job.output_path) {
      const a = h(
        'a',
        { href: '#', 'data-nbmlops': 'output-link', title: 'open the executed notebook' },
        job.output_path
      );
      const problem = h('div', { class: 'nbmlops-error', 'data-nbmlops': 'open-error', hidden: true });
      a.addEventListener('click', ev => {
        ev.preventDefault();
        problem.hidden = true;
        this._options.openPath(job.output_path!).catch(err => {
          fill(problem, err instanceof Error ? err.message : String(err));
          problem.hidden = false;
        });
      });
      links.push(h('div', {}, 'Output notebook: ', a), problem);
    }
    if (job.run_id) {
      links.push(
        h(
          'div',
          {},
          'MLflow run: ',
          job.run_url
            ? h(
                'a',
                { href: job.run_url, target: '_blank', rel: 'noopener', 'data-nbmlops': 'mlflow-link' },
                job.run_id
              )
            : h('code', { 'data-nbmlops': 'mlflow-run-id' }, job.run_id)
        )
      );
    }
    let stopButton: HTMLButtonElement | null = null;
    if (job.status === 'running' || job.status === 'queued') {
      stopButton = h(
        'button',
        {
          type: 'button',
          class: 'jp-mod-styled jp-mod-warn nbmlops-button',
          'data-nbmlops': 'stop-button',
          title: 'Stop the run: it is recorded as KILLED; finished steps stay cached',
          disabled: !!state.stopping
        },
        state.stopping ? 'Stopping…' : 'Stop'
      );
      stopButton.addEventListener('click', () => void this._stop(state));
    }
    fill(
      this._runStatus,
      h(
        'div',
        { class: `nbmlops-job nbmlops-job-${job.status}`, 'data-nbmlops': 'run-status-text' },
        jobStatusText(job, total)
      ),
      stopButton,
      job.steps.length
        ? h(
            'ol',
            { class: 'nbmlops-job-steps', 'data-nbmlops': 'run-steps' },
            ...job.steps.map(st =>
              h(
                'li',
                { 'data-nbmlops-step-status': st.status },
                `${st.name}: ${st.status.toLowerCase()}${
                  st.seconds !== null ? ` (${formatSeconds(st.seconds)})` : ''
                }`
              )
            )
          )
        : null,
      ...links
    );
  }

  // ---- promote -----------------------------------------------------------------------

  private _openPromoteForm(): void {
    const path = this._path;
    const metrics = this._runsData?.metrics ?? [];
    if (!path) {
      return;
    }
    const metric: HTMLInputElement | HTMLSelectElement = metrics.length
      ? h(
          'select',
          { class: 'jp-mod-styled', 'data-nbmlops': 'promote-metric' },
          ...metrics.map(m => h('option', { value: m }, m))
        )
      : h('input', {
          class: 'jp-mod-styled',
          type: 'text',
          placeholder: 'metric name, e.g. f1',
          'data-nbmlops': 'promote-metric'
        });
    const mode = h(
      'select',
      { class: 'jp-mod-styled', 'data-nbmlops': 'promote-mode' },
      h('option', { value: 'max' }, 'max (higher is better)'),
      h('option', { value: 'min' }, 'min (lower is better)')
    );
    mode.value = defaultMode(metric.value);
    metric.addEventListener('change', () => (mode.value = defaultMode(metric.value)));
    const gates = h('input', {
      class: 'jp-mod-styled',
      type: 'text',
      placeholder: 'e.g. f1>=0.9, accuracy>0.8',
      'data-nbmlops': 'promote-gates',
      spellcheck: 'false'
    });
    const alias = h('input', {
      class: 'jp-mod-styled',
      type: 'text',
      placeholder: 'champion',
      'data-nbmlops': 'promote-alias',
      spellcheck: 'false'
    });
    const form = h(
      'form',
      { class: 'nbmlops-form', 'data-nbmlops': 'promote-form' },
      h('h3', {}, 'Promote best run'),
      h('label', { class: 'nbmlops-field' }, h('span', {}, 'Metric'), metric),
      h('label', { class: 'nbmlops-field' }, h('span', {}, 'Mode'), mode),
      h('label', { class: 'nbmlops-field' }, h('span', {}, 'Gates (optional)'), gates),
      h('label', { class: 'nbmlops-field' }, h('span', {}, 'Alias (optional)'), alias),
      h(
        'div',
        { class: 'nbmlops-buttons' },
        h(
          'button',
          { type: 'submit', class: 'jp-mod-styled jp-mod-accept nbmlops-button', 'data-nbmlops': 'promote-submit' },
          'Promote'
        ),
        h(
          'button',
          { type: 'button', class: 'jp-mod-styled jp-mod-reject nbmlops-button', 'data-nbmlops': 'promote-cancel' },
          'Cancel'
        )
      )
    );
    form.addEventListener('submit', ev => {
      ev.preventDefault();
      void this._promote(path, {
        metric: metric.value.trim(),
        mode: mode.value === 'min' ? 'min' : 'max',
        gates: parseGates(gates.value),
        alias: alias.value.trim() || null
      });
    });
    form.querySelector('[data-nbmlops="promote-cancel"]')!.addEventListener('click', () =>
      fill(this._promoteForm)
    );
    fill(this._promoteResult);
    fill(this._promoteForm, form);
    metric.focus();
  }

  private async _promote(
    path: string,
    choice: { metric: string; mode: 'max' | 'min'; gates: string[]; alias: string | null },
    force = false,
    reason = ''
  ): Promise<void> {
    const submit = this._promoteForm.querySelector('button[type="submit"]') as HTMLButtonElement;
    if (submit) {
      submit.disabled = true;
    }
    fill(this._promoteResult, h('div', { class: 'nbmlops-hint' }, 'Promoting…'));
    this._promoteResult.setAttribute('data-nbmlops-outcome', 'pending');
    try {
      const p = await api.promote({
        path,
        ...choice,
        model_name: null,
        run_id: null,
        force,
        reason
      });
      if (path !== this._path) {
        return;
      }
      fill(this._promoteForm);
      this._promoteResult.setAttribute('data-nbmlops-outcome', 'promoted');
      fill(
        this._promoteResult,
        h(
          'div',
          { class: 'nbmlops-success' },
          'Promoted ',
          h('code', {}, p.model_name),
          ' version ',
          h('strong', { 'data-nbmlops': 'promote-version' }, p.version),
          ' as ',
          h('code', { 'data-nbmlops': 'promote-alias-result' }, `@${p.alias}`),
          ` (${p.metric}=${formatNumber(p.value)}, run `,
          h('code', { title: p.run_id }, p.run_id.slice(0, 8)),
          ')'
        )
      );
      void this.refresh();
    } catch (err) {
      if (path !== this._path) {
        return;
      }
      const refused = err instanceof ApiError && err.status === 409;
      this._promoteResult.setAttribute('data-nbmlops-outcome', refused ? 'refused' : 'error');
      const msg = errorMessage(err);
      let anyway: HTMLButtonElement | null = null;
      if (refused && !force) {
        // The fix in the panel's own terms: its button, not the command line's --force.
        msg.fix = msg.fix.replace(/pass --force to promote anyway/, 'click "Promote anyway"');
        anyway = h(
          'button',
          {
            type: 'button',
            class: 'jp-mod-styled jp-mod-warn nbmlops-button',
            'data-nbmlops': 'promote-force'
          },
          'Promote anyway…'
        );
        anyway.addEventListener('click', async () => {
          const why = await askReason(msg.problem);
          if (why !== null) {
            await this._promote(path, choice, true, why);
          }
        });
      }
      fill(
        this._promoteResult,
        messageBox(msg, {
          title: refused ? 'Promotion refused' : 'Promotion failed'
        }),
        anyway
      );
      if (submit) {
        submit.disabled = false;
      }
    }
  }

  // ---- state -----------------------------------------------------------------------

  private _notebook: NotebookPanel | null = null;
  private _pipeline: IPipeline | null = null;
  private _pipelineError: unknown = null;
  private _runsData: IRuns | null = null;
  private _runsError: unknown = null;
  private _loading = false;
  private _stale = true;
  private _generation = 0;
  private _jobs = new Map<string, IJobState>();
  private _cache = new Map<string, { pipeline: IPipeline | null; runs: IRuns | null }>();

  private _refreshButton: HTMLButtonElement;
  private _where = h('div', { class: 'nbmlops-where' });
  private _error = h('div', { class: 'nbmlops-errors' });
  private _body = h('div', { class: 'nbmlops-body' });
  private _graph = h('div', { class: 'nbmlops-graph-box' });
  private _params = h('div', {});
  private _actions = h('div', { class: 'nbmlops-buttons nbmlops-actions' });
  private _runButton = h(
    'button',
    { class: 'jp-mod-styled jp-mod-accept nbmlops-button', 'data-nbmlops': 'run-button' },
    'Run pipeline'
  );
  private _promoteButton = h(
    'button',
    { class: 'jp-mod-styled jp-mod-reject nbmlops-button', 'data-nbmlops': 'promote-button' },
    'Promote best'
  );
  private _runForm = h('div', {});
  private _runStatus = h('div', {
    class: 'nbmlops-run-status',
    'data-nbmlops': 'run-status',
    'aria-live': 'polite'
  });
  private _promoteForm = h('div', {});
  private _promoteResult = h('div', {
    class: 'nbmlops-promote-result',
    'data-nbmlops': 'promote-result',
    'aria-live': 'polite'
  });
  private _runs = h('div', {});
  private _compare = h('div', { class: 'nbmlops-compare', 'data-nbmlops': 'compare' });
  private _selected = new Set<string>();
  private _compareData: ICompare | null = null;
  private _compareError: unknown = null;
  private _served = h('div', {});
  private _glance: IGlance | null = null;
  private _glanceError: unknown = null;
  private _liveSteps: { name: string; after: string[] }[] | null = null;
  private _liveProblem: string | null = null;
  private _liveTimer = 0;
}

/** Why promote anyway: asked until given (null: cancelled). */
async function askReason(problem: string): Promise<string | null> {
  let label = `${problem}. Why promote anyway? The reason and what it overrides are recorded in the alias history.`;
  for (;;) {
    const answer = await InputDialog.getText({
      title: 'Promote anyway?',
      label,
      placeholder: 'e.g. the better run leaked the test split',
      okLabel: 'Promote anyway'
    });
    if (!answer.button.accept) {
      return null;
    }
    const why = (answer.value ?? '').trim();
    if (why) {
      return why;
    }
    label = `A reason is needed: it is recorded with the override. ${problem}.`;
  }
}

/** A problem/fix box. */
function messageBox(msg: IMessage, attrs: { title: string; 'data-nbmlops'?: string }): HTMLElement {
  return h(
    'div',
    { class: 'nbmlops-error', 'data-nbmlops': attrs['data-nbmlops'] },
    h('strong', {}, attrs.title),
    h(
      'div',
      { class: 'nbmlops-problem' },
      msg.problem,
      cellSuffix(msg)
    ),
    msg.fix ? h('div', { class: 'nbmlops-fix' }, 'Fix: ', msg.fix) : null
  );
}
