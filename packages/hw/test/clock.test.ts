import { describe, expect, it } from 'vitest';
import { createMachine, KEXEC_JUMP_NS, MachineClock, PfnRanges } from '../src/index.js';

describe('the machine clock', () => {
  it('starts at 0 and only moves when advanced', () => {
    const c = new MachineClock();
    expect(c.now).toBe(0);
    c.advance(1500);
    expect(c.now).toBe(1500);
  });

  it('ticks every attached ticker over the whole interval, in attach order', () => {
    const c = new MachineClock(100);
    const seen: string[] = [];
    c.attach({ name: 'a', tick: (f, t) => seen.push(`a ${f}-${t}`) });
    const detach = c.attach({ name: 'b', tick: (f, t) => seen.push(`b ${f}-${t}`) });
    c.advance(50);
    detach();
    c.advance(10);
    expect(seen).toEqual(['a 100-150', 'b 100-150', 'a 150-160']);
  });

  it('refuses negative, non-finite and nested advances', () => {
    const c = new MachineClock();
    expect(() => c.advance(-1)).toThrow(RangeError);
    expect(() => c.advance(Number.NaN)).toThrow(RangeError);
    c.attach({ name: 'bad', tick: () => c.advance(1) });
    expect(() => c.advance(5)).toThrow(/inside its tick/);
  });

  it('the kexec jump lets KEXEC_JUMP_NS pass after the scrub, so devices tick through it', () => {
    const m = createMachine({ memory: '64MiB' });
    m.powerOn('');
    let ticked = 0;
    m.clock.attach({ name: 'dma', tick: (f, t) => { ticked += t - f; } });
    m.kexec({ survivors: new PfnRanges(), params: { cmdline: '' } });
    expect(m.clock.now).toBe(KEXEC_JUMP_NS);
    expect(ticked).toBe(KEXEC_JUMP_NS);
  });

  it('crosses to a worker as part of the machine handle', () => {
    const m = createMachine({ memory: '64MiB' });
    m.clock.advance(42);
    expect(m.share().clockNs).toBe(42);
  });
});
