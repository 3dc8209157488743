/**
 * PCI configuration-space registers that matter for live update, named and placed as in
 * include/uapi/linux/pci_regs.h (PCI Local Bus 3.0, PCI-to-PCI Bridge 1.2, PCIe Base 6.0).
 */
export const PCI_CFG_SPACE_EXP_SIZE = 4096;

export const PCI_VENDOR_ID = 0x00;
export const PCI_DEVICE_ID = 0x02;
export const PCI_COMMAND = 0x04;
export const PCI_COMMAND_IO = 0x1;
export const PCI_COMMAND_MEMORY = 0x2;
export const PCI_COMMAND_MASTER = 0x4;
export const PCI_COMMAND_INTX_DISABLE = 0x400;
export const PCI_STATUS = 0x06;
export const PCI_STATUS_CAP_LIST = 0x10;
export const PCI_CLASS_REVISION = 0x08;
export const PCI_HEADER_TYPE = 0x0e;
export const PCI_HEADER_TYPE_NORMAL = 0;
export const PCI_HEADER_TYPE_BRIDGE = 1;
export const PCI_HEADER_TYPE_MFD = 0x80;
export const PCI_BASE_ADDRESS_0 = 0x10;
export const PCI_BASE_ADDRESS_MEM_TYPE_64 = 0x04;
export const PCI_CAPABILITY_LIST = 0x34;

/** Type 1 (bridge) header. */
export const PCI_PRIMARY_BUS = 0x18;
export const PCI_SECONDARY_BUS = 0x19;
export const PCI_SUBORDINATE_BUS = 0x1a;

export const PCI_CAP_ID_PM = 0x01;
export const PCI_PM_CTRL = 4;
export const PCI_PM_CTRL_STATE_MASK = 0x3;
export const PCI_CAP_ID_EXP = 0x10;
export const PCI_EXP_FLAGS = 2;
export const PCI_EXP_TYPE_ENDPOINT = 0x0;
export const PCI_EXP_TYPE_ROOT_PORT = 0x4;
export const PCI_EXP_TYPE_UPSTREAM = 0x5;
export const PCI_EXP_TYPE_DOWNSTREAM = 0x6;
export const PCI_EXP_DEVCAP = 4;
export const PCI_EXP_DEVCAP_FLR = 0x10000000;
export const PCI_EXP_DEVCTL = 8;
export const PCI_EXP_DEVCTL_BCR_FLR = 0x8000;
export const PCI_EXP_DEVCAP2 = 0x24;
export const PCI_EXP_DEVCAP2_ARI = 0x20;
export const PCI_EXP_DEVCTL2 = 0x28;
export const PCI_EXP_DEVCTL2_ARI = 0x20;
export const PCI_CAP_ID_MSIX = 0x11;
export const PCI_MSIX_FLAGS = 2;
export const PCI_MSIX_FLAGS_ENABLE = 0x8000;
export const PCI_MSIX_FLAGS_MASKALL = 0x4000;

/** Extended capabilities (offset 0x100 on). */
export const PCI_EXT_CAP_ID_ACS = 0x0d;
export const PCI_ACS_CAP = 4;
export const PCI_ACS_CTRL = 6;
export const PCI_ACS_SV = 0x01;
export const PCI_ACS_RR = 0x04;
export const PCI_ACS_CR = 0x08;
export const PCI_ACS_UF = 0x10;
export const PCI_EXT_CAP_ID_ARI = 0x0e;
export const PCI_EXT_CAP_ID_SRIOV = 0x10;
export const PCI_SRIOV_CTRL = 8;
export const PCI_SRIOV_CTRL_VFE = 0x01;
export const PCI_SRIOV_CTRL_MSE = 0x08;
export const PCI_SRIOV_TOTAL_VF = 0x0e;
export const PCI_SRIOV_NUM_VF = 0x10;
export const PCI_SRIOV_VF_OFFSET = 0x14;
export const PCI_SRIOV_VF_STRIDE = 0x16;
export const PCI_SRIOV_VF_DID = 0x1a;

/** Where this model places its capabilities (any layout a driver walks is valid). */
export const CAP_PM_AT = 0x40;
export const CAP_EXP_AT = 0x50;
export const CAP_MSIX_AT = 0x90;
export const EXT_ACS_AT = 0x100;
export const EXT_ARI_AT = 0x110;
export const EXT_SRIOV_AT = 0x120;

/** PCI_DEVFN / PCI_SLOT / PCI_FUNC, and the 16-bit BDF (Requester ID). */
export const devfn = (slot: number, fn: number): number => ((slot & 0x1f) << 3) | (fn & 0x7);
export const bdfOf = (bus: number, df: number): number => ((bus & 0xff) << 8) | (df & 0xff);
export function formatBdf(domain: number, bdf: number): string {
  const h = (n: number, w: number): string => n.toString(16).padStart(w, '0');
  return `${h(domain, 4)}:${h(bdf >> 8, 2)}:${h((bdf >> 3) & 0x1f, 2)}.${bdf & 7}`;
}
/** "0000:02:00.0" → { domain, bdf }, or null. */
export function parseBdf(s: string): { domain: number; bdf: number } | null {
  const m = /^(?:([0-9a-fA-F]{4,8}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$/.exec(s);
  if (!m) return null;
  const slot = parseInt(m[3] as string, 16);
  if (slot > 31) return null;
  return { domain: m[1] ? parseInt(m[1], 16) : 0, bdf: bdfOf(parseInt(m[2] as string, 16), devfn(slot, parseInt(m[4] as string, 10))) };
}
