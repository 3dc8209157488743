/**
 * Boot and shutdown phases of the IOMMU (drivers/iommu/intel/dmar.c, iommu.c and the series'
 * liveupdate code): at IOMMU init, before PCI enumeration, the FLB is retrieved and each unit
 * adopts its preserved root table in place, restores its context tables once and reserves the
 * DIDs of its preserved devices; a unit with nothing handed over gets a fresh root table. At
 * syscore shutdown the units clear what was not preserved.
 */
import { dmarOf } from '@liveupdate/hw';
import { KernelPanic, type Kernel } from '@liveupdate/sdk';
import { IommuCore } from './core.js';
import { findIncomingFlb, preservedHw, retrieveFlb } from './flb-incoming.js';
import type { IommuFlbVariant } from './abi/iommu.js';
import { setCore } from './state.js';
import { IntelIommu } from './vtd/intel.js';

/** Offset of iommu_intel_ser.restored in the VT-d hw record. */
const HW_V1_RESTORED_OFFSET = 24;

export function iommuInit(kernel: Kernel, variant: IommuFlbVariant, opts: { readonly failRetrieveAlloc?: boolean } = {}): IommuCore {
  const core = new IommuCore(kernel, variant);
  setCore(kernel, core);
  for (const hw of dmarOf(kernel.machine).units) core.units.push(new IntelIommu(kernel, hw));
  // liveupdate_flb_get_incoming: no LUO, no handover or no IOMMU FLB is "no data", not an error.
  const found = kernel.luo.enabled && kernel.khoIn ? findIncomingFlb(kernel) : null;
  if (found) {
    core.incoming = retrieveFlb(kernel, found.variant, found.data, opts.failRetrieveAlloc ?? false);
    if (found.variant !== variant) core.foreignFlbRefs = found.count;
  }
  const inc = core.incoming;
  const kin = kernel.khoIn;
  for (const unit of core.units) {
    const rec = inc ? preservedHw(inc, unit.token) : undefined;
    if (!inc || !rec || !kin) { unit.initFresh(); continue; }
    // The generic record has no root table: the unit's DMAR_RTADDR still holds it (no reset at kexec).
    const root = inc.variant === 'iommu-liveupdate-v1' ? rec.rootTable : unit.hw.rootTableAddress;
    const err = unit.adopt(root, (p) => kin.restoreFolio(p) !== null, rec.restored);
    if (err) throw new KernelPanic(`kernel BUG at drivers/iommu/intel/liveupdate.c: ${unit.hw.name}: ${err}`);
    if (inc.variant === 'iommu-liveupdate-v1') kernel.machine.memory.write(rec.phys + HW_V1_RESTORED_OFFSET, new Uint8Array([1]));
    // _restore_used_domain_ids: DIDs of devices preserved behind this unit stay allocated.
    for (const d of inc.devices) if (d.iommuPhys === rec.phys) unit.dids.add(d.did);
    kernel.dmesg.log('info', 'DMAR', `liveupdate: ${unit.hw.name} adopted root table 0x${root.toString(16)} (${inc.devices.filter((d) => d.iommuPhys === rec.phys).length} preserved devices)`);
  }
  return core;
}
