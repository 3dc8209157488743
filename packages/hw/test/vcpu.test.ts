import { describe, expect, it } from 'vitest';
import {
  EXIT_NS, INSN_BYTES, INSN_NS, MEM_ACCESS_NS, OP, TRANSLATE_FAULT, TRANSLATE_HWPOISON, TRANSLATE_MMIO, Vcpu, PAGE_SIZE,
  assemble, createMachine, decodeVcpuState, encodeVcpuState, type Translate,
} from '../src/index.js';

/** Guest RAM: gpa [0, 64 KiB) at host phys 1 MiB; gpa 0x10000 page is "unbacked"; beyond: MMIO. */
const HOST_BASE = 1 << 20;
const RAM = 16 * PAGE_SIZE;
function setup(unbacked = new Set<number>()) {
  const machine = createMachine({ memory: '64MiB', numaNodes: 1 });
  const translate: Translate = (gpa) => {
    if (gpa >= RAM) return TRANSLATE_MMIO;
    if (unbacked.has(Math.floor(gpa / PAGE_SIZE))) return TRANSLATE_FAULT;
    return HOST_BASE + gpa;
  };
  const vcpu = new Vcpu(0, machine.memory, machine.clock);
  return { machine, translate, vcpu };
}

/** counter at 0x8000 incremented `limit` times; each value stored into page (1 + i) at offset 0x100. */
const COUNTER_LOOP = assemble([
  { op: OP.LI, rd: 1, imm: 0x9000 }, // r1 = first output slot
  { op: OP.LI, rd: 3, imm: 4 }, // r3 = limit
  { op: OP.LD, rd: 2, rs: 0, imm: 0x8000 }, // 0x10 loop: r2 = counter
  { op: OP.ADDI, rd: 2, rs: 2, imm: 1 },
  { op: OP.ST, rd: 2, rs: 0, imm: 0x8000 },
  { op: OP.ST, rd: 2, rs: 1, imm: 0 },
  { op: OP.ADDI, rd: 1, rs: 1, imm: PAGE_SIZE },
  { op: OP.BLT, rs: 2, rt: 3, imm: 0x10 },
  { op: OP.ST, rd: 2, rs: 4, imm: 0 }, // MMIO doorbell (r4 set by the test)
  { op: OP.HLT },
]);

