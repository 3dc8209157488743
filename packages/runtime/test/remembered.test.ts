import { describe, expect, it } from 'vitest';
import { remembered } from '../src/index.js';

describe('remembered', () => {
  it('answers each key once and gives the same answer after', () => {
    const asked: string[] = [];
    const f = remembered((k) => { asked.push(k); return k.length; });
    expect([f('a'), f('bb'), f('a'), f('bb')]).toEqual([1, 2, 1, 2]);
    expect(asked).toEqual(['a', 'bb']);
  });

  it('remembers null and undefined answers too', () => {
    let calls = 0;
    const f = remembered((k) => { calls++; return k === 'x' ? null : undefined; });
    expect([f('x'), f('x'), f('y'), f('y')]).toEqual([null, null, undefined, undefined]);
    expect(calls).toBe(2);
  });

  it('a call that throws remembers nothing: the next call asks again', () => {
    let calls = 0;
    const f = remembered((k) => { calls++; if (calls === 1) throw new RangeError(`bad ${k}`); return 7; });
    expect(() => f('k')).toThrow(RangeError);
    expect(f('k')).toBe(7);
    expect(calls).toBe(2);
  });

  it('a full table starts over: with a limit of 2 the third key clears the first two', () => {
    const asked: string[] = [];
    const f = remembered((k) => { asked.push(k); return k; }, 2);
    for (const k of ['a', 'b', 'c', 'a', 'c']) f(k);
    expect(asked).toEqual(['a', 'b', 'c', 'a']);
  });
});
