/** Calls to the nbmlops server extension (`<base_url>nbmlops/api/`), with Jupyter's auth. */

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import {
  ICompare,
  IErrorBody,
  IGlance,
  IJob,
  IPipeline,
  IPromoteRequest,
  IPromotion,
  IRuns
} from './logic/contract';
import { ApiError } from './logic/errors';

async function request<T>(endpoint: string, init: RequestInit = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'nbmlops', 'api', endpoint);
  const response = await ServerConnection.makeRequest(url, init, settings);
  const text = await response.text();
  let body: unknown = null;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
  }
  if (!response.ok) {
    throw new ApiError(response.status, body as IErrorBody | null, endpoint.split('?')[0]);
  }
  return body as T;
}

function post<T>(endpoint: string, payload: unknown): Promise<T> {
  return request<T>(endpoint, { method: 'POST', body: JSON.stringify(payload) });
}

const q = (path: string) => encodeURIComponent(path);

export const api = {
  pipeline: (path: string) => request<IPipeline>(`pipeline?path=${q(path)}`),
  runs: (path: string, limit = 20) => request<IRuns>(`runs?path=${q(path)}&limit=${limit}`),
  /** `concurrent`: start even while another run of the notebook goes (else HTTP 409). */
  startRun: (path: string, parameters: Record<string, string>, concurrent = false) =>
    post<{ job_id: string }>('runs', { path, parameters, concurrent }),
  job: (jobId: string) => request<IJob>(`jobs/${encodeURIComponent(jobId)}`),
  /** End the run as KILLED; the steps that finished stay cached. */
  stopJob: (jobId: string) => post<IJob>(`jobs/${encodeURIComponent(jobId)}/stop`, {}),
  promote: (body: IPromoteRequest) => post<IPromotion>('promote', body),
  glance: (path: string) => request<IGlance>(`glance?path=${q(path)}`),
  /** The served model's over-time report page (HTML), for an iframe. */
  reportUrl: (path: string) => {
    const settings = ServerConnection.makeSettings();
    return URLExt.join(settings.baseUrl, 'nbmlops', 'api', `glance?path=${q(path)}&format=html`);
  },
  compare: (path: string, runIds: string[]) =>
    request<ICompare>(`compare?path=${q(path)}${runIds.map(id => `&run_id=${q(id)}`).join('')}`)
};
