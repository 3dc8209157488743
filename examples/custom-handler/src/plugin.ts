/**
 * The ringbuf plugin: the /dev/ringbuf device and the LUO file handler that carries a ring
 * through a live update, written only against @liveupdate/sdk.
 *
 * Handover of one ring: the ring folio is KHO-preserved where it is (no copy) and a header
 * page from kho_alloc_preserve holds a ringbuf_ser_* struct (see abi.ts) in the format
 * version negotiated with the target kernel; luo_file_ser.data is the header's address.
 *
 *   preserve   kho_preserve_folio(ring) + kho_alloc_preserve(header)   (undone by unpreserve)
 *   freeze     write the header in ctx.version (positions are final now)
 *   retrieve   restore header + ring, decode ctx.version, adopt the ring, free the header
 *   finish     a ring nobody retrieved: restore and free it and its header
 */
import {
  definePlugin, defineFileHandler, ErrnoError, PAGE_SIZE,
  type HandlerContext, type Kernel, type Plugin,
} from '@liveupdate/sdk';
import {
  LAYOUTS, RINGBUF_MAGIC_V1, RINGBUF_MAGIC_V2, ringbufSerV1_0, ringbufSerV1_1, ringbufSerV2, type RingbufLayout,
} from './abi.js';
import { isRingbuf, newRingbufFile, Ringbuf, RINGBUF_DEVICE, RINGBUF_MAX_ORDER } from './ringbuf.js';
import { ringbufTools } from './tools.js';

export const RINGBUF_PLUGIN = '@example/ringbuf';
export const RINGBUF_FAMILY = 'ringbuf';

/** One handler op as the plugin saw it: which kernel, which file, which format version. */
export interface RingbufTraceEvent {
  readonly op: 'preserve' | 'unpreserve' | 'freeze' | 'unfreeze' | 'retrieve' | 'finish';
  readonly version: string;
  readonly kernel: number;
  readonly token: bigint;
  /** retrieve: the header layout actually decoded (a 1.0 build reads a 1.1 header as 1.0). */
  readonly layout?: RingbufLayout;
}

export interface RingbufOptions {
  /** Format versions this build writes (default: every layout it knows). */
  readonly writes?: readonly string[];
  /** Format versions this build reads (default '>=1.0.0 <3.0.0'). */
  readonly reads?: string;
  /**
   * Header layouts compiled into this build (default all of LAYOUTS). A build of the 1.0 era
   * knows ['1.0.0'] only: it reads a 1.1 header through the 1.0 layout and skips `dropped`.
   */
  readonly layouts?: readonly RingbufLayout[];
  /** The plugin's own version (default '1.0.0'). */
  readonly version?: string;
  /** The SDK range it was built against (default '^0.1.0'). */
  readonly sdk?: string;
  /** Observe every handler op (tests and the demo). */
  readonly trace?: (event: RingbufTraceEvent) => void;
}

/** Runtime-only state between preserve and freeze/unpreserve (never crosses the kexec). */
interface PreservedRing {
  readonly ring: Ringbuf;
  /** Physical address of the header page (kho_alloc_preserve). */
  readonly header: number;
}

/** A handed-over ring as any header version describes it. */
export interface RingHandover {
  readonly dataPhys: number;
  readonly order: number;
  readonly head: number;
  readonly tail: number;
  readonly dropped: number;
}

const parse = (v: string): [number, number, number] => {
  const m = /^(\d+)\.(\d+)\.(\d+)/.exec(v);
  if (!m) throw new TypeError(`'${v}' is not a version`);
  return [Number(m[1]), Number(m[2]), Number(m[3])];
};
const cmp = (a: string, b: string): number => {
  const x = parse(a);
  const y = parse(b);
  return x[0] - y[0] || x[1] - y[1] || x[2] - y[2];
};

/** The newest layout this build knows that can read `version`: same major, not newer. */
export function layoutFor(version: string, layouts: readonly RingbufLayout[]): RingbufLayout | null {
  const major = parse(version)[0];
  const fit = layouts.filter((l) => parse(l)[0] === major && cmp(l, version) <= 0).sort(cmp);
  return fit.at(-1) ?? null;
}

const einval = (what: string): ErrnoError => new ErrnoError('EINVAL', 'ringbuf_restore', what);

function safe(v: bigint, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw einval(`${what} ${v} is out of range`);
  return Number(v);
}

