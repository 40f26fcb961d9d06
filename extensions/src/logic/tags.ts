/**
 * Step tags on a cell's `metadata.tags`, as nbmlops reads them
 * (nbmlops/notebook/pipeline.py): `step:<name>` starts a step, one `after:<step>` tag
 * per upstream step.
 */

export const STEP_TAG = 'step:';
export const AFTER_TAG = 'after:';

/** A step name the panel accepts: letters, digits, `_`, `-`, not starting with a digit or `-`. */
const NAME = /^[A-Za-z_][A-Za-z0-9_-]*$/;

/** The step a cell starts, from its tags, or null. */
export function stepOf(tags: readonly string[] | undefined | null): string | null {
  for (const tag of tags ?? []) {
    if (typeof tag === 'string' && tag.startsWith(STEP_TAG)) {
      const name = tag.slice(STEP_TAG.length).trim();
      if (name) {
        return name;
      }
    }
  }
  return null;
}

/** The upstream steps a cell declares with `after:` tags, in tag order. */
export function afterOf(tags: readonly string[] | undefined | null): string[] {
  const ups: string[] = [];
  for (const tag of tags ?? []) {
    if (typeof tag === 'string' && tag.startsWith(AFTER_TAG)) {
      const up = tag.slice(AFTER_TAG.length).trim();
      if (up && !ups.includes(up)) {
        ups.push(up);
      }
    }
  }
  return ups;
}

/** Split "a, b,c" (commas or spaces) into step names, dropping blanks and repeats. */
export function parseUpstream(text: string): string[] {
  const names: string[] = [];
  for (const part of text.split(/[\s,]+/)) {
    const name = part.trim();
    if (name && !names.includes(name)) {
      names.push(name);
    }
  }
  return names;
}

/**
 * Why a step name (and its upstream steps) cannot be used, or null when it can.
 *
 * `otherSteps` are the steps started by the notebook's other cells.
 */
export function validateStep(
  name: string,
  after: readonly string[],
  otherSteps: readonly string[]
): string | null {
  const trimmed = name.trim();
  if (!trimmed) {
    return 'Give the step a name, e.g. train.';
  }
  if (!NAME.test(trimmed)) {
    return (
      `"${trimmed}" is not a valid step name: use letters, digits, "_" and "-", ` +
      'starting with a letter, e.g. train or load-data.'
    );
  }
  if (otherSteps.includes(trimmed)) {
    return `Another cell already starts step "${trimmed}": choose another name.`;
  }
  for (const up of after) {
    if (up === trimmed) {
      return `Step "${trimmed}" cannot come after itself: remove it from the upstream steps.`;
    }
    if (!otherSteps.includes(up)) {
      const known = otherSteps.length ? otherSteps.join(', ') : 'none yet';
      return `There is no step "${up}" in this notebook (known steps: ${known}).`;
    }
  }
  return null;
}

/**
 * The tags of a cell marked as step `name` after `after`: earlier `step:` and `after:`
 * tags are replaced, other tags kept in place.
 */
export function withStepTags(
  tags: readonly string[] | undefined | null,
  name: string,
  after: readonly string[]
): string[] {
  const kept = (tags ?? []).filter(
    t => typeof t === 'string' && !t.startsWith(STEP_TAG) && !t.startsWith(AFTER_TAG)
  );
  const ups = after.filter((up, i) => after.indexOf(up) === i);
  return [...kept, STEP_TAG + name.trim(), ...ups.map(up => AFTER_TAG + up)];
}

/** The tags of a cell that no longer starts a step (its `step:`/`after:` tags removed). */
export function withoutStepTags(tags: readonly string[] | undefined | null): string[] {
  return (tags ?? []).filter(
    t => typeof t === 'string' && !t.startsWith(STEP_TAG) && !t.startsWith(AFTER_TAG)
  );
}

/** The steps started by a notebook's cells, given each cell's tags, in notebook order. */
export function stepsOf(cellTags: ReadonlyArray<readonly string[] | undefined | null>): string[] {
  const names: string[] = [];
  for (const tags of cellTags) {
    const name = stepOf(tags);
    if (name && !names.includes(name)) {
      names.push(name);
    }
  }
  return names;
}

interface IDeclared {
  name: string;
  declared: string[];
  upstream: string[];
}

/** Upstream links from `start` to `goal` (`[start, ..., goal]`), or []. */
function pathTo(start: string, goal: string, byName: Map<string, IDeclared>): string[] {
  const todo = [[start]];
  const seen = new Set([start]);
  while (todo.length) {
    const path = todo.shift()!;
    for (const up of byName.get(path[path.length - 1])?.upstream ?? []) {
      if (up === goal) {
        return [...path, up];
      }
      if (!seen.has(up)) {
        seen.add(up);
        todo.push([...path, up]);
      }
    }
  }
  return [];
}

