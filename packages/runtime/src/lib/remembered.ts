/**
 * A pure function of a string, answered once per string: the same few versions, ranges, sizes
 * and command lines are asked about on every boot, and a matrix boots two kernels per cell. The
 * table is bounded (a full one starts over) and a call that throws remembers nothing. Answers are
 * shared between callers: an object answer must be treated as read-only.
 */
export function remembered<T>(answer: (key: string) => T, limit = 4096): (key: string) => T {
  const seen = new Map<string, T>();
  return (key) => {
    if (seen.has(key)) return seen.get(key) as T;
    const v = answer(key);
    if (seen.size >= limit) seen.clear();
    seen.set(key, v);
    return v;
  };
}