/** Decode and check a header: hostile bytes get EINVAL, never a wrong ring. */
export function decodeHeader(kernel: Kernel, phys: number, layout: RingbufLayout): RingHandover {
  return decodeHeaderIn(kernel.machine.memory, phys, layout);
}

/** decodeHeader from memory alone (what `liveupdate inspect` has: a dump, no kernel). */
export function decodeHeaderIn(mem: Kernel['machine']['memory'], phys: number, layout: RingbufLayout): RingHandover {
  let h: RingHandover;
  if (layout === '2.0.0') {
    const s = ringbufSerV2.decode(mem.read(phys, ringbufSerV2.size));
    if (s.magic !== RINGBUF_MAGIC_V2) throw einval(`bad v2 magic 0x${s.magic.toString(16)}`);
    if (s.flags !== 0) throw einval(`unknown flags 0x${s.flags.toString(16)}`);
    if (s.order > RINGBUF_MAX_ORDER) throw einval(`order ${s.order}`);
    const size = PAGE_SIZE * 2 ** s.order;
    const used = safe(s.used, 'used');
    const tail = safe(s.tail, 'tail');
    if (used > size) throw einval(`${used} unread bytes in a ${size}-byte ring`);
    h = { dataPhys: safe(s.data_pfn, 'data_pfn') * PAGE_SIZE, order: s.order, head: tail + used, tail, dropped: safe(s.dropped, 'dropped') };
  } else {
    const codec = layout === '1.1.0' ? ringbufSerV1_1 : ringbufSerV1_0;
    const s = codec.decode(mem.read(phys, codec.size));
    if (s.magic !== RINGBUF_MAGIC_V1) throw einval(`bad v1 magic 0x${s.magic.toString(16)}`);
    const size = safe(s.size, 'size');
    if (size < PAGE_SIZE || size > PAGE_SIZE * 2 ** RINGBUF_MAX_ORDER || (size & (size - 1)) !== 0) throw einval(`size ${size}`);
    const head = safe(s.head, 'head');
    const tail = safe(s.tail, 'tail');
    if (tail > head || head - tail > size) throw einval(`head ${head} tail ${tail} in a ${size}-byte ring`);
    const dropped = 'dropped' in s ? safe(s.dropped as bigint, 'dropped') : 0;
    h = { dataPhys: safe(s.data_phys, 'data_phys'), order: Math.log2(size / PAGE_SIZE), head, tail, dropped };
  }
  const bytes = PAGE_SIZE * 2 ** h.order;
  if (h.dataPhys % bytes !== 0 || h.dataPhys + bytes > mem.size) throw einval(`ring 0x${h.dataPhys.toString(16)}+${bytes} is not a folio of RAM`);
  return h;
}

/** Encode the header of `ring` in the layout of `version`. */
export function encodeHeader(ring: Ringbuf, version: RingbufLayout): Uint8Array {
  if (version === '2.0.0') {
    return ringbufSerV2.encode({
      magic: RINGBUF_MAGIC_V2, data_pfn: BigInt(ring.pfn), order: ring.order, flags: 0,
      tail: BigInt(ring.tail), used: BigInt(ring.used), dropped: BigInt(ring.dropped),
    });
  }
  const common = { magic: RINGBUF_MAGIC_V1, data_phys: BigInt(ring.phys), size: BigInt(ring.size), head: BigInt(ring.head), tail: BigInt(ring.tail) };
  return version === '1.1.0' ? ringbufSerV1_1.encode({ ...common, dropped: BigInt(ring.dropped) }) : ringbufSerV1_0.encode(common);
}

