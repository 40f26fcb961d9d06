import {
  ApiError,
  errorMessage,
  messageText,
  openFailedMessage,
  savesKernelFirst
} from '../logic/errors';

describe('errorMessage', () => {
  it('shows the server problem, fix and cell of a parse error', () => {
    const err = new ApiError(
      422,
      {
        error: {
          problem: "step 'train' is tagged after:trian, but there is no step 'trian'",
          fix: 'use one of the known steps: load, train',
          cell: 4
        }
      },
      'pipeline'
    );
    const msg = errorMessage(err);
    expect(msg).toEqual({
      problem: "step 'train' is tagged after:trian, but there is no step 'trian'",
      fix: 'use one of the known steps: load, train',
      cell: 4,
      status: 422
    });
    expect(messageText(msg)).toBe(
      "step 'train' is tagged after:trian, but there is no step 'trian' (cell 4). " +
        'Fix: use one of the known steps: load, train'
    );
  });

  it('does not repeat a cell the problem already names', () => {
    const err = new ApiError(
      422,
      {
        error: {
          problem: "nb.ipynb, cell 4: step 'a' is started twice (cells 2 and 4)",
          fix: 'rename one of them',
          cell: 4
        }
      },
      'pipeline'
    );
    expect(messageText(errorMessage(err))).toBe(
      "nb.ipynb, cell 4: step 'a' is started twice (cells 2 and 4). Fix: rename one of them"
    );
  });

  it('shows a promotion refusal', () => {
    const err = new ApiError(
      409,
      { promoted: false, error: { problem: 'gate f1>=0.99 failed: f1=0.95', fix: 'improve' } },
      'promote'
    );
    expect(messageText(errorMessage(err))).toBe('gate f1>=0.99 failed: f1=0.95. Fix: improve');
  });

  it('explains a 404 without an error body as a missing server extension', () => {
    const msg = errorMessage(new ApiError(404, null, 'pipeline'));
    expect(msg.problem).toBe('the nbmlops server extension did not answer pipeline (HTTP 404)');
    expect(msg.fix).toMatch(/jupyter server extension list/);
  });

  it('never shows a bare status for other failures', () => {
    const msg = errorMessage(new ApiError(500, null, 'runs'));
    expect(msg.problem).toBe('the nbmlops server extension failed on runs (HTTP 500)');
    expect(msg.fix).toBe('see the JupyterLab server log for the cause');
  });

  it('explains a network failure', () => {
    const err = new TypeError('Failed to fetch');
    const msg = errorMessage(err);
    expect(msg.problem).toBe('could not reach the Jupyter server: Failed to fetch');
    expect(msg.fix).toMatch(/JupyterLab is still running/);
  });

  it('passes any other error text through', () => {
    expect(errorMessage(new Error('boom'))).toEqual({
      problem: 'boom',
      fix: '',
      cell: null,
      status: null
    });
  });
});

describe('openFailedMessage', () => {
  it('names the hidden folder JupyterLab refuses and the fix', () => {
    expect(openFailedMessage('.nbmlops/runs/x-1/nb.ipynb')).toBe(
      'JupyterLab does not open files under the hidden folder .nbmlops/ (.nbmlops/runs/x-1/nb.ipynb). ' +
        'Fix: start JupyterLab with --ContentsManager.allow_hidden=True, or open it from a terminal.'
    );
  });

  it('asks whether a missing file was moved', () => {
    expect(openFailedMessage('out/nb.ipynb')).toBe(
      'JupyterLab could not open out/nb.ipynb. Fix: check that it still exists (was it moved?).'
    );
  });
});

describe('savesKernelFirst', () => {
  it('knows a new notebook that has no kernel recorded yet', () => {
    const msg = {
      problem: '/root/Untitled.ipynb: no kernelspec in the notebook metadata',
      fix: 'open the notebook in JupyterLab, pick a Python kernel and save it',
      cell: null,
      status: 422
    };
    expect(savesKernelFirst(msg)).toBe(true);
    expect(savesKernelFirst({ ...msg, problem: '/root/a.ipynb: kernel language is "R"' })).toBe(false);
  });
});
