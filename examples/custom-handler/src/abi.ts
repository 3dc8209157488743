/**
 * The ringbuf handover ABI: one packed header per format version, little-endian, written by
 * the outgoing kernel's freeze into a kho_alloc_preserve'd page whose physical address is
 * the file's luo_file_ser.data. The ring's bytes stay where they are (a KHO-preserved folio).
 *
 * - 1.0.0  ringbuf_ser_v1_0 (40 bytes): where the ring is, its size, the producer and
 *          consumer positions (monotonic byte counters; the ring offset is pos % size).
 * - 1.1.0  ringbuf_ser_v1_1 (48 bytes): the 1.0 header unchanged plus `dropped` (bytes the
 *          producer overwrote before the consumer read them). A minor bump: a reader built
 *          for 1.0 decodes the first 40 bytes and skips the rest.
 * - 2.0.0  ringbuf_ser_v2 (48 bytes): a breaking layout (new magic, the ring as pfn + order,
 *          the consumer position plus a fill count instead of head/tail). No 1.x reader can
 *          read it, so its major is bumped.
 *
 * Any edit here is a format change: bump the version and keep the old layout as a reader.
 */
import { defineStruct, u32, u64 } from '@liveupdate/sdk';

/** An 8-character ASCII tag as the u64 a little-endian machine stores. */
export function magic(tag: string): bigint {
  if (tag.length !== 8) throw new RangeError(`magic '${tag}' must be 8 ASCII characters`);
  let v = 0n;
  for (let i = 7; i >= 0; i--) v = (v << 8n) | BigInt(tag.charCodeAt(i) & 0xff);
  return v;
}

export const RINGBUF_MAGIC_V1 = magic('RINGBUF1');
export const RINGBUF_MAGIC_V2 = magic('RINGBUF2');

export const ringbufSerV1_0 = defineStruct('ringbuf_ser_v1_0', {
  magic: u64,
  /** Physical address of the ring (a naturally aligned folio). */
  data_phys: u64,
  /** Ring size in bytes: a power of two, at least one page. */
  size: u64,
  /** Bytes ever written (producer position). */
  head: u64,
  /** Bytes ever consumed (consumer position); head - tail <= size. */
  tail: u64,
}, { size: 40 });

export const ringbufSerV1_1 = defineStruct('ringbuf_ser_v1_1', {
  magic: u64,
  data_phys: u64,
  size: u64,
  head: u64,
  tail: u64,
  /** 1.1: bytes overwritten before they were read. */
  dropped: u64,
}, { size: 48 });

export const ringbufSerV2 = defineStruct('ringbuf_ser_v2', {
  magic: u64,
  /** Page frame number of the ring folio. */
  data_pfn: u64,
  /** The folio's order: the ring is PAGE_SIZE << order bytes. */
  order: u32,
  /** Reserved, 0. */
  flags: u32,
  /** Consumer position (bytes ever consumed). */
  tail: u64,
  /** Unread bytes (head - tail). */
  used: u64,
  dropped: u64,
}, { size: 48 });

/** Every layout this source tree knows, by format version. */
export const LAYOUTS = ['1.0.0', '1.1.0', '2.0.0'] as const;
export type RingbufLayout = (typeof LAYOUTS)[number];

/** The size of the header a version writes. */
export function headerSize(version: RingbufLayout): number {
  return version === '1.0.0' ? ringbufSerV1_0.size : version === '1.1.0' ? ringbufSerV1_1.size : ringbufSerV2.size;
}
