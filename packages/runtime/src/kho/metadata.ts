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

/**
 * Incoming checks in upstream order (kho_in_kexec_metadata): missing → silent; < 4 bytes,
 * version != 1, < 73 bytes → warn and ignore. A larger blob-size is not an error upstream: only
 * the struct is read. The blob page is consumed here (restored and freed) whatever the outcome.
 */
export function readIncomingMetadata(kin: KhoIn, mm: Mm, dmesg: Dmesg): KexecMetadata | null {
  let blob: { phys: bigint; size: bigint };
  try {
    blob = kin.lookupSubtree(KHO_KEXEC_METADATA_NAME);
  } catch (e) {
    if (e instanceof ErrnoError) return null;
    throw e;
  }
  // Upstream maps preserved-data with phys_to_virt; here a pointer whose struct is not in RAM cannot be read.
  if (blob.phys + BigInt(khoKexecMetadata.size) > BigInt(mm.memory.size)) {
    dmesg.log('warn', 'KHO', `kexec-metadata at 0x${blob.phys.toString(16)} is outside RAM`);
    return null;
  }
  const phys = Number(blob.phys);
  const consume = (): void => kin.restoreFree(phys);
  if (blob.size < 4n) { dmesg.log('warn', 'KHO', `kexec-metadata too small (${blob.size} bytes)`); consume(); return null; }
  const version = mm.memory.readU32(phys);
  if (version !== KHO_KEXEC_METADATA_VERSION) {
    dmesg.log('warn', 'KHO', `kexec-metadata version ${version} not supported`);
    consume();
    return null;
  }
  if (blob.size < BigInt(khoKexecMetadata.size)) { dmesg.log('warn', 'KHO', `kexec-metadata too small (${blob.size} bytes)`); consume(); return null; }
  if (blob.size > BigInt(khoKexecMetadata.size)) {
    dmesg.log('warn', 'KHO', `kexec-metadata blob-size ${blob.size} is larger than the v1 struct (${khoKexecMetadata.size} bytes): the rest is ignored`);
  }
  const m = khoKexecMetadata.decode(mm.memory.read(phys, khoKexecMetadata.size));
  consume();
  dmesg.log('info', 'KHO', `exec from: ${m.previous_release} (count ${m.kexec_count})`);
  return { previousRelease: m.previous_release, kexecCount: m.kexec_count };
}

/** Outgoing blob: our release and incoming count + 1 (0 on a cold boot); the u32 wraps as in the kernel. */
export function writeOutgoingMetadata(kho: KhoOut, mm: Mm, release: string, kexecCount: number): void {
  const phys = kho.allocPreserve(khoKexecMetadata.size);
  const rel = new TextEncoder().encode(release).length < KEXEC_METADATA_RELEASE_LEN ? release : release.slice(0, KEXEC_METADATA_RELEASE_LEN - 1);
  mm.memory.write(phys, khoKexecMetadata.encode({ version: KHO_KEXEC_METADATA_VERSION, previous_release: rel, kexec_count: kexecCount >>> 0 }));
  try {
    kho.addSubtree(KHO_KEXEC_METADATA_NAME, phys, khoKexecMetadata.size);
  } catch (e) {
    kho.unpreserveFree(phys);
    throw e;
  }
}