describe('the model vCPU', () => {
  it('encodes an instruction as opcode, rd, rs, rt and a little-endian imm', () => {
    expect([...assemble([{ op: OP.ADDI, rd: 2, rs: 3, imm: -1 }])]).toEqual([0x05, 2, 3, 0, 0xff, 0xff, 0xff, 0xff]);
    expect([...assemble([{ op: OP.BLT, rs: 1, rt: 7, imm: 0x1234 }])]).toEqual([0x06, 0, 1, 7, 0x34, 0x12, 0, 0]);
    expect(() => assemble([{ op: OP.LI, rd: 8 }])).toThrow(/r8/);
  });

  it('runs a counter loop in guest memory, exits on the MMIO doorbell with its data, then on HLT', () => {
    const { machine, translate, vcpu } = setup();
    machine.memory.write(HOST_BASE, COUNTER_LOOP);
    vcpu.regs[4] = 0x20000n;
    const exit = vcpu.run(translate, 1000);
    expect(exit).toEqual({ reason: 'mmio', gpa: 0x20000, isWrite: true, data: 4n, len: 8 });
    expect(machine.memory.readU64(HOST_BASE + 0x8000)).toBe(4n);
    for (let i = 0; i < 4; i++) expect(machine.memory.readU64(HOST_BASE + 0x9000 + i * PAGE_SIZE)).toBe(BigInt(i + 1));
    expect(vcpu.run(translate, 1000)).toEqual({ reason: 'hlt' });
    expect(vcpu.pc).toBe(10 * INSN_BYTES);
    // 2 + 4 x 6 + 1 (doorbell) + 1 (hlt) instructions retired.
    expect(vcpu.retired).toBe(28);
  });

  it('charges the machine clock per instruction, per RAM access and per exit', () => {
    const { machine, translate, vcpu } = setup();
    machine.memory.write(HOST_BASE, COUNTER_LOOP);
    vcpu.regs[4] = 0x20000n;
    const t0 = machine.clock.now;
    vcpu.run(translate, 1000);
    // 27 instructions, 12 RAM accesses (3 per iteration), one exit.
    expect(machine.clock.now - t0).toBe(27 * INSN_NS + 12 * MEM_ACCESS_NS + EXIT_NS);
  });

  it('stops after the instruction budget with the state the VMM can save and restore elsewhere', () => {
    const a = setup();
    a.machine.memory.write(HOST_BASE, COUNTER_LOOP);
    expect(a.vcpu.run(a.translate, 9)).toEqual({ reason: 'budget' });
    const saved = decodeVcpuState(encodeVcpuState(a.vcpu.saveState()));
    // 9 retired: 2 + one iteration of 6 + the next iteration's load: pc at its ADDI (insn 3).
    expect(saved.pc).toBe(3 * INSN_BYTES);
    const b = setup();
    b.machine.memory.write(HOST_BASE, a.machine.memory.read(HOST_BASE, RAM));
    b.vcpu.loadState(saved);
    b.vcpu.regs[4] = 0x20000n;
    expect(b.vcpu.run(b.translate, 1000).reason).toBe('mmio');
    expect(b.machine.memory.readU64(HOST_BASE + 0x8000)).toBe(4n);
  });

  it('exits on a fault without retiring the access, and retries it on the next entry', () => {
    const unbacked = new Set([0x9000 / PAGE_SIZE + 2]);
    const { machine, translate, vcpu } = setup(unbacked);
    machine.memory.write(HOST_BASE, COUNTER_LOOP);
    vcpu.regs[4] = 0x20000n;
    const exit = vcpu.run(translate, 1000);
    expect(exit).toEqual({ reason: 'fault', gpa: 0x9000 + 2 * PAGE_SIZE, isWrite: true, hwpoison: false });
    expect(vcpu.pc).toBe(0x28); // the faulting store
    unbacked.clear();
    expect(vcpu.run(translate, 1000).reason).toBe('mmio');
    expect(machine.memory.readU64(HOST_BASE + 0x9000 + 2 * PAGE_SIZE)).toBe(3n);
  });

  it('BNE branches while registers differ; ADD and ADDI wrap modulo 2^64', () => {
    const { machine, translate, vcpu } = setup();
    machine.memory.write(HOST_BASE, assemble([
      { op: OP.ADDI, rd: 1, rs: 1, imm: -1 }, // r1 = 2^64 - 1
      { op: OP.ADD, rd: 2, rs: 1, rt: 1 }, // r2 = 2^64 - 2
      { op: OP.ADDI, rd: 3, rs: 3, imm: 1 }, // 0x10: r3++
      { op: OP.BNE, rs: 3, rt: 4, imm: 0x10 },
      { op: OP.HLT },
    ]));
    vcpu.regs[4] = 5n;
    expect(vcpu.run(translate, 100)).toEqual({ reason: 'hlt' });
    expect([vcpu.regs[1], vcpu.regs[2], vcpu.regs[3]]).toEqual([2n ** 64n - 1n, 2n ** 64n - 2n, 5n]);
    expect(vcpu.retired).toBe(2 + 5 * 2 + 1);
  });

  it('reports a poisoned page as a hwpoison fault', () => {
    const { machine, vcpu } = setup();
    machine.memory.write(HOST_BASE, COUNTER_LOOP);
    const translate: Translate = (gpa) => (gpa === 0x8000 ? TRANSLATE_HWPOISON : HOST_BASE + gpa);
    expect(vcpu.run(translate, 1000)).toEqual({ reason: 'fault', gpa: 0x8000, isWrite: false, hwpoison: true });
  });

  it('completes an MMIO load with the value the VMM supplies', () => {
    const { machine, translate, vcpu } = setup();
    machine.memory.write(HOST_BASE, assemble([{ op: OP.LD, rd: 5, rs: 0, imm: 0x30000 }, { op: OP.HLT }]));
    expect(vcpu.run(translate, 10)).toEqual({ reason: 'mmio', gpa: 0x30000, isWrite: false, data: 0n, len: 8 });
    expect(() => vcpu.saveState()).toThrow(/MMIO load/);
    vcpu.completeMmioLoad(0xfeedn);
    expect(vcpu.regs[5]).toBe(0xfeedn);
    expect(vcpu.run(translate, 10)).toEqual({ reason: 'hlt' });
  });

  it('gives up with an internal error on undefined opcodes, misaligned accesses and fetches from MMIO', () => {
    const { machine, translate, vcpu } = setup();
    machine.memory.write(HOST_BASE, new Uint8Array([0xee, 0, 0, 0, 0, 0, 0, 0]));
    expect(vcpu.run(translate, 10)).toMatchObject({ reason: 'internal', detail: 'undefined opcode 0xee at 0x0' });
    machine.memory.write(HOST_BASE, assemble([{ op: OP.LD, rd: 1, rs: 0, imm: 4 }]));
    expect(vcpu.run(translate, 10)).toMatchObject({ reason: 'internal', detail: 'access to 0x4 is not an aligned u64' });
    vcpu.pc = 0x40000;
    expect(vcpu.run(translate, 10)).toMatchObject({ reason: 'internal', detail: 'instruction fetch from MMIO at 0x40000' });
  });
});
