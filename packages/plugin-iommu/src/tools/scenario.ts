/**
 * The built-in scenario of issue 12's proof: a VM's guest RAM in a sealed memfd, a DSA-like
 * engine passed through with vfio-pci and iommufd (memfd → iommufd → cdev in one session), DMA
 * through VT-d into guest RAM before the freeze, through the jump, during boot and after
 * RETRIEVE_FD; the pci section checks the sequence, the iommu section the fault log.
 */
export const GUEST_IOVA = 0x10_0000;
export const REG_BASE = 0xfed9_0000;

export const passthroughScenario = {
  name: 'iommu-vfio-passthrough',
  description: 'A DSA engine passed through with vfio-pci and iommufd keeps writing guest RAM through VT-d across the update (memfd → iommufd → vfio cdev)',
  scenario: {
    name: 'iommu-vfio-passthrough',
    machine: { memory: '1GiB' },
    from: { release: '7.1.0', plugins: { '@liveupdate/plugin-memfd': '4.0.0', '@liveupdate/plugin-pci': '0.1.0', '@liveupdate/plugin-iommu': '0.1.0' } },
    to: { release: '7.2.0', plugins: { '@liveupdate/plugin-memfd': '4.0.0', '@liveupdate/plugin-pci': '0.1.0', '@liveupdate/plugin-iommu': '0.1.0' } },
    pci: {
      topology: {
        segments: [{
          domain: 0,
          devices: [
            { kind: 'root-port', name: 'rp0', slot: 1, children: [{ kind: 'endpoint', name: 'dsa0', slot: 0, model: 'dsa' }] },
            { kind: 'root-port', name: 'rp1', slot: 2, children: [{ kind: 'endpoint', name: 'dsa1', slot: 0, model: 'dsa' }] },
          ],
        }],
      },
    },
    iommu: { units: [{ segment: 0, regBase: REG_BASE }] },
    sessions: [{
      name: 'vm0',
      files: [
        { token: 1, type: 'memfd', size: '256KiB', fill: 'zero', contents: 'device-written', seals: ['seal', 'shrink', 'grow'] },
        { token: 2, type: 'iommufd', maps: [{ file: 1, iova: GUEST_IOVA, length: 256 * 1024 }], vfio: 'dsa0', hwptToken: 1 },
        { token: 3, type: 'vfio-device', device: 'dsa0', mode: 'continuous', iommufd: 2, dma: { ram: 1, pages: 64, iova: GUEST_IOVA } },
      ],
    }],
  },
};
