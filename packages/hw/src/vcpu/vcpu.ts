/**
 * A deterministic model vCPU: it fetches, decodes and retires the instructions of ./isa.ts
 * against guest physical memory, through a translation the hypervisor supplies (KVM's
 * memslots: gpa → host physical address, or MMIO, or a fault it cannot resolve). It runs only
 * when its VMM enters it (KVM_RUN) and charges the machine clock per retired instruction, so
 * guest progress and blackout windows are read off the same clock.
 *
 * Exits follow KVM's semantics: HLT retires (pc moves past it); an MMIO store retires with its
 * data handed to the VMM; an MMIO load waits for the VMM's value (completeMmioLoad) and retires
 * on the next entry; a fault does not retire (pc stays), so entering again retries the access.
 */
import type { MachineClock } from '../clock.js';
import type { PhysMemory } from '../memory.js';
import { EXIT_NS, INSN_BYTES, INSN_NS, MEM_ACCESS_NS, NR_REGS, OP } from './isa.js';

/** translate() answers: a host physical address (>= 0) or one of these. */
export const TRANSLATE_MMIO = -1;
/** No memory can back the page now (a guest_memfd that may not allocate): KVM_EXIT_MEMORY_FAULT. */
export const TRANSLATE_FAULT = -2;
/** The backing page is hardware-poisoned. */
export const TRANSLATE_HWPOISON = -3;

/** gpa → host physical address of that byte, or a TRANSLATE_* code. `write` for stores. */
export type Translate = (gpa: number, write: boolean) => number;

export type VcpuExit =
  | { readonly reason: 'hlt' }
  | { readonly reason: 'mmio'; readonly gpa: number; readonly isWrite: boolean; readonly data: bigint; readonly len: 8 }
  | { readonly reason: 'fault'; readonly gpa: number; readonly isWrite: boolean; readonly hwpoison: boolean }
  /** The instruction budget of this entry ran out (the VMM's timer signal). */
  | { readonly reason: 'budget' }
  /** Undecodable instruction, misaligned access, a fetch from MMIO: the emulator gives up. */
  | { readonly reason: 'internal'; readonly detail: string };

/** What the VMM saves and restores (KVM_GET_REGS / KVM_SET_REGS). Plain data. */
export interface VcpuState {
  readonly regs: readonly bigint[];
  readonly pc: number;
}

/** A VcpuState as bytes, for a VMM that keeps it in memory that survives the update: r0..r7, pc (u64 LE each). */
export const VCPU_STATE_BYTES = (NR_REGS + 1) * 8;

export function encodeVcpuState(s: VcpuState): Uint8Array {
  const out = new Uint8Array(VCPU_STATE_BYTES);
  const v = new DataView(out.buffer);
  for (let i = 0; i < NR_REGS; i++) v.setBigUint64(8 * i, BigInt.asUintN(64, s.regs[i] ?? 0n), true);
  v.setBigUint64(8 * NR_REGS, BigInt(s.pc), true);
  return out;
}

