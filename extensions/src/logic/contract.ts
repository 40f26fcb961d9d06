/** The JSON bodies of the nbmlops server extension's REST API (`<base_url>nbmlops/api/`). */

export interface IStep {
  name: string;
  after: string[];
  cells: number[];
}

export interface IParameter {
  name: string;
  /** Python literal source, as in the parameters cell. */
  value: string;
  type: string | null;
}

/** A tag nbmlops ignores that looks like one of its own, misspelt. */
export interface ITagWarning {
  cell: number;
  tag: string;
  meant: string;
  message: string;
}

export interface IPipeline {
  path: string;
  experiment: string;
  steps: IStep[];
  parameters: IParameter[];
  warnings?: ITagWarning[];
}

export interface IRun {
  run_id: string;
  status: string;
  start_time: string;
  duration_s: number | null;
  params: Record<string, string>;
  metrics: Record<string, number>;
  cache_hits: string | null;
  git_commit: string | null;
  url: string | null;
}

export interface IRuns {
  experiment: string;
  metrics: string[];
  runs: IRun[];
}

export interface IJobStep {
  name: string;
  status: 'running' | 'FINISHED' | 'FAILED' | 'CACHED' | string;
  seconds: number | null;
}

export interface IJobError {
  step: string | null;
  cell: number | null;
  line: string;
  message: string;
}

export interface IJob {
  job_id: string;
  path: string;
  /** `killed`: stopped from the panel (the MLflow run is KILLED); `queued`: waiting for the
   * server's limit on concurrent runs (`Nbmlops.max_concurrent_runs`). */
  status: 'queued' | 'running' | 'succeeded' | 'failed' | 'killed';
  /** While queued: its place in the queue, 1 for the next to start. */
  queue_position?: number | null;
  current_step: string | null;
  steps: IJobStep[];
  run_id: string | null;
  output_path: string | null;
  run_url: string | null;
  error: IJobError | null;
  /** Wall time so far (kernel start and record keeping included); absent: unknown. */
  seconds?: number;
}

export interface IPromotion {
  promoted: true;
  model_name: string;
  version: string;
  alias: string;
  run_id: string;
  metric: string;
  value: number;
}

export interface IPromoteRequest {
  path: string;
  metric: string;
  mode: 'max' | 'min';
  gates: string[];
  alias: string | null;
  model_name: string | null;
  run_id: string | null;
  force: boolean;
  /** Why the user forced it (recorded in the alias history). */
  reason?: string;
}

/** `GET glance`: the served model at a glance. */
export interface IGlance {
  model: string;
  alias: string;
  champion: {
    version: string;
    run_id: string | null;
    promoted_at: string | null;
    promoted_by: string | null;
    action: string | null;
    forced: boolean;
    reason: string;
  } | null;
  drift?: { verdict: 'drift' | 'no drift'; features: string[]; window: string } | null;
  performance?: { verdict: 'ok' | 'alert'; summary: string; labelled: number } | null;
  note: string;
}

/** `{"error": {"problem", "fix", ...}}`: every error body of the API. */
export interface IErrorBody {
  error?: { problem?: string; fix?: string; cell?: number | null; [key: string]: unknown };
  promoted?: boolean;
}

/** Which run holds an alias of the experiment's registered model. */
export interface IAliasHolder {
  version: string;
  run_id: string;
}

/** A parameter or metric across the compared runs (null: the run has none). */
export interface ICompareRow<T> {
  name: string;
  values: (T | null)[];
  differs: boolean;
}

export interface ICompareStep {
  name: string;
  runs: ({ status: string; cache: string | null; seconds: number | null } | null)[];
}

/** `GET compare?path=&run_id=...`: runs side by side. */
export interface ICompare {
  experiment: string;
  aliases: Record<string, IAliasHolder>;
  runs: { run_id: string; status: string; start_time: string; aliases: string[] }[];
  params: ICompareRow<string>[];
  metrics: ICompareRow<number>[];
  steps: ICompareStep[];
  /** Metrics logged at more than one step: per run, its [step, value] points. */
  curves?: { name: string; runs: [number, number][][] }[];
}
