/**
 * A tapable SyncHook whose call loops over its taps instead of running code generated with
 * `new Function`: every kernel makes fresh hooks, so tapable compiled a new function per hook
 * on every boot (a matrix boots two kernels per cell). Same taps in the same order (tapable
 * orders them by stage and `before` when they tap), the declared arguments only, exceptions
 * passed through, no result; a hook with an interceptor or a context tap keeps tapable's code.
 */
interface CompileOptions {
  readonly taps: ReadonlyArray<{ readonly fn: (...args: unknown[]) => unknown; readonly context?: boolean }>;
  readonly interceptors: readonly unknown[];
  readonly args: readonly string[];
  readonly type: 'sync' | 'async' | 'promise';
}
type Compile = (this: unknown, options: CompileOptions) => (...args: unknown[]) => unknown;

const noTaps = (): undefined => undefined;

/** The hook itself, its compile step replaced (tapable's Hook calls `this.compile` once per change of taps). */
export function loopingSyncHook<H extends object>(hook: H): H {
  const target = hook as unknown as { compile: Compile };
  const generated = target.compile;
  target.compile = function compile(this: unknown, options: CompileOptions) {
    if (options.type !== 'sync' || options.interceptors.length > 0 || options.taps.some((t) => t.context === true)) return generated.call(this, options);
    const fns = options.taps.map((t) => t.fn);
    const n = options.args.length;
    if (fns.length === 0) return noTaps;
    return (...xs: unknown[]): undefined => {
      // Exactly the declared arguments, as tapable's generated call passes them (missing ones undefined).
      const args = xs.length === n ? xs : Array.from({ length: n }, (_, i) => xs[i]);
      for (const fn of fns) fn(...args);
      return undefined;
    };
  };
  return hook;
}
