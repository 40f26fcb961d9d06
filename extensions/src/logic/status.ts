/** Job and run states → the text the panel shows. */

import { IJob, IRun } from './contract';

/** Steps done so far: finished or restored from the cache. */
export function stepsDone(job: IJob): number {
  return job.steps.filter(s => s.status === 'FINISHED' || s.status === 'CACHED').length;
}

/** "running: step train (2 of 4 steps done)", "succeeded: 4 steps (1 cached) ...", ... */
export function jobStatusText(job: IJob, totalSteps?: number): string {
  const done = stepsDone(job);
  const total = Math.max(totalSteps ?? 0, job.steps.length);
  const cached = job.steps.filter(s => s.status === 'CACHED').length;
  // The wall time (kernel start and record keeping count: the user waited for them).
  const seconds = job.seconds ?? job.steps.reduce((sum, s) => sum + (s.seconds ?? 0), 0);
  const elapsed = job.seconds !== undefined ? `, ${formatSeconds(job.seconds)}` : '';
  switch (job.status) {
    case 'queued': {
      const place = job.queue_position ? `: number ${job.queue_position} in line` : '';
      return `queued${place} (the server runs a few at a time; it starts when one ends)`;
    }
    case 'running': {
      const count = total ? ` (${done} of ${total} steps done${elapsed})` : '';
      if (job.current_step) {
        return `running: step ${job.current_step}${count}`;
      }
      if (!job.steps.length) {
        return `running: starting (kernel and setup cells)${count}`;
      }
      if (total && done >= total) {
        return `running: finishing the run record${count}`;
      }
      return `running: between steps${count}`;
    }
    case 'succeeded': {
      const c = cached ? `, ${cached} cached` : '';
      return `succeeded: ${done} step${done === 1 ? '' : 's'}${c} in ${formatSeconds(seconds)}`;
    }
    case 'killed': {
      const kept = done ? `; ${done} finished step${done === 1 ? ' stays' : 's stay'} cached` : '';
      return `stopped: the run is recorded as KILLED${kept}`;
    }
    case 'failed': {
      const e = job.error;
      if (!e) {
        return 'failed';
      }
      const where = [
        e.step ? `step ${e.step}` : null,
        e.cell !== null && e.cell !== undefined ? `cell ${e.cell}` : null
      ]
        .filter(Boolean)
        .join(', ');
      const line = e.line || e.message;
      return `failed${where ? ` at ${where}` : ''}: ${line}`;
    }
    default:
      return String((job as { status: unknown }).status);
  }
}

/** Whether polling can stop. */
export function jobFinished(job: IJob): boolean {
  return job.status !== 'running' && job.status !== 'queued';
}

/** "0.4 s", "12 s", "3 min 05 s". */
export function formatSeconds(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) {
    return '';
  }
  if (seconds < 10) {
    return `${seconds.toFixed(1)} s`;
  }
  if (seconds < 60) {
    return `${Math.round(seconds)} s`;
  }
  const m = Math.floor(seconds / 60);
  const s = Math.round(seconds - m * 60);
  return `${m} min ${String(s).padStart(2, '0')} s`;
}

/** "11-23 21:14" in the browser's local time, or the raw text if unparsable. */
export function formatStart(iso: string): string {
  const t = new Date(iso);
  if (isNaN(t.getTime())) {
    return iso;
  }
  const p = (n: number) => String(n).padStart(2, '0');
  return (
    `${p(t.getMonth() + 1)}-${p(t.getDate())} ` +
    `${p(t.getHours())}:${p(t.getMinutes())}`
  );
}

/** "f1=0.953, accuracy=0.96": a run's metrics, sorted by name, 3 significant digits. */
export function formatMetrics(metrics: Record<string, number>): string {
  return Object.keys(metrics)
    .sort()
    .map(k => `${k}=${formatNumber(metrics[k])}`)
    .join(', ');
}

export function formatNumber(v: number): string {
  if (typeof v !== 'number' || !isFinite(v)) {
    return String(v);
  }
  return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(3)));
}

/** The run's status in lower case ("finished", "failed", "running"). */
export function runStatusText(run: IRun): string {
  return (run.status || '').toLowerCase();
}

/** Parameters changed from their defaults, as `name -> literal source` for `POST runs`. */
export function changedParameters(
  defaults: ReadonlyArray<{ name: string; value: string }>,
  entered: Record<string, string>
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of defaults) {
    const v = entered[p.name];
    if (v !== undefined && v.trim() !== p.value.trim()) {
      out[p.name] = v.trim();
    }
  }
  return out;
}

/** Gates typed as "f1>=0.9, accuracy>0.8" or one per line → ["f1>=0.9", "accuracy>0.8"]. */
export function parseGates(text: string): string[] {
  return text
    .split(/[,;\n]+/)
    .map(g => g.trim())
    .filter(g => g.length > 0);
}

/** Default promotion mode for a metric: lower is better for losses and errors. */
export function defaultMode(metric: string): 'max' | 'min' {
  return /(loss|error|err$|rmse|mse|mae|mape|log_?loss|perplexity|latency)/i.test(metric)
    ? 'min'
    : 'max';
}
