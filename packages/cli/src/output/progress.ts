/**
 * Progress of the long phases (preserve, kexec, restore): a cli-progress bar on a terminal,
 * plain lines (start, quarters, done) when the output is a log, nothing for --json.
 * Live updates run synchronously, so the bar redraws from update() (synchronousUpdate).
 * cli-progress is loaded when the first bar is made: `matrix`, `fuzz` and logs never draw one.
 */
import { createRequire } from 'node:module';
import type cliProgressModule from 'cli-progress';

let cliProgress: typeof cliProgressModule | null = null;
const barModule = (): typeof cliProgressModule => (cliProgress ??= createRequire(import.meta.url)('cli-progress') as typeof cliProgressModule);

export interface Progress {
  /** Start a phase of `total` units; the previous one is finished first. */
  phase(name: string, total: number, unit: string): void;
  tick(units: number): void;
  /** Finish the current phase. */
  done(): void;
  /** A line of detail (plain-lines mode only: it would tear a bar). */
  note(line: string): void;
}

export type ProgressMode = 'bar' | 'lines' | 'off';

export const noProgress: Progress = { phase: () => undefined, tick: () => undefined, done: () => undefined, note: () => undefined };

const fmt = (n: number): string => n.toLocaleString('en-US');

function linesProgress(out: NodeJS.WritableStream): Progress {
  let current: { name: string; total: number; unit: string; value: number; quarter: number; t0: number } | null = null;
  const done = (): void => {
    if (!current) return;
    const ms = performance.now() - current.t0;
    out.write(`[${current.name}] done: ${fmt(current.value)} ${current.unit} in ${ms < 1000 ? `${ms.toFixed(0)} ms` : `${(ms / 1000).toFixed(2)} s`}\n`);
    current = null;
  };
  return {
    phase(name, total, unit) {
      done();
      current = { name, total, unit, value: 0, quarter: 0, t0: performance.now() };
      out.write(`[${name}] ${fmt(total)} ${unit}\n`);
    },
    tick(units) {
      if (!current) return;
      current.value += units;
      const q = current.total > 0 ? Math.floor((4 * current.value) / current.total) : 4;
      if (q > current.quarter && q < 4) {
        current.quarter = q;
        out.write(`[${current.name}] ${q * 25}% (${fmt(current.value)}/${fmt(current.total)} ${current.unit})\n`);
      }
    },
    done,
    note(line) { out.write(`  ${line}\n`); },
  };
}

function barProgress(out: NodeJS.WritableStream): Progress {
  let bar: cliProgressModule.SingleBar | null = null;
  const done = (): void => {
    if (!bar) return;
    bar.update(bar.getTotal());
    bar.stop();
    bar = null;
  };
  return {
    phase(name, total, unit) {
      done();
      bar = new (barModule().SingleBar)({
        stream: out,
        format: `${name.padEnd(8)} {bar} {percentage}% | {value}/{total} ${unit} | {duration_formatted}`,
        barCompleteChar: '\u2588',
        barIncompleteChar: '\u2591',
        // The cursor stays visible: the update runs synchronously, so a Ctrl-C kills the process
        // before any handler could show a hidden cursor again.
        hideCursor: false,
        synchronousUpdate: true,
        fps: 20,
        formatValue: (v, _o, type) => (type === 'value' || type === 'total' ? fmt(v) : String(v)),
      });
      bar.start(Math.max(total, 1), 0);
    },
    tick(units) { bar?.increment(units); },
    done,
    note: () => undefined,
  };
}

export function createProgress(mode: ProgressMode, out: NodeJS.WritableStream = process.stderr): Progress {
  if (mode === 'bar') return barProgress(out);
  if (mode === 'lines') return linesProgress(out);
  return noProgress;
}
