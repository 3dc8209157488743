/** kexec-metadata: which kernel we came from and how many kexecs since the cold boot. */
import {
  KHO_KEXEC_METADATA_NAME, KHO_KEXEC_METADATA_VERSION, KEXEC_METADATA_RELEASE_LEN, khoKexecMetadata,
} from '../abi/kexec-metadata.js';
import { ErrnoError } from '../errno.js';
import type { Dmesg } from '../kernel/dmesg.js';
import type { Mm } from '../mm/mm.js';
import type { KhoOut } from './kho.js';
import type { KhoIn } from './kho-in.js';

export interface KexecMetadata {
  readonly previousRelease: string;
  readonly kexecCount: number;
}

/** Incoming checks in upstream order: missing → silent; < 4 bytes, version != 1, < 73 bytes → warn and ignore. */
export function readIncomingMetadata(kin: KhoIn, mm: Mm, dmesg: Dmesg): KexecMetadata | null {
  let blob: { phys: number; size: number };
  try {
    blob = kin.retrieveSubtree(KHO_KEXEC_METADATA_NAME);
  } catch (e) {
    if (e instanceof ErrnoError) return null;
    throw e;
  }
  const consume = (): void => kin.restoreFree(blob.phys);
  if (blob.size < 4) { dmesg.log('warn', 'KHO', `kexec-metadata too small (${blob.size} bytes)`); consume(); return null; }
  const version = mm.memory.readU32(blob.phys);
  if (version !== KHO_KEXEC_METADATA_VERSION) {
    dmesg.log('warn', 'KHO', `kexec-metadata version ${version} not supported`);
    consume();
    return null;
  }
  if (blob.size < khoKexecMetadata.size) { dmesg.log('warn', 'KHO', `kexec-metadata too small (${blob.size} bytes)`); consume(); return null; }
  const m = khoKexecMetadata.decode(mm.memory.read(blob.phys, khoKexecMetadata.size));
  consume();
  dmesg.log('info', 'KHO', `exec from: ${m.previous_release} (count ${m.kexec_count})`);
  return { previousRelease: m.previous_release, kexecCount: m.kexec_count };
}

/** Outgoing blob: our release and incoming count + 1 (0 on a cold boot). */
export function writeOutgoingMetadata(kho: KhoOut, mm: Mm, release: string, kexecCount: number): void {
  const phys = kho.allocPreserve(khoKexecMetadata.size);
  const rel = new TextEncoder().encode(release).length < KEXEC_METADATA_RELEASE_LEN ? release : release.slice(0, KEXEC_METADATA_RELEASE_LEN - 1);
  mm.memory.write(phys, khoKexecMetadata.encode({ version: KHO_KEXEC_METADATA_VERSION, previous_release: rel, kexec_count: kexecCount }));
  try {
    kho.addSubtree(KHO_KEXEC_METADATA_NAME, phys, khoKexecMetadata.size);
  } catch (e) {
    kho.unpreserveFree(phys);
    throw e;
  }
}
