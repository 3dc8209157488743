/**
 * The one rule, for a running VM: the incoming kernel boots in a fresh worker_thread over the
 * same memory with nothing but the boot parameters, retrieves the VM and its guest_memfd by
 * token, and the guest finishes its program exactly. The worker runs the compiled packages
 * (dist/), which the root `npm test` builds with `tsc -b` first.
 */
import { Worker } from 'node:worker_threads';
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { createSession, preserveFd } from '@liveupdate/sdk';
import { memfdCreate } from '@liveupdate/plugin-memfd';
import { createGuest, expectedFinalDigest, guestDigest, saveVcpus } from '../src/index.js';
import { TWO_VCPUS, runFor, start } from './support.js';

const dist = (pkg: string): string => fileURLToPath(new URL(`../../${pkg}/dist/index.js`, import.meta.url));

interface Seen {
  bootCount: number;
  atResume: { pages: number; digest: string };
  final: { pages: number; digest: string };
  doorbells: string[];
  leaked: { blocks: number; pages: number } | null;
}

function runWorker(workerData: unknown): Promise<Seen> {
  return new Promise((resolve, reject) => {
    // Plain Node: vitest's execArgv would make the compiled packages load TypeScript sources.
    const worker = new Worker(new URL('./fixtures/vm-worker.mjs', import.meta.url), { workerData, execArgv: [] });
    let result: Seen | undefined;
    worker.on('message', (m: unknown) => { result = m as Seen; });
    worker.on('error', reject);
    worker.on('exit', (code) => (result && code === 0 ? resolve(result) : reject(new Error(`VM worker exited with ${code}`))));
  });
}

describe('a VM retrieved by a kernel booted in a worker thread from bytes alone', () => {
  it('the guest resumes with every page identical and finishes exactly', async () => {
    for (const pkg of ['hw', 'sdk', 'plugin-memfd', 'plugin-guest-memfd']) {
      if (!existsSync(dist(pkg))) throw new Error(`${dist(pkg)} is missing: run \`npx tsc -b\` first`);
    }
    const o = start();
    const guest = createGuest(o.p, o.kvm, TWO_VCPUS);
    for (const fd of guest.vcpuFds) runFor(o.p, fd, 250);
    const regs = saveVcpus(o.p, guest.vcpuFds);
    const st = memfdCreate(o.p, 'vcpu-state', 0);
    o.p.pwrite(st, regs, 0);
    const atPause = guestDigest(o.p, guest.gmemFd);
    const s = createSession(o.p, o.dev, 'vm0');
    preserveFd(o.p, s, guest.vmFd, 1);
    preserveFd(o.p, s, guest.gmemFd, 2);
    preserveFd(o.p, s, st, 3);
    o.k1.kexecJump(o.cfg);
    const seen = await runWorker({
      hwUrl: pathToFileURL(dist('hw')).href, sdkUrl: pathToFileURL(dist('sdk')).href,
      memfdUrl: pathToFileURL(dist('plugin-memfd')).href, gmemUrl: pathToFileURL(dist('plugin-guest-memfd')).href,
      handle: o.machine.share(), ramBytes: guest.ramBytes, vcpus: 2,
    });
    expect(seen.bootCount).toBe(2);
    expect(seen.atResume).toEqual(atPause);
    expect(seen.doorbells).toEqual(['64', '64']);
    expect(seen.final).toEqual(expectedFinalDigest(TWO_VCPUS));
    expect(seen.leaked).toEqual({ blocks: 0, pages: 0 });
  }, 60_000);
});
