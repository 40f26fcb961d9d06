import {
  afterOf,
  graphProblem,
  linkSteps,
  outputNotebookReason,
  parseUpstream,
  stepOf,
  stepsOf,
  validateStep,
  withoutStepTags,
  withStepTags
} from '../logic/tags';

describe('withStepTags', () => {
  it('adds step and after tags to an untagged cell', () => {
    expect(withStepTags(undefined, 'train', ['load'])).toEqual(['step:train', 'after:load']);
  });

  it('replaces an earlier step and its after tags, keeping other tags in place', () => {
    const tags = ['keep-me', 'step:old', 'after:a', 'after:b', 'slow'];
    expect(withStepTags(tags, 'train', ['load', 'features'])).toEqual([
      'keep-me',
      'slow',
      'step:train',
      'after:load',
      'after:features'
    ]);
  });

  it('writes one after tag per upstream step, without repeats', () => {
    expect(withStepTags([], ' train ', ['a', 'a', 'b'])).toEqual([
      'step:train',
      'after:a',
      'after:b'
    ]);
  });

  it('drops every step tag when unmarking', () => {
    expect(withoutStepTags(['parameters', 'step:x', 'after:y'])).toEqual(['parameters']);
  });
});

describe('reading tags', () => {
  it('finds the step and the upstream steps of a cell', () => {
    const tags = ['step:evaluate', 'after:train', 'after:load', 'after:train'];
    expect(stepOf(tags)).toBe('evaluate');
    expect(afterOf(tags)).toEqual(['train', 'load']);
    expect(stepOf(['parameters'])).toBeNull();
    expect(stepOf(null)).toBeNull();
  });

  it('lists the steps of a notebook in cell order', () => {
    expect(stepsOf([['parameters'], ['step:load'], [], ['step:train', 'after:load'], null])).toEqual(
      ['load', 'train']
    );
  });

  it('splits upstream text on commas and spaces', () => {
    expect(parseUpstream(' load, features  train,,load ')).toEqual(['load', 'features', 'train']);
    expect(parseUpstream('')).toEqual([]);
  });
});

describe('validateStep', () => {
  const others = ['load', 'train'];

  it('accepts a new name with known upstream steps', () => {
    expect(validateStep('evaluate', ['train'], others)).toBeNull();
    expect(validateStep('load_data-2', [], others)).toBeNull();
  });

  it('asks for a name when it is empty', () => {
    expect(validateStep('  ', [], others)).toBe('Give the step a name, e.g. train.');
  });

  it('explains which characters a name may use', () => {
    expect(validateStep('my step', [], others)).toBe(
      '"my step" is not a valid step name: use letters, digits, "_" and "-", ' +
        'starting with a letter, e.g. train or load-data.'
    );
    expect(validateStep('2fast', [], others)).toMatch(/not a valid step name/);
    expect(validateStep('a.b', [], others)).toMatch(/not a valid step name/);
  });

  it('refuses a name another cell already uses', () => {
    expect(validateStep('train', [], others)).toBe(
      'Another cell already starts step "train": choose another name.'
    );
  });

  it('refuses an unknown upstream step, naming the known ones', () => {
    expect(validateStep('evaluate', ['trian'], others)).toBe(
      'There is no step "trian" in this notebook (known steps: load, train).'
    );
    expect(validateStep('first', ['x'], [])).toBe(
      'There is no step "x" in this notebook (known steps: none yet).'
    );
  });

  it('refuses a step after itself', () => {
    expect(validateStep('evaluate', ['evaluate'], others)).toBe(
      'Step "evaluate" cannot come after itself: remove it from the upstream steps.'
    );
  });
});

describe('graphProblem', () => {
  const order = [['step:load'], [], ['step:train'], ['step:evaluate']];

  it('accepts notebook order and after tags that follow it', () => {
    expect(graphProblem(order)).toBeNull();
    expect(graphProblem([['step:load'], ['step:a', 'after:load'], ['step:b', 'after:load']])).toBeNull();
  });

  it('accepts a step written above the step it runs after (the two swap)', () => {
    expect(graphProblem([['step:report', 'after:train'], ['step:train']])).toBeNull();
  });

  it('names the loop through notebook order, with its path', () => {
    const problem = graphProblem([['step:load', 'after:evaluate'], ['step:train'], ['step:evaluate']]);
    expect(problem).toContain('Step "evaluate" has no "after", so it follows "train"');
    expect(problem).toContain('evaluate → train → load → evaluate');
  });

  it('names an explicit two-step loop', () => {
    const problem = graphProblem([['step:a', 'after:b'], ['step:b', 'after:a']]);
    expect(problem).toContain('loop: a → b → a');
  });

  it('reads after tags on any cell of a step', () => {
    expect(graphProblem([['step:a', 'after:b'], ['step:b'], ['after:a']])).toContain('a → b → a');
  });
});

describe('outputNotebookReason', () => {
  it('knows output notebooks by name, folder or the metadata a run writes', () => {
    expect(outputNotebookReason('wine.partial.ipynb', [])).toContain('partial output');
    expect(outputNotebookReason('.nbmlops/runs/wine-1/wine.ipynb', [])).toContain('run folders');
    expect(outputNotebookReason('out/wine.ipynb', [{ nbmlops: { cell: 1 } }])).toContain(
      'output notebook of a run'
    );
    expect(outputNotebookReason('wine.ipynb', [{ tags: ['step:load'] }])).toBeNull();
  });
});

describe('linkSteps', () => {
  it('links steps as the server does: after tags, else the step before', () => {
    expect(
      linkSteps([['step:load'], [], ['step:train'], ['step:report', 'after:load'], ['step:end']])
    ).toEqual([
      { name: 'load', after: [] },
      { name: 'train', after: ['load'] },
      { name: 'report', after: ['load'] },
      { name: 'end', after: ['report'] }
    ]);
  });

  it('is null for a loop', () => {
    expect(linkSteps([['step:a', 'after:b'], ['step:b', 'after:a']])).toBeNull();
  });
});
