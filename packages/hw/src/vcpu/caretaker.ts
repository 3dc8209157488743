/**
 * A preserved physical CPU that keeps a guest vCPU running while no kernel runs (the OrphanVM
 * / Caretaker RFC, Pasha Tatashin, v1 2026-09-20): the outgoing kernel arms it right before the
 * jump, it runs the guest while the jump's time passes, and it hands the vCPU back before the
 * next kernel runs. It knows nothing but physical memory: a control block (below) that points at
 * the vCPU's architectural state (VcpuState bytes) and at a flat second-stage table, and it
 * writes the state and the reason it stopped back there.
 *
 * Control block (one page, little-endian):
 *    0 u32 magic CARETAKER_MAGIC      4 u32 state (CARETAKER_*)
 *    8 u32 stop reason (STOP_*)      12 u32 reserved
 *   16 u64 table: physical address of { u64 nr_pages; u64 pages_pa[nr_pages] }; each page
 *          holds 512 u64 entries for gfn page*512 + i: host phys | TABLE_PRESENT, or
 *          TABLE_HOLE (RAM of the guest with no page yet), or 0 (no RAM: MMIO)
 *   24 u64 arch_state: physical address of VCPU_STATE_BYTES of VcpuState
 *   32 u64 instructions retired while orphaned
 *   40 u64 gpa of the access that stopped it     48 u64 data of an MMIO store
 */
import type { MachineClock, Ticker } from '../clock.js';
import { PAGE_SIZE } from '../units.js';
import type { PhysMemory } from '../memory.js';
import type { Restore } from '../state.js';
import { INSN_NS } from './isa.js';
import {
  TRANSLATE_FAULT, TRANSLATE_MMIO, VCPU_STATE_BYTES, Vcpu, decodeVcpuState, encodeVcpuState, type Translate,
} from './vcpu.js';

export const CARETAKER_MAGIC = 0x43415245; // 'CARE'
export const CARETAKER_ARMED = 1;
export const CARETAKER_HANDED_BACK = 2;
export const STOP_HANDBACK = 0;
export const STOP_HLT = 1;
export const STOP_MMIO = 2;
export const STOP_FAULT = 3;
export const STOP_INTERNAL = 4;
export const TABLE_PRESENT = 1;
export const TABLE_HOLE = 2;
const ENTRIES = PAGE_SIZE / 8;

export class Caretaker implements Ticker {
  readonly name: string;
  private detach: (() => void) | null = null;
  private done = false;

  constructor(private readonly memory: PhysMemory, clock: MachineClock, private readonly cb: number) {
    this.name = `caretaker@0x${cb.toString(16)}`;
    this.detach = clock.attach(this);
  }

  /** Whether it has run (its guest state is in memory); the clock saves whether it is attached. */
  save(): Restore {
    const { done, detach } = this;
    return () => { this.done = done; this.detach = detach; };
  }

  /** Second-stage translation from the table's bytes. */
  private readonly translate: Translate = (gpa) => {
    const m = this.memory;
    const table = m.readU64Number(this.cb + 16);
    const gfn = Math.floor(gpa / PAGE_SIZE);
    const page = Math.floor(gfn / ENTRIES);
    if (page >= m.readU64Number(table)) return TRANSLATE_MMIO;
    const pagePa = m.readU64Number(table + 8 + 8 * page);
    if (pagePa % PAGE_SIZE !== 0 || pagePa + PAGE_SIZE > m.size) return TRANSLATE_FAULT;
    const e = m.readU64Number(pagePa + 8 * (gfn % ENTRIES));
    if (e & TABLE_PRESENT) {
      const phys = e - (e % PAGE_SIZE);
      return phys + PAGE_SIZE <= m.size ? phys + (gpa % PAGE_SIZE) : TRANSLATE_FAULT;
    }
    return e & TABLE_HOLE ? TRANSLATE_FAULT : TRANSLATE_MMIO;
  };

  /** Run the guest for the interval, then hand the vCPU back (the next kernel owns the CPU from here on). */
  tick(fromNs: number, toNs: number): void {
    const m = this.memory;
    if (this.done) return;
    this.done = true;
    // Leave the clock's ticker list after this advance: removing ourselves while it iterates would skip a sibling.
    queueMicrotask(() => { this.detach?.(); this.detach = null; });
    if (m.readU32(this.cb) !== CARETAKER_MAGIC || m.readU32(this.cb + 4) !== CARETAKER_ARMED) return;
    const statePa = m.readU64Number(this.cb + 24);
    const cpu = new Vcpu(-1, m, null);
    cpu.loadState(decodeVcpuState(m.read(statePa, VCPU_STATE_BYTES)));
    const exit = cpu.run(this.translate, Math.floor((toNs - fromNs) / INSN_NS));
    const [reason, gpa, data] = exit.reason === 'hlt' ? [STOP_HLT, 0, 0n]
      : exit.reason === 'mmio' ? [STOP_MMIO, exit.gpa, exit.data]
        : exit.reason === 'fault' ? [STOP_FAULT, exit.gpa, 0n]
          : exit.reason === 'internal' ? [STOP_INTERNAL, cpu.pc, 0n] : [STOP_HANDBACK, 0, 0n];
    // An MMIO load cannot complete without a VMM: it is retried after the hand-back.
    m.write(statePa, encodeVcpuState(cpu.saveStateUnchecked()));
    m.writeU32(this.cb + 4, CARETAKER_HANDED_BACK);
    m.writeU32(this.cb + 8, reason);
    m.writeU64(this.cb + 32, BigInt(cpu.retired));
    m.writeU64(this.cb + 40, BigInt(gpa));
    m.writeU64(this.cb + 48, BigInt.asUintN(64, data));
  }
}
