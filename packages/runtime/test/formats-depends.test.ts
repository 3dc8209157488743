/**
 * FormatSpec.dependsOn: the families of FLBs a handler's files rely on are negotiated whenever
 * that handler's family is in use, so a target that cannot read them refuses before freeze.
 */
import { describe, expect, it } from 'vitest';
import { FormatNegotiationError, FormatRegistry, coreFormats, type KernelManifest } from '../src/index.js';

function registry(): FormatRegistry {
  const r = new FormatRegistry('7.1.0', coreFormats());
  r.register({ family: 'pci', writes: ['4.0.0'], reads: '>=3.0.0 <5.0.0', owner: 'pci' });
  r.register({ family: 'vfio-pci', writes: ['1.0.0'], reads: '^1.0.0', owner: 'pci', dependsOn: ['pci'] });
  r.register({ family: 'memfd', writes: ['2.0.0'], reads: '^2.0.0', owner: 'memfd' });
  return r;
}

const target = (pciReads: string | null): KernelManifest => {
  const own = registry().manifest();
  const formats = { ...own.formats };
  if (pciReads === null) delete formats.pci;
  else formats.pci = { reads: pciReads, writes: ['2.0.0'], owner: 'pci' };
  return { release: '7.2.0', formats };
};

describe('FormatRegistry.negotiate with dependsOn', () => {
  it('a family in use pulls in the families it depends on: a target that reads another pci major is refused', () => {
    let err: unknown = null;
    try { registry().negotiate(target('^2.0.0'), ['vfio-pci']); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(FormatNegotiationError);
    expect((err as FormatNegotiationError).refusals).toEqual([{ family: 'pci', owner: 'pci', offered: ['4.0.0'], accepted: '^2.0.0' }]);
  });

  it('a target that does not know the dependency at all is refused with accepted null', () => {
    expect(() => registry().negotiate(target(null), ['vfio-pci'])).toThrow(/format 'pci' \(writes 4.0.0\) is not read by kernel 7.2.0 at all/);
  });

  it('the dependency is picked like any family when the target reads it; unused families stay out', () => {
    const picked = registry().negotiate(target('>=4.0.0 <5.0.0'), ['vfio-pci']);
    expect([...picked].sort()).toEqual([['kho', '4.0.0'], ['luo', '5.0.0'], ['pci', '4.0.0'], ['vfio-pci', '1.0.0']].sort());
    expect(registry().negotiate(target('^2.0.0'), ['memfd']).has('pci')).toBe(false);
  });
});
