/** CRC-32 (IEEE 802.3 / zlib): one implementation, in the SDK. */
export { CRC32_START, Crc32, crc32, crc32Final, crc32Identity, crc32U32, crc32Update, crc32Word, identityCrc32, identityProblem } from '@liveupdate/sdk';
