/**
 * plugin-memfd's tools through the SDK's generic scenario runner (the one `liveupdate` uses):
 * its object kinds create, preserve and check memfds, and the check costs what is resident,
 * not the file size: a 1 TiB file with 0.01% written on a 64 TiB machine is checked through its
 * page cache (every hole is absent, so it reads zero) without reading a single hole.
 */
import { describe, expect, it } from 'vitest';
import { checkScenarioData, type Scenario } from '@liveupdate/sdk';
import { runScenario } from '@liveupdate/sdk/testing';
import memfd from '@liveupdate/plugin-memfd';

const NAME = '@liveupdate/plugin-memfd';
const scenario = (machine: string, objects: Array<Record<string, unknown>>, from = '4.0.0', to = from): Scenario => checkScenarioData({
  name: 't', machine: { memory: machine },
  from: { release: '7.1.0', plugins: { [NAME]: from } }, to: { release: '7.2.0', plugins: { [NAME]: to } },
  sessions: [{ name: 'vm', objects }],
}, 't', [memfd().tools]);

describe('memfd objects through the generic runner', () => {
  it('a 1 TiB synthetic memfd with 0.01% written on a 64 TiB machine: the check reads only the 26,844 written pages', () => {
    const r = runScenario(scenario('64TiB', [{ type: 'memfd', token: 1, size: '1TiB', fill: 'synthetic', touched: 0.0001 }]), { from: [memfd()], to: [memfd()] });
    expect(r.outcome).toBe('updated');
    expect(r.violations).toEqual([]);
    const [o] = r.objects;
    expect(o?.check).toEqual({
      ok: true, problems: [],
      summary: '26844 synthetic pages checked by seed, 268408612 hole pages absent (read zero)',
      counts: { 'synthetic pages checked by seed': 26_844, 'hole pages absent (read zero)': 268_435_456 - 26_844 },
    });
    expect([o?.preservedPages, o?.restoredPages]).toEqual([26_844, 26_844]);
  }, 60_000);

  it('memfd-v2 materializes holes: they come back resident and are checked as zeros', () => {
    // Builds that write and read up to memfd-v2, as release 2.0.0 does.
    const v2 = () => memfd({ writes: ['1.0.0', '2.0.0'], reads: '>=1.0.0 <3.0.0', hugetlb: false });
    const r = runScenario(scenario('1GiB', [{ type: 'memfd', token: 1, size: '1MiB', fill: 'pattern', touched: 0.25, seals: ['grow'] }]), { from: [v2()], to: [v2()] });
    expect(r.objects[0]?.compatible).toBe('memfd-v2');
    expect(r.objects[0]?.check?.counts).toEqual({ 'pattern pages compared byte for byte': 64, 'unwritten resident pages read zero': 192 });
  });

  it('a release without hugeTLB cannot create a hugetlb-memfd object: not supported by A, nothing runs', () => {
    const r = runScenario(scenario('2GiB', [{ type: 'hugetlb-memfd', token: 1, size: '4MiB', fill: 'zero' }]), { from: [memfd({ hugetlb: false })], to: [memfd()] });
    expect(r.outcome).toBe('not-supported');
    expect(r.error).toBe('not supported by A: session vm token 1: @liveupdate/plugin-memfd@4.0.0: this release does not preserve hugeTLB memfds');
  });

  it('asks the kernel for the hugeTLB pool its objects need', () => {
    const r = runScenario(scenario('2GiB', [{ type: 'hugetlb-memfd', token: 1, size: '8MiB', fill: 'synthetic' }]), { from: [memfd()], to: [memfd()] });
    expect(r.cmdline).toBe('kho=on liveupdate=on hugepagesz=2M hugepages=4');
    expect(r.objects[0]?.check?.ok).toBe(true);
  });

  it('a size that is not whole huge pages is named by the kind\'s own check', () => {
    const kind = memfd().tools.objects?.find((k) => k.type === 'hugetlb-memfd');
    expect(kind?.validate?.({ type: 'hugetlb-memfd', token: 1, size: '3MiB', fill: 'zero' } as never)).toEqual([{ field: 'size', message: 'size 3MiB is not a multiple of the 2 MiB huge page' }]);
  });
});
