/**
 * Machine state beside memory, saved and put back in place (the fuzz campaign forks kernel B
 * from one machine many times). `save()` copies what the part holds now (typed-array copies,
 * no per-page objects) and returns the function that puts exactly that back into the same
 * objects, so references held elsewhere (a section's handle on a DMA engine) stay valid. A
 * restore function may be called any number of times; each call costs what changed since.
 */
export type Restore = () => void;

export interface SavesState {
  save(): Restore;
}

/** Run every restore function, in order. */
export function restoreAll(fns: readonly Restore[]): Restore {
  return () => { for (const f of fns) f(); };
}

/** An array put back to the elements it held (the elements themselves are restored by their owners). */
export function saveArray<T>(xs: T[]): Restore {
  const copy = xs.slice();
  return () => { xs.length = 0; for (const x of copy) xs.push(x); };
}
