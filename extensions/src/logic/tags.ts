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
