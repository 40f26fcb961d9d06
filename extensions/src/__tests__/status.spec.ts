import { IJob } from '../logic/contract';
import {
  changedParameters,
  defaultMode,
  formatMetrics,
  formatSeconds,
  formatStart,
  jobFinished,
  jobStatusText,
  parseGates
} from '../logic/status';

const job = (over: Partial<IJob>): IJob => ({
  job_id: 'j1',
  path: 'nb.ipynb',
  status: 'running',
  current_step: null,
  steps: [],
  run_id: null,
  output_path: null,
  run_url: null,
  error: null,
  ...over
});

describe('jobStatusText', () => {
  it('shows a queued job with its place, still to be polled', () => {
    const j = job({ status: 'queued', queue_position: 2 });
    expect(jobStatusText(j)).toBe(
      'queued: number 2 in line (the server runs a few at a time; it starts when one ends)'
    );
    expect(jobFinished(j)).toBe(false);
  });

  it('shows a starting job', () => {
    expect(jobStatusText(job({}))).toBe('running: starting (kernel and setup cells)');
    expect(jobStatusText(job({ seconds: 12 }), 4)).toBe(
      'running: starting (kernel and setup cells) (0 of 4 steps done, 12 s)'
    );
  });

  it('says the run is finishing once every step is done', () => {
    const j = job({
      steps: [
        { name: 'load', status: 'FINISHED', seconds: 1 },
        { name: 'train', status: 'FINISHED', seconds: 2 }
      ],
      seconds: 21
    });
    expect(jobStatusText(j, 2)).toBe('running: finishing the run record (2 of 2 steps done, 21 s)');
  });

  it('counts the wall time of a run, not only its steps', () => {
    const j = job({
      status: 'succeeded',
      steps: [{ name: 'load', status: 'CACHED', seconds: 0 }],
      seconds: 20
    });
    expect(jobStatusText(j)).toBe('succeeded: 1 step, 1 cached in 20 s');
  });

  it('shows the current step and the steps done', () => {
    const j = job({
      current_step: 'train',
      steps: [
        { name: 'load', status: 'CACHED', seconds: 0.1 },
        { name: 'features', status: 'FINISHED', seconds: 1.5 },
        { name: 'train', status: 'running', seconds: null }
      ]
    });
    expect(jobStatusText(j, 4)).toBe('running: step train (2 of 4 steps done)');
    expect(jobFinished(j)).toBe(false);
  });

  it('sums up a succeeded run with its cache hits', () => {
    const j = job({
      status: 'succeeded',
      steps: [
        { name: 'load', status: 'CACHED', seconds: 0.2 },
        { name: 'train', status: 'FINISHED', seconds: 3.0 }
      ],
      run_id: 'abc'
    });
    expect(jobStatusText(j)).toBe('succeeded: 2 steps, 1 cached in 3.2 s');
    expect(jobFinished(j)).toBe(true);
  });

  it('names the step, cell and error line of a failure', () => {
    const j = job({
      status: 'failed',
      steps: [{ name: 'train', status: 'FAILED', seconds: 0.4 }],
      error: {
        step: 'train',
        cell: 5,
        line: "ValueError: n_estimators must be > 0, got -1",
        message: 'long traceback'
      }
    });
    expect(jobStatusText(j)).toBe(
      'failed at step train, cell 5: ValueError: n_estimators must be > 0, got -1'
    );
    expect(jobFinished(j)).toBe(true);
  });

  it('falls back to the message when a failure has no line', () => {
    const j = job({
      status: 'failed',
      error: { step: null, cell: null, line: '', message: 'the kernel died' }
    });
    expect(jobStatusText(j)).toBe('failed: the kernel died');
  });
});

describe('formatting', () => {
  it('formats durations', () => {
    expect(formatSeconds(0.42)).toBe('0.4 s');
    expect(formatSeconds(12.4)).toBe('12 s');
    expect(formatSeconds(185)).toBe('3 min 05 s');
    expect(formatSeconds(null)).toBe('');
  });

  it('formats metrics sorted by name with 3 significant digits', () => {
    expect(formatMetrics({ f1: 0.95312, accuracy: 0.9649, n: 3 })).toBe(
      'accuracy=0.965, f1=0.953, n=3'
    );
  });
});

describe('forms', () => {
  it('sends only the parameters that differ from the defaults', () => {
    const defaults = [
      { name: 'n_estimators', value: '100' },
      { name: 'criterion', value: "'gini'" }
    ];
    expect(changedParameters(defaults, { n_estimators: ' 200 ', criterion: "'gini'" })).toEqual({
      n_estimators: '200'
    });
  });

  it('splits gates on commas, semicolons and lines', () => {
    expect(parseGates('f1>=0.9, accuracy>0.8;\n  roc_auc >= 0.95 ,')).toEqual([
      'f1>=0.9',
      'accuracy>0.8',
      'roc_auc >= 0.95'
    ]);
    expect(parseGates('  ')).toEqual([]);
  });

  it('defaults to min for losses and errors, max otherwise', () => {
    expect(defaultMode('f1')).toBe('max');
    expect(defaultMode('rmse')).toBe('min');
    expect(defaultMode('val_loss')).toBe('min');
    expect(defaultMode('accuracy')).toBe('max');
  });
});

describe('formatStart', () => {
  it('shows month, day and time in local time', () => {
    expect(formatStart(new Date(2026, 10, 23, 21, 4).toISOString())).toBe('11-23 21:04');
    expect(formatStart('not a date')).toBe('not a date');
  });
});

describe('a stopped job', () => {
  const job = {
    job_id: 'j',
    path: 'a.ipynb',
    status: 'killed' as const,
    current_step: null,
    steps: [
      { name: 'load', status: 'FINISHED', seconds: 1 },
      { name: 'wait', status: 'FAILED', seconds: 2 }
    ],
    run_id: null,
    output_path: null,
    run_url: null,
    error: null
  };

  it('says it was recorded as KILLED and which steps stay cached', () => {
    expect(jobStatusText(job)).toBe(
      'stopped: the run is recorded as KILLED; 1 finished step stays cached'
    );
    expect(jobFinished(job)).toBe(true);
  });
});