/**
 * Why the notebook's steps, with each cell's tags as given, do not form a pipeline
 * nbmlops can run (a loop through `after:` tags or through notebook order), with the
 * loop's path; or null. The rules are nbmlops/notebook/pipeline.py's `_link`: a step's
 * `after:` tags (on any of its cells) name its upstream steps; a step without them
 * follows the step before it in the notebook, unless that step is tagged after it.
 */
export function graphProblem(
  cellTags: ReadonlyArray<readonly string[] | undefined | null>
): string | null {
  return linked(cellTags).problem;
}

/**
 * The steps the cells' tags make, each with its upstream steps (`after`), as the server
 * links them; null when they make a loop (`graphProblem` says which). The panel draws
 * the graph of the live notebook from it, unsaved edits included.
 */
export function linkSteps(
  cellTags: ReadonlyArray<readonly string[] | undefined | null>
): { name: string; after: string[] }[] | null {
  const { steps, problem } = linked(cellTags);
  return problem ? null : steps.map(st => ({ name: st.name, after: [...st.upstream] }));
}

function linked(cellTags: ReadonlyArray<readonly string[] | undefined | null>): {
  steps: IDeclared[];
  problem: string | null;
} {
  const steps: IDeclared[] = [];
  for (const tags of cellTags) {
    const name = stepOf(tags);
    if (name) {
      steps.push({ name, declared: [], upstream: [] });
    }
    const current = steps[steps.length - 1];
    if (current) {
      for (const up of afterOf(tags)) {
        if (!current.declared.includes(up)) {
          current.declared.push(up);
        }
      }
    }
  }
  const byName = new Map(steps.map(st => [st.name, st]));
  for (const st of steps) {
    st.upstream = st.declared.filter(up => byName.has(up) && up !== st.name);
  }
  for (let i = 0; i < steps.length; i++) {
    const st = steps[i];
    if (st.declared.length) {
      continue;
    }
    for (let j = i - 1; j >= 0; j--) {
      const earlier = steps[j];
      if (earlier.declared.includes(st.name)) {
        continue; // tagged after this step: it runs after it, not before
      }
      const loop = pathTo(earlier.name, st.name, byName);
      if (loop.length) {
        const problem =
          `Step "${st.name}" has no "after", so it follows "${earlier.name}", the step ` +
          `before it in the notebook; with the "after" tags that makes a loop: ` +
          `${[st.name, ...loop].join(' → ')}. Give "${st.name}" an "after" step, or ` +
          'remove one of the "after" tags on that loop.';
        return { steps, problem };
      }
      st.upstream = [earlier.name];
      break;
    }
  }
  // A loop through after: tags alone.
  const state = new Map<string, 'open' | 'done'>();
  const trail: string[] = [];
  const visit = (name: string): string[] | null => {
    if (state.get(name) === 'done') {
      return null;
    }
    if (state.get(name) === 'open') {
      return [...trail.slice(trail.indexOf(name)), name];
    }
    state.set(name, 'open');
    trail.push(name);
    for (const up of byName.get(name)?.upstream ?? []) {
      const loop = visit(up);
      if (loop) {
        return loop;
      }
    }
    trail.pop();
    state.set(name, 'done');
    return null;
  };
  for (const st of steps) {
    const loop = visit(st.name);
    if (loop) {
      const problem =
        `The steps would depend on each other in a loop: ${loop.join(' → ')}. ` +
        'Remove one of the "after" steps on that loop.';
      return { steps, problem };
    }
  }
  return { steps, problem: null };
}

/**
 * Why the notebook at `path` is the output of a run rather than a pipeline (a
 * `*.partial.ipynb`, a notebook in nbmlops' run folders, or one whose cells carry the
 * `nbmlops` metadata a run writes), or null.
 */
export function outputNotebookReason(
  path: string,
  cellMetadata: ReadonlyArray<Record<string, unknown>>
): string | null {
  if (path.endsWith('.partial.ipynb')) {
    return 'This is the partial output notebook of a run that did not finish.';
  }
  if (/(^|\/)\.nbmlops\//.test(path)) {
    return "This notebook is in nbmlops' run folders: it is a run's output.";
  }
  if (cellMetadata.some(m => m && typeof m === 'object' && 'nbmlops' in m)) {
    return 'This is the output notebook of a run (its cells carry the run\u2019s metadata).';
  }
  return null;
}
