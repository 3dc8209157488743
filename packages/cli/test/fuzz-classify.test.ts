/**
 * The fuzzer's verdict: a wrong byte in any object is a wrong answer, whatever else happened in
 * the run. Seeds 9342 and 18956 of `liveupdate fuzz` flip a bit of an xarray entry of vm-a's
 * memfd@3.1.0 file, so a folio of the file points at another page: the file comes back with
 * wrong bytes. They used to be reported as file-error (another failure in the same run hid the
 * wrong data); they are wrong answers, and the command fails on them.
 */
import { describe, expect, it } from 'vitest';
import type { ObjectCheck } from '@liveupdate/sdk';
import type { ObjectResult } from '@liveupdate/sdk/testing';
import { classify } from '../src/fuzz/fuzz.js';
import type { RunResult } from '../src/scenario/runner.js';
import { cli } from './support/cli.js';

const check = (ok: boolean, problems: string[] = []): ObjectCheck => ({ ok, summary: ok ? 'fine' : 'wrong', problems });
const object = (session: string, patch: Partial<ObjectResult>): ObjectResult => ({
  session, token: 1, type: 'memfd', spec: { type: 'memfd', token: 1 }, createdBy: null, restoredBy: null,
  preserved: true, preservedPages: 1, restoredPages: 1, compatible: 'memfd@3.1.0', check: check(true), error: null, ...patch,
});
/** The fields classify() reads; the rest of a run does not matter to it. */
const run = (harnessOutcome: RunResult['harnessOutcome'], objects: ObjectResult[], error: string | null = null): RunResult =>
  ({ harnessOutcome, outcome: harnessOutcome === 'updated' ? 'updated' : 'failed', objects, sectionChecks: [], error } as Partial<RunResult> as RunResult);

describe('classify() of a fuzz run', () => {
  it('a file error in one session does not hide wrong bytes in another: wrong-answer', () => {
    const r = run('file-error', [
      object('vm-a', { check: check(false, ['session vm-a token 1: byte 0x204000 differs (pattern)']) }),
      object('vm-b', { check: null, error: 'RETRIEVE_FD token 1: EINVAL bad header' }),
    ], 'EINVAL finish');
    expect(classify(r)).toEqual({ outcome: 'wrong-answer', detail: 'session vm-a token 1: byte 0x204000 differs (pattern)' });
  });

  it('an updated run with a RETRIEVE_FD error and a wrong file elsewhere is a wrong answer, not a file error', () => {
    const r = run('updated', [
      object('vm-a', { check: null, error: 'RETRIEVE_FD token 1: ENOENT' }),
      object('vm-b', { check: check(false, ['session vm-b token 1: synthetic pages at 0x0+0x1000 do not carry their seed']) }),
    ]);
    expect(classify(r).outcome).toBe('wrong-answer');
  });

  it('a file error alone stays a file error; a clean run is updated', () => {
    expect(classify(run('updated', [object('vm-a', { check: null, error: 'RETRIEVE_FD token 1: EINVAL' }), object('vm-b', {})])).outcome).toBe('file-error');
    expect(classify(run('updated', [object('vm-a', {}), object('vm-b', {})]))).toEqual({ outcome: 'updated', detail: null });
  });
});

describe('liveupdate fuzz seeds 9342 and 18956 (regression)', () => {
  it.each([
    [9342, '0x204000'],
    [18956, '0x2f4000'],
  ])('seed %i: a corrupted xarray entry gives vm-a another page: wrong-answer at byte %s, exit 1', (seed, at) => {
    const r = cli(['fuzz', '--seed', String(seed), '--runs', '1', '--json']);
    const f = JSON.parse(r.stdout) as { ok: boolean; results: Array<{ structure: string; outcome: string; detail: string }>; reproduce: string };
    expect(f.results[0]).toMatchObject({ structure: 'memfd xarray node', outcome: 'wrong-answer', detail: `session vm-a token 1: byte ${at} differs (pattern)` });
    expect(f).toMatchObject({ ok: false, reproduce: `liveupdate fuzz --seed ${seed} --runs 1` });
    expect(r.code).toBe(1);
  });
});