export function decodeVcpuState(b: Uint8Array): VcpuState {
  if (b.length < VCPU_STATE_BYTES) throw new RangeError(`vCPU state: ${b.length} bytes, need ${VCPU_STATE_BYTES}`);
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const regs = Array.from({ length: NR_REGS }, (_, i) => v.getBigUint64(8 * i, true));
  const pc = v.getBigUint64(8 * NR_REGS, true);
  if (pc > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError(`vCPU state: pc 0x${pc.toString(16)} is not an address`);
  return { regs, pc: Number(pc) };
}

const sext32 = (u: number): number => (u | 0);

export class Vcpu {
  readonly regs = new BigUint64Array(NR_REGS);
  /** Guest physical address of the next instruction. */
  pc = 0;
  /** Instructions retired since creation. */
  retired = 0;
  /** An MMIO load waiting for the VMM's value: the destination register, or -1. */
  private mmioLoadReg = -1;

  /** `clock` null: the caller accounts for the time (a ticker may not advance the clock it runs on). */
  constructor(readonly id: number, private readonly memory: PhysMemory, private readonly clock: MachineClock | null) {}

  saveState(): VcpuState {
    if (this.mmioLoadReg >= 0) throw new Error(`vCPU ${this.id}: an MMIO load is still waiting for its value`);
    return { regs: Array.from(this.regs), pc: this.pc };
  }

  /** The registers as they are, an MMIO load still pending (it is re-executed when the state is loaded again). */
  saveStateUnchecked(): VcpuState {
    return { regs: Array.from(this.regs), pc: this.pc };
  }

  loadState(s: VcpuState): void {
    if (s.regs.length !== NR_REGS) throw new RangeError(`vCPU ${this.id}: ${s.regs.length} registers, the model has ${NR_REGS}`);
    for (let i = 0; i < NR_REGS; i++) this.regs[i] = BigInt.asUintN(64, s.regs[i] as bigint);
    this.pc = s.pc;
    this.mmioLoadReg = -1;
  }

  /** The value of an MMIO load the VMM emulated; the load retires on the next run(). */
  completeMmioLoad(value: bigint): void {
    if (this.mmioLoadReg < 0) throw new Error(`vCPU ${this.id}: no MMIO load is pending`);
    this.regs[this.mmioLoadReg] = BigInt.asUintN(64, value);
    this.mmioLoadReg = -1;
    this.pc += INSN_BYTES;
    this.retired++;
  }

  get mmioLoadPending(): boolean { return this.mmioLoadReg >= 0; }

  /**
   * Run until an exit or until `maxInsns` instructions retired. The time the guest used
   * (INSN_NS per instruction, MEM_ACCESS_NS per RAM access, EXIT_NS for the exit) passes on
   * the machine clock when it returns.
   */
  run(translate: Translate, maxInsns: number): VcpuExit {
    if (this.mmioLoadReg >= 0) return { reason: 'internal', detail: 'entered with an MMIO load pending (no value supplied)' };
    const mem = this.memory;
    const regs = this.regs;
    let ns = EXIT_NS;
    let n = 0;
    const finish = (exit: VcpuExit): VcpuExit => {
      this.retired += n;
      this.clock?.advance(ns + n * INSN_NS);
      return exit;
    };
    while (n < maxInsns) {
      const pc = this.pc;
      if (pc % INSN_BYTES !== 0) return finish({ reason: 'internal', detail: `pc 0x${pc.toString(16)} is not aligned` });
      const fetchAt = translate(pc, false);
      if (fetchAt === TRANSLATE_FAULT || fetchAt === TRANSLATE_HWPOISON) return finish({ reason: 'fault', gpa: pc, isWrite: false, hwpoison: fetchAt === TRANSLATE_HWPOISON });
      if (fetchAt < 0) return finish({ reason: 'internal', detail: `instruction fetch from MMIO at 0x${pc.toString(16)}` });
      const w0 = mem.readU32(fetchAt);
      const imm = mem.readU32(fetchAt + 4);
      const op = w0 & 0xff;
      const rd = (w0 >>> 8) & 0xff;
      const rs = (w0 >>> 16) & 0xff;
      const rt = w0 >>> 24;
      if (rd >= NR_REGS || rs >= NR_REGS || rt >= NR_REGS) return finish({ reason: 'internal', detail: `bad register at 0x${pc.toString(16)}` });
      switch (op) {
        case OP.HLT:
          this.pc = pc + INSN_BYTES;
          n++;
          return finish({ reason: 'hlt' });
        case OP.LI:
          regs[rd] = BigInt(imm);
          break;
        case OP.ADD:
          regs[rd] = regs[rs] as bigint + (regs[rt] as bigint);
          break;
        case OP.ADDI:
          regs[rd] = BigInt.asUintN(64, (regs[rs] as bigint) + BigInt(sext32(imm)));
          break;
        case OP.BLT:
        case OP.BNE: {
          const a = regs[rs] as bigint;
          const b = regs[rt] as bigint;
          if (op === OP.BLT ? a < b : a !== b) {
            this.pc = imm;
            n++;
            continue;
          }
          break;
        }
        case OP.LD:
        case OP.ST: {
          const isWrite = op === OP.ST;
          const ea = BigInt.asUintN(64, (regs[rs] as bigint) + BigInt(sext32(imm)));
          if (ea > BigInt(Number.MAX_SAFE_INTEGER) || ea % 8n !== 0n) return finish({ reason: 'internal', detail: `access to 0x${ea.toString(16)} is not an aligned u64` });
          const gpa = Number(ea);
          const at = translate(gpa, isWrite);
          if (at === TRANSLATE_MMIO) {
            if (isWrite) {
              this.pc = pc + INSN_BYTES;
              n++;
              return finish({ reason: 'mmio', gpa, isWrite, data: regs[rd] as bigint, len: 8 });
            }
            this.mmioLoadReg = rd;
            return finish({ reason: 'mmio', gpa, isWrite, data: 0n, len: 8 });
          }
          if (at < 0) return finish({ reason: 'fault', gpa, isWrite, hwpoison: at === TRANSLATE_HWPOISON });
          ns += MEM_ACCESS_NS;
          if (isWrite) {
            const v = regs[rd] as bigint;
            mem.writeU32(at, Number(v & 0xffffffffn));
            mem.writeU32(at + 4, Number(v >> 32n));
          } else {
            regs[rd] = (BigInt(mem.readU32(at + 4)) << 32n) | BigInt(mem.readU32(at));
          }
          break;
        }
        default:
          return finish({ reason: 'internal', detail: `undefined opcode 0x${op.toString(16)} at 0x${pc.toString(16)}` });
      }
      this.pc = pc + INSN_BYTES;
      n++;
    }
    return finish({ reason: 'budget' });
  }
}
