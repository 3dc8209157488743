/**
 * The campaign's chained live updates: one machine, kernel after kernel. Each kernel retrieves
 * the two memfds the previous one preserved (one dense, one sparse), checks every byte, finishes
 * the session, writes one more page into each, preserves them in a new session and kexecs.
 * After each update: nothing leaked in KHO, no poisoned page read, liveupdate_num and the
 * kexec count advanced by one.
 */
import { PAGE_SIZE, createMachine } from '@liveupdate/hw';
import { Kernel, boot, createSession, finishSession, openLiveupdate, preserveFd, retrieveFd, retrieveSession } from '@liveupdate/sdk';
import memfd, { memfdCheckSynthetic, memfdCreate, memfdFillSynthetic } from '@liveupdate/plugin-memfd';

const MiB = 2 ** 20;
const SEED = 0x5eed;
const FILES = [{ token: 1, size: 4 * MiB, stride: 1 }, { token: 2, size: 8 * MiB, stride: 7 }] as const;

export interface ChainResult { readonly updates: number; readonly problems: readonly string[]; readonly ms: number }

export function chainedUpdates(n: number): ChainResult {
  const t0 = performance.now();
  const cfg = { cmdline: 'kho=on liveupdate=on', plugins: [memfd()], release: '7.1.0' };
  const machine = createMachine({ memory: '1GiB' });
  const problems: string[] = [];
  /** Pages written so far per token: page index -> seed. */
  const written = new Map<number, Map<number, number>>(FILES.map((f) => [f.token, new Map()]));
  let k = boot(machine, cfg);
  let p = k.spawn('vmm');
  let dev = openLiveupdate(p);
  let session = createSession(p, dev, 'vm-0');
  for (const f of FILES) {
    const fd = memfdCreate(p, `guest-${f.token}`, 0);
    p.ftruncate(fd, f.size);
    const pages = written.get(f.token) as Map<number, number>;
    for (let i = 0; i < f.size / PAGE_SIZE; i += f.stride) { memfdFillSynthetic(p, fd, i * PAGE_SIZE, PAGE_SIZE, SEED + i); pages.set(i, SEED + i); }
    preserveFd(p, session, fd, f.token);
  }
  let updates = 0;
  for (let u = 1; u <= n; u++) {
    const num = k.luo.liveupdateNum;
    const count = k.kexecCount;
    try {
      k.kexecJump(cfg);
      machine.memory.resetPoisonReads();
      k = Kernel.boot(machine, cfg);
      if (k.luo.liveupdateNum !== num + 1) problems.push(`update ${u}: liveupdate_num ${k.luo.liveupdateNum} after ${num}`);
      if (k.kexecCount !== count + 1) problems.push(`update ${u}: kexec count ${k.kexecCount} after ${count}`);
      p = k.spawn('vmm');
      dev = openLiveupdate(p);
      const incoming = retrieveSession(p, dev, `vm-${u - 1}`);
      const fds: number[] = [];
      for (const f of FILES) {
        const fd = retrieveFd(p, incoming, f.token);
        for (const [i, seed] of written.get(f.token) as Map<number, number>) {
          if (!memfdCheckSynthetic(p, fd, i * PAGE_SIZE, PAGE_SIZE, seed)) { problems.push(`update ${u}: token ${f.token} page ${i} differs`); break; }
        }
        fds.push(fd);
      }
      finishSession(p, incoming);
      p.close(incoming);
      const leaked = k.khoIn?.leaked();
      if (leaked && leaked.blocks > 0) problems.push(`update ${u}: ${leaked.blocks} preserved block(s) leaked`);
      if (machine.memory.poisonReads > 0) problems.push(`update ${u}: ${machine.memory.poisonReads} poisoned read(s)`);
      session = createSession(p, dev, `vm-${u}`);
      FILES.forEach((f, j) => {
        const fd = fds[j] as number;
        // One more page each update, so what crosses changes every time.
        const i = (u * 13 + j) % (f.size / PAGE_SIZE);
        memfdFillSynthetic(p, fd, i * PAGE_SIZE, PAGE_SIZE, SEED + 1000 * u + j);
        (written.get(f.token) as Map<number, number>).set(i, SEED + 1000 * u + j);
        preserveFd(p, session, fd, f.token);
      });
      updates++;
    } catch (e) {
      problems.push(`update ${u}: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
      break;
    }
  }
  return { updates, problems, ms: performance.now() - t0 };
}
