/**
 * KHO serialization blocks (kernel/liveupdate/kho_block.c): a chain of preserved pages, each
 * a 16-byte header { next, count } followed by fixed-size entries. LUO keeps sessions and
 * files in these. No internal locking: the caller serializes access.
 */
import { PAGE_SIZE } from '@liveupdate/hw';
import { KHO_BLOCK_SIZE, KHO_MAX_BLOCKS, khoBlockHeader } from '../abi/block.js';
import { ErrnoError } from '../errno.js';
import type { Dmesg } from '../kernel/dmesg.js';
import type { Mm } from '../mm/mm.js';
import type { KhoOut } from './kho.js';
import type { KhoIn } from './kho-in.js';

const HDR = khoBlockHeader.size;

export class KhoBlockSet {
  /** Physical address of each block, in chain order. */
  private blocks: number[] = [];
  readonly countPerBlock: number;
  incoming = false;

  constructor(
    private readonly mm: Mm,
    readonly entrySize: number,
    private readonly kho: { out: KhoOut | null; in: KhoIn | null },
  ) {
    this.countPerBlock = Math.floor((KHO_BLOCK_SIZE - HDR) / entrySize);
  }

  get nblocks(): number { return this.blocks.length; }
  get headPa(): number { return this.blocks[0] ?? 0; }
  get isEmpty(): boolean { return this.blocks.length === 0; }
  get capacity(): number { return this.blocks.length * this.countPerBlock; }

  /** kho_block_set_grow: append zeroed preserved blocks until capacity >= count; on error shrink back. */
  grow(count: number): void {
    if (this.incoming) throw new ErrnoError('EINVAL', 'kho_block_set_grow', 'incoming set');
    const out = this.kho.out;
    if (!out) throw new ErrnoError('EINVAL', 'kho_block_set_grow', 'KHO disabled');
    const start = this.blocks.length;
    try {
      while (this.capacity < count) {
        if (this.blocks.length >= KHO_MAX_BLOCKS) throw new ErrnoError('ENOSPC', 'kho_block_set_grow');
        const phys = out.allocPreserve(KHO_BLOCK_SIZE);
        const prev = this.blocks[this.blocks.length - 1];
        if (prev !== undefined) this.mm.memory.writeU64(prev, phys);
        this.blocks.push(phys);
      }
    } catch (e) {
      this.truncate(start);
      throw e;
    }
  }

  /** kho_block_set_shrink: drop last blocks while count <= (nblocks - 1) * per_block. */
  shrink(count: number): void {
    let keep = this.blocks.length;
    while (keep > 0 && count <= (keep - 1) * this.countPerBlock) keep--;
    this.truncate(keep);
  }

  private truncate(keep: number): void {
    while (this.blocks.length > keep) {
      const phys = this.blocks.pop() as number;
      this.freeBlock(phys);
    }
    const last = this.blocks[this.blocks.length - 1];
    if (last !== undefined) this.mm.memory.writeU64(last, 0);
  }

  private freeBlock(phys: number): void {
    if (this.incoming) this.kho.in?.restoreFree(phys);
    else this.kho.out?.unpreserveFree(phys);
  }

  /** kho_block_set_destroy */
  destroy(): void {
    this.truncate(0);
  }

  /** kho_block_set_clear: zero every count and entry, keep the blocks. */
  clear(): void {
    for (const b of this.blocks) this.mm.memory.fill(b + 8, KHO_BLOCK_SIZE - 8, 0);
  }

  /**
   * kho_block_set_restore: a cycle (Floyd) or more than KHO_MAX_BLOCKS is corruption, and so
   * is any block whose count is outside 1..count_per_block. On error the restored blocks are
   * destroyed and the rest of the chain freed.
   */
  restore(headPa: number, dmesg: Dmesg): void {
    this.incoming = true;
    this.blocks = [];
    if (headPa === 0) return;
    const mem = this.mm.memory;
    const valid = (p: number): boolean => p % PAGE_SIZE === 0 && p > 0 && p + KHO_BLOCK_SIZE <= mem.size;
    const corrupt = (why: string): never => {
      dmesg.log('err', 'KHO', `Block set is corrupted: ${why}`);
      for (const b of this.blocks) this.kho.in?.restoreFree(b);
      this.blocks = [];
      throw new ErrnoError('EINVAL', 'kho_block_set_restore', why);
    };
    // Floyd: the hare moves two links per step; meeting the tortoise means a cycle. The
    // length bound alone would also stop a cycle, but later and with a vaguer message.
    let slow = headPa;
    let fast = headPa;
    let length = 0;
    for (;;) {
      for (let k = 0; k < 2 && fast !== 0; k++) {
        if (!valid(fast)) corrupt(`block 0x${fast.toString(16)} is not a page of RAM`);
        fast = mem.readU64Number(fast);
        if (++length > KHO_MAX_BLOCKS) corrupt(`more than ${KHO_MAX_BLOCKS} blocks`);
      }
      if (fast === 0) break;
      slow = mem.readU64Number(slow);
      if (slow === fast) corrupt('cycle in the block chain');
    }
    const chain: number[] = [];
    for (let p = headPa; p !== 0; p = mem.readU64Number(p)) chain.push(p);
    for (const p of chain) {
      const count = mem.readU64(p + 8);
      if (count < 1n || count > BigInt(this.countPerBlock)) {
        // Free the rest of the chain: this and every later block.
        for (const rest of chain.slice(chain.indexOf(p))) this.kho.in?.restoreFree(rest);
        corrupt(`block 0x${p.toString(16)} count ${count} outside 1..${this.countPerBlock}`);
      }
      this.blocks.push(p);
    }
  }

  /** Entries of a restored (incoming) set, respecting each block's count. */
  *readEntries(): IterableIterator<Uint8Array> {
    for (const b of this.blocks) {
      const count = Number(this.mm.memory.readU64(b + 8));
      const n = Math.min(count, this.countPerBlock);
      for (let i = 0; i < n; i++) yield this.mm.memory.read(b + HDR + i * this.entrySize, this.entrySize);
    }
  }

  /**
   * The writer (it_reserve_entry): write `entries` in order, filling each block to
   * count_per_block and updating its header count. Returns the number written; fewer than
   * asked means capacity ran out (the kernel's NULL slot).
   */
  writeEntries(entries: Iterable<Uint8Array>): number {
    let i = 0;
    const mem = this.mm.memory;
    for (const b of this.blocks) mem.writeU64(b + 8, 0);
    for (const e of entries) {
      const block = this.blocks[Math.floor(i / this.countPerBlock)];
      if (block === undefined) return i;
      const slot = i % this.countPerBlock;
      mem.write(block + HDR + slot * this.entrySize, e.subarray(0, this.entrySize));
      mem.writeU64(block + 8, slot + 1);
      i++;
    }
    return i;
  }

  /** Physical address of entry i (for in-place updates). */
  entryPhys(i: number): number | undefined {
    const block = this.blocks[Math.floor(i / this.countPerBlock)];
    return block === undefined ? undefined : block + HDR + (i % this.countPerBlock) * this.entrySize;
  }
}
