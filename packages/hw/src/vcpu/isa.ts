/**
 * The guest instruction set of the model vCPU: a handful of instructions in a fixed 8-byte
 * encoding, so a guest program is plain bytes in guest RAM (it survives a live update as the
 * rest of guest memory does, and a fuzzer can corrupt it like any page).
 *
 *   byte 0  opcode
 *   byte 1  rd   (destination, or the register stored)
 *   byte 2  rs   (base / first operand)
 *   byte 3  rt   (second operand)
 *   4..7    imm  (u32 little-endian; signed where noted)
 *
 * Eight 64-bit registers r0..r7; the program counter is a guest physical address. Loads and
 * stores move one naturally aligned u64. An access to a guest address that no memslot backs
 * is MMIO and exits to the VMM, as KVM does.
 */

export const INSN_BYTES = 8;
export const NR_REGS = 8;

export const OP = {
  /** Stop until the VMM runs the vCPU again (KVM_EXIT_HLT); pc moves past it. */
  HLT: 0x00,
  /** rd = imm (zero-extended u32). */
  LI: 0x01,
  /** rd = u64 at gpa rs + imm (signed). */
  LD: 0x02,
  /** u64 at gpa rs + imm (signed) = rd. */
  ST: 0x03,
  /** rd = rs + rt (mod 2^64). */
  ADD: 0x04,
  /** rd = rs + imm (signed, mod 2^64). */
  ADDI: 0x05,
  /** if rs < rt (unsigned): pc = imm (a guest physical address); else next. */
  BLT: 0x06,
  /** if rs != rt: pc = imm; else next. */
  BNE: 0x07,
} as const;
export type Opcode = (typeof OP)[keyof typeof OP];

/** Cost of one retired instruction, in ns of machine time (a 1 GHz in-order core). */
export const INSN_NS = 1;
/** Extra cost of a load or store that reaches guest RAM (a cache miss, every time). */
export const MEM_ACCESS_NS = 4;
/** Cost of an exit to the VMM and the re-entry (a VM exit and VMRESUME). */
export const EXIT_NS = 1_000;

export interface Insn {
  readonly op: Opcode;
  readonly rd?: number;
  readonly rs?: number;
  readonly rt?: number;
  readonly imm?: number;
}

/** Encode instructions into the program's bytes. Register numbers and imm are checked. */
export function assemble(program: readonly Insn[]): Uint8Array {
  const out = new Uint8Array(program.length * INSN_BYTES);
  const view = new DataView(out.buffer);
  program.forEach((insn, i) => {
    const at = i * INSN_BYTES;
    for (const r of [insn.rd ?? 0, insn.rs ?? 0, insn.rt ?? 0]) {
      if (!Number.isInteger(r) || r < 0 || r >= NR_REGS) throw new RangeError(`insn ${i}: register r${r} does not exist`);
    }
    const imm = insn.imm ?? 0;
    if (!Number.isInteger(imm) || imm < -(2 ** 31) || imm > 0xffffffff) throw new RangeError(`insn ${i}: imm ${imm} does not fit 32 bits`);
    out[at] = insn.op;
    out[at + 1] = insn.rd ?? 0;
    out[at + 2] = insn.rs ?? 0;
    out[at + 3] = insn.rt ?? 0;
    view.setUint32(at + 4, imm >>> 0, true);
  });
  return out;
}
