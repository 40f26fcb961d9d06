/** Any failure of an API call → what the panel tells the user. */

import { IErrorBody } from './contract';

/** An answer of the nbmlops API with a non-2xx status. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: IErrorBody | null,
    readonly endpoint: string
  ) {
    super(`nbmlops API ${endpoint}: HTTP ${status}`);
    this.name = 'ApiError';
  }
}

export interface IMessage {
  problem: string;
  fix: string;
  /** The notebook cell the problem is in, when the server named one. */
  cell: number | null;
  status: number | null;
}

const SERVER_FIX =
  'install nbmlops in the environment that runs JupyterLab (pip install nbmlops), ' +
  'check that `jupyter server extension list` shows nbmlops.jupyter enabled, then restart JupyterLab';

/** The problem and fix to show for an error thrown by an API call. */
export function errorMessage(err: unknown): IMessage {
  if (err instanceof ApiError) {
    const detail = err.body?.error;
    if (detail && typeof detail.problem === 'string') {
      return {
        problem: detail.problem,
        fix: typeof detail.fix === 'string' ? detail.fix : '',
        cell: typeof detail.cell === 'number' ? detail.cell : null,
        status: err.status
      };
    }
    if (err.status === 404) {
      return {
        problem: `the nbmlops server extension did not answer ${err.endpoint} (HTTP 404)`,
        fix: SERVER_FIX,
        cell: null,
        status: 404
      };
    }
    if (err.status === 403) {
      return {
        problem: 'the Jupyter server refused the request (HTTP 403)',
        fix: 'reload the page to log in again; nbmlops only reads notebooks inside the server root',
        cell: null,
        status: 403
      };
    }
    return {
      problem: `the nbmlops server extension failed on ${err.endpoint} (HTTP ${err.status})`,
      fix: 'see the JupyterLab server log for the cause',
      cell: null,
      status: err.status
    };
  }
  const name = (err as { name?: unknown } | null)?.name;
  const text = err instanceof Error ? err.message : String(err);
  if (name === 'NetworkError' || err instanceof TypeError) {
    return {
      problem: `could not reach the Jupyter server: ${text}`,
      fix: 'check that JupyterLab is still running, then reload the page',
      cell: null,
      status: null
    };
  }
  return { problem: text, fix: '', cell: null, status: null };
}

/** " (cell N)" when the server named a cell its problem text does not already name. */
export function cellSuffix(msg: IMessage): string {
  if (msg.cell === null || msg.problem.includes(`cell ${msg.cell}`)) {
    return '';
  }
  return ` (cell ${msg.cell})`;
}

/** One line: "problem. Fix: fix." */
export function messageText(msg: IMessage): string {
  const cell = cellSuffix(msg);
  return msg.fix ? `${msg.problem}${cell}. Fix: ${msg.fix}` : `${msg.problem}${cell}`;
}

/** Why JupyterLab could not open `path` (the contents API refused it) and what to do. */
export function openFailedMessage(path: string): string {
  const hidden = path.split('/').find(part => part.startsWith('.') && part !== '.' && part !== '..');
  if (hidden) {
    return (
      `JupyterLab does not open files under the hidden folder ${hidden}/ (${path}). ` +
      'Fix: start JupyterLab with --ContentsManager.allow_hidden=True, or open it from a terminal.'
    );
  }
  return `JupyterLab could not open ${path}. Fix: check that it still exists (was it moved?).`;
}

/** Whether a pipeline error only says the notebook has no kernel recorded yet: a
 * brand-new notebook before its first save, not a mistake to show in red. */
export function savesKernelFirst(msg: IMessage): boolean {
  return msg.status === 422 && msg.problem.includes(': no kernelspec in the notebook metadata');
}