/** The plugin factory: options pick what this build writes and reads (to model older and newer builds). */
export function ringbuf(options: RingbufOptions = {}): Plugin {
  const layouts = [...(options.layouts ?? LAYOUTS)];
  const writes = [...(options.writes ?? layouts)];
  for (const w of writes) {
    if (!(layouts as string[]).includes(w)) throw new TypeError(`ringbuf: cannot write ${w}: this build knows layouts ${layouts.join(', ')}`);
  }
  const trace = (op: RingbufTraceEvent['op'], ctx: HandlerContext<PreservedRing>, layout?: RingbufLayout): void =>
    options.trace?.({ op, version: ctx.version, kernel: ctx.kernel.id, token: ctx.token, ...(layout ? { layout } : {}) });

  const handler = defineFileHandler<PreservedRing>({
    format: { family: RINGBUF_FAMILY, writes, reads: options.reads ?? '>=1.0.0 <3.0.0' },

    canPreserve: (file, kernel) => isRingbuf(file) && file.kernelId === kernel.id && (file.privateData as Ringbuf).isSized,

    preserve(ctx) {
      const out = ctx.kernel.khoOut;
      if (!out || !ctx.file) throw new ErrnoError('EOPNOTSUPP', 'ringbuf_preserve');
      const ring = ctx.file.privateData as Ringbuf;
      out.preserveFolio(ring.pfn, ring.order);
      let header: number;
      try {
        header = out.allocPreserve(PAGE_SIZE);
      } catch (e) {
        out.unpreserveFolio(ring.pfn, ring.order);
        throw e;
      }
      ctx.state = { ring, header };
      ctx.data = BigInt(header);
      trace('preserve', ctx);
    },

    unpreserve(ctx) {
      const s = ctx.state;
      const out = ctx.kernel.khoOut;
      if (!s || !out) return;
      out.unpreserveFree(s.header);
      out.unpreserveFolio(s.ring.pfn, s.ring.order);
      ctx.state = undefined;
      trace('unpreserve', ctx);
    },

    freeze(ctx) {
      const s = ctx.state as PreservedRing;
      const mem = ctx.kernel.machine.memory;
      mem.fill(s.header, PAGE_SIZE, 0);
      mem.write(s.header, encodeHeader(s.ring, ctx.version as RingbufLayout));
      trace('freeze', ctx);
    },

    unfreeze(ctx) {
      const s = ctx.state as PreservedRing;
      ctx.kernel.machine.memory.fill(s.header, PAGE_SIZE, 0);
      trace('unfreeze', ctx);
    },

    retrieve(ctx) {
      const kin = ctx.kernel.khoIn;
      if (!kin) throw einval('not a KHO boot');
      const layout = layoutFor(ctx.version, layouts);
      if (!layout) throw einval(`this build has no reader for ringbuf ${ctx.version}`);
      const headerPhys = safe(ctx.data, 'header');
      const header = kin.restoreFolio(headerPhys);
      if (!header) throw einval(`header 0x${headerPhys.toString(16)} is not preserved`);
      try {
        const h = decodeHeader(ctx.kernel, headerPhys, layout);
        const data = kin.restoreFolio(h.dataPhys);
        if (!data || data.order !== h.order) {
          if (data) ctx.kernel.mm.freePages(data.pfn, data.order);
          throw einval(`ring 0x${h.dataPhys.toString(16)} order ${h.order} is not preserved`);
        }
        const ring = new Ringbuf(ctx.kernel);
        ring.adopt(data.pfn, data.order, h.head, h.tail, h.dropped);
        ctx.file = newRingbufFile(ctx.kernel, ring);
      } finally {
        ctx.kernel.mm.freePages(header.pfn, header.order);
      }
      trace('retrieve', ctx, layout);
    },

    finish(ctx) {
      trace('finish', ctx);
      if (ctx.retrieveStatus === 1) return; // the file owns the ring; the header went at retrieve
      // Never retrieved, or the retrieve failed: hand back what is still preserved.
      const kin = ctx.kernel.khoIn;
      const layout = layoutFor(ctx.version, layouts);
      if (!kin || ctx.data > BigInt(Number.MAX_SAFE_INTEGER)) return;
      const header = kin.restoreFolio(Number(ctx.data));
      if (!header) return;
      try {
        if (layout) kin.restoreFree(decodeHeader(ctx.kernel, Number(ctx.data), layout).dataPhys);
      } catch (e) {
        ctx.kernel.dmesg.log('warn', 'ringbuf', `token ${ctx.token}: ring left reserved (${e instanceof Error ? e.message : String(e)})`);
      } finally {
        ctx.kernel.mm.freePages(header.pfn, header.order);
      }
    },
  });

  return definePlugin({
    name: RINGBUF_PLUGIN,
    version: options.version ?? '1.0.0',
    sdk: options.sdk ?? '^0.1.0',
    handlers: [handler],
    setup(kernel) {
      kernel.registerDevice(RINGBUF_DEVICE, () => newRingbufFile(kernel, new Ringbuf(kernel)));
    },
    // What `liveupdate` run, inspect, report, fuzz and matrix know about rings (tools.ts).
    tools: ringbufTools(layouts),
  });
}
