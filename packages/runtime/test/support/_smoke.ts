import { createMachine } from '@liveupdate/hw';
import { boot } from '@liveupdate/runtime';
import { testFilePlugin, createTestFile, readTestFile } from './testfile.js';
import * as c from './client.js';
for (const mem of ['1GiB', '4GiB', '64GiB']) {
  const t0 = performance.now();
  const m = createMachine({ memory: mem });
  const pl = testFilePlugin();
  const k1 = boot(m, { cmdline: 'kho=on liveupdate=on', plugins: [pl] });
  const p = k1.spawn('t');
  const dev = c.openLuo(p);
  const s = c.createSession(p, dev, 'a');
  const f = createTestFile(k1, p, new TextEncoder().encode('hello world'));
  c.preserveFd(p, s, f, 7);
  const t1 = performance.now();
  const k2 = k1.kexec({ cmdline: 'kho=on liveupdate=on', plugins: [pl] });
  const t2 = performance.now();
  const p2 = k2.spawn('t');
  const d2 = c.openLuo(p2);
  const s2 = c.retrieveSession(p2, d2, 'a');
  const f2 = c.retrieveFd(p2, s2, 7);
  console.log(mem, new TextDecoder().decode(readTestFile(k2, p2, f2)), k2.luo.liveupdateNum, (t1-t0).toFixed(1), (t2-t1).toFixed(1), k2.khoIn?.leaked());
  c.finishSession(p2, s2);
  console.log(k2.khoIn?.leaked(), pl.handlerOf(k2).calls);
}
