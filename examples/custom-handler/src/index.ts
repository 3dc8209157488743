/**
 * @liveupdate/example-custom-handler: a third-party preservation handler ("ringbuf") written
 * only against @liveupdate/sdk. See README.md.
 */
export {
  ringbuf, layoutFor, decodeHeader, encodeHeader, RINGBUF_PLUGIN, RINGBUF_FAMILY,
  type RingbufOptions, type RingbufTraceEvent,
} from './plugin.js';
export {
  Ringbuf, ringbufCreate, ringbufWrite, ringbufRead, ringbufPeek, ringbufStat, ringbufOf, isRingbuf,
  RINGBUF_DEVICE, RINGBUF_MAX_ORDER, type RingbufStat,
} from './ringbuf.js';
export * from './abi.js';
