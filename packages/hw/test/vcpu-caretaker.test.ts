import { describe, expect, it } from 'vitest';
import {
  CARETAKER_ARMED, CARETAKER_HANDED_BACK, CARETAKER_MAGIC, Caretaker, INSN_BYTES, OP, PAGE_SIZE, STOP_FAULT, STOP_HANDBACK, STOP_HLT,
  TABLE_HOLE, TABLE_PRESENT, VCPU_STATE_BYTES, assemble, createMachine, decodeVcpuState, encodeVcpuState,
} from '../src/index.js';

const CB = 0x10000;
const STATE = 0x11000;
const LIST = 0x12000;
const TABLE = 0x13000;
const RAM = 0x100000; // gfn 0 -> host 1 MiB

/** Memory with a control block, a state, a one-page table (gfn 0 present, gfn 1 a hole) and `program` at gpa 0. */
function setup(program: Uint8Array, armed = true) {
  const machine = createMachine({ memory: '16MiB' });
  const m = machine.memory;
  m.write(RAM, program);
  m.writeU64(LIST, 1n);
  m.writeU64(LIST + 8, BigInt(TABLE));
  m.writeU64(TABLE, BigInt(RAM + TABLE_PRESENT));
  m.writeU64(TABLE + 8, BigInt(TABLE_HOLE));
  m.write(STATE, encodeVcpuState({ regs: [0n, 0n, 0n, 0n, 0n, 0n, 0n, 0n], pc: 0 }));
  m.writeU32(CB, CARETAKER_MAGIC);
  m.writeU32(CB + 4, armed ? CARETAKER_ARMED : 0);
  m.writeU64(CB + 16, BigInt(LIST));
  m.writeU64(CB + 24, BigInt(STATE));
  return { machine, m };
}

describe('the caretaker CPU', () => {
  it('runs the guest from its state while time passes, through the table in memory, and hands it back with why it stopped', () => {
    const { machine, m } = setup(assemble([{ op: OP.LI, rd: 1, imm: 7 }, { op: OP.ST, rd: 1, rs: 0, imm: 0x100 }, { op: OP.HLT }]));
    new Caretaker(m, machine.clock, CB);
    machine.clock.advance(1_000);
    expect([m.readU32(CB + 4), m.readU32(CB + 8), m.readU64(CB + 32)]).toEqual([CARETAKER_HANDED_BACK, STOP_HLT, 3n]);
    expect(m.readU64(RAM + 0x100)).toBe(7n);
    expect(decodeVcpuState(m.read(STATE, VCPU_STATE_BYTES)).pc).toBe(3 * INSN_BYTES);
  });

  it('runs one instruction per ns of the interval, then hands back where it got', () => {
    const { machine, m } = setup(assemble([{ op: OP.ADDI, rd: 1, rs: 1, imm: 1 }, { op: OP.BLT, rs: 1, rt: 2, imm: 0 }]));
    m.write(STATE, encodeVcpuState({ regs: [0n, 0n, 1000n, 0n, 0n, 0n, 0n, 0n], pc: 0 }));
    new Caretaker(m, machine.clock, CB);
    machine.clock.advance(100);
    expect([m.readU32(CB + 8), m.readU64(CB + 32)]).toEqual([STOP_HANDBACK, 100n]);
    expect(decodeVcpuState(m.read(STATE, VCPU_STATE_BYTES)).regs[1]).toBe(50n);
    // Handed back once: later time does not run the guest again.
    machine.clock.advance(100);
    expect(m.readU64(CB + 32)).toBe(100n);
  });

  it('stops at a hole without retiring the access; an unarmed block is left alone', () => {
    const a = setup(assemble([{ op: OP.ST, rd: 1, rs: 0, imm: PAGE_SIZE }]));
    new Caretaker(a.m, a.machine.clock, CB);
    a.machine.clock.advance(10);
    expect(a.m.readU32(CB + 8)).toBe(STOP_FAULT);
    expect(decodeVcpuState(a.m.read(STATE, VCPU_STATE_BYTES)).pc).toBe(0);
    const b = setup(assemble([{ op: OP.HLT }]), false);
    new Caretaker(b.m, b.machine.clock, CB);
    b.machine.clock.advance(10);
    expect([b.m.readU32(CB + 4), b.m.readU64(CB + 32)]).toEqual([0, 0n]);
  });
});
