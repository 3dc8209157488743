/** CRC-32 (IEEE 802.3, reflected, as zlib's crc32()), incremental: pass the previous value to continue. */
const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(bytes: Uint8Array, prev = 0): number {
  let c = (prev ^ 0xffffffff) >>> 0;
  for (let i = 0; i < bytes.length; i++) c = (TABLE[(c ^ (bytes[i] as number)) & 0xff] as number) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** Continue a CRC-32 over the four little-endian bytes of a u32 (hot paths without byte buffers). */
export function crc32Word(crc: number, word: number): number {
  let c = (crc ^ 0xffffffff) >>> 0;
  c = (TABLE[(c ^ word) & 0xff] as number) ^ (c >>> 8);
  c = (TABLE[(c ^ (word >>> 8)) & 0xff] as number) ^ (c >>> 8);
  c = (TABLE[(c ^ (word >>> 16)) & 0xff] as number) ^ (c >>> 8);
  c = (TABLE[(c ^ (word >>> 24)) & 0xff] as number) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
