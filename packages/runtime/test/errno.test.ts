/**
 * ErrnoError: a kernel answer by errno name and number. It is made without capturing the
 * JavaScript call stack (expected errnos sit on hot paths); captureStacks brings the frames back.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ErrnoError, errnoOf } from '@liveupdate/runtime';

describe('ErrnoError', () => {
  afterEach(() => { ErrnoError.captureStacks = false; });

  it('names the call, the errno and the detail; errno is the number', () => {
    const e = new ErrnoError('ENODATA', 'liveupdate_flb_get_incoming', 'memfd-hugetlb-v1');
    expect(e.message).toBe('liveupdate_flb_get_incoming: ENODATA (memfd-hugetlb-v1)');
    expect(e.name).toBe('ErrnoError');
    expect(e.code).toBe('ENODATA');
    expect(e.errno).toBe(61);
    expect(errnoOf(() => { throw e; })).toBe('ENODATA');
  });

  it('captures no frames by default: the stack is the message line alone', () => {
    expect(new ErrnoError('ENOENT', 'open', 'x').stack).toBe('ErrnoError: open: ENOENT (x)');
  });

  it('leaves Error.stackTraceLimit as it was', () => {
    const before = Error.stackTraceLimit;
    void new ErrnoError('EINVAL', 'ioctl');
    expect(Error.stackTraceLimit).toBe(before);
    expect(new Error('other').stack?.split('\n').length).toBeGreaterThan(1);
  });

  it('captureStacks = true captures the frames again', () => {
    ErrnoError.captureStacks = true;
    const lines = new ErrnoError('EINVAL', 'ioctl').stack?.split('\n') ?? [];
    expect(lines[0]).toBe('ErrnoError: ioctl: EINVAL');
    expect(lines[1]).toMatch(/^ {4}at /);
  });
});
