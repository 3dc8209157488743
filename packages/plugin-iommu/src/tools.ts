/**
 * plugin-iommu's surface for the tools: decoders for the FLB (both stored variants, with their
 * arrays, records, the root and context tables a VT-d record names and every page-table page of
 * every preserved domain) and for the iommufd handover (1.x and 2.x, 2.1's CRC-32 checked); a scenario section that
 * puts VT-d units on the machine and checks their fault logs after the update.
 */
import { dmarOf } from '@liveupdate/hw';
import { defineDecoder, defineSection, type Decoded, type DecodedValue, type FormatDecoder, type OwnedPages, type PluginTools } from '@liveupdate/sdk';
import {
  FLB_LAYOUTS, IOMMU_LUO_FLB_VERSION, iommuDeviceSer, iommuDomainSer, iommuFlbSer, iommuFlbSerV1, iommuHwSer, iommuHwSerV1, type IommuFlbVariant,
} from './abi/iommu.js';
import { crc32 } from '@liveupdate/plugin-memfd';
import { iommufdAreaSer, iommufdAreasSer, iommufdCrcSer, iommufdHasCrc, iommufdHwptSer, iommufdSer, iommufdV1Size, iommufdV21Size, iommufdV2Size } from './abi/iommufd.js';
import { hex, isPage, readable, walkList, walkRoot, walkTables } from './tools/walk.js';
import { iommufdKind } from './tools/iommufd-kind.js';
import { maybeCoreOf } from './state.js';
import { passthroughScenario } from './tools/scenario.js';

const num = (v: bigint): number => (v > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : Number(v));

function decodeFlb(variant: IommuFlbVariant): FormatDecoder {
  return defineDecoder({
    target: { kind: 'flb', compatible: variant },
    decode(memory, data): Decoded {
      const fields: Record<string, DecodedValue> = { variant };
      const problems: string[] = [];
      const pages: OwnedPages[] = [];
      const head = num(data);
      try {
        if (!readable(memory, head, problems, 'iommu_flb_ser')) return { fields, problems, pages };
        const layout = FLB_LAYOUTS[variant];
        let first: { iommu: number; domain: number; device: number };
        if (variant === 'iommu-liveupdate') {
          const h = iommuFlbSer.decode(memory.read(head, iommuFlbSer.size));
          fields.version = Number(h.version);
          if (h.version !== BigInt(IOMMU_LUO_FLB_VERSION)) problems.push(`version ${h.version} (the kernel panics on anything but 1)`);
          first = { iommu: num(h.iommu_array_phys), domain: num(h.iommu_domain_array_phys), device: num(h.device_array_phys) };
        } else {
          const h = iommuFlbSerV1.decode(memory.read(head, iommuFlbSerV1.size));
          first = { iommu: num(h.iommu_array_phys), domain: num(h.iommu_domain_array_phys), device: num(h.device_array_phys) };
        }
        pages.push({
          pfn: Math.floor(head / 4096), structure: 'iommu FLB header', role: `${variant} header`, upstream: true,
          words: (variant === 'iommu-liveupdate' ? [0, 8, 16, 24] : [0, 8, 16]).map((o, i) => ({ offset: (head % 4096) + o, size: 8 as const, kind: variant === 'iommu-liveupdate' && i === 0 ? 'count' as const : 'pointer' as const })),
        });
        for (const [k, v] of Object.entries(first)) if (v === 0) problems.push(`${k} array address is 0 (the kernel panics)`);
        const seen = new Set<number>();
        const hw = first.iommu ? walkList(memory, first.iommu, layout.hwSize, 'iommu', problems, pages, seen) : [];
        const domains = first.domain ? walkList(memory, first.domain, layout.domainSize, 'domain', problems, pages, seen) : [];
        const devices = first.device ? walkList(memory, first.device, layout.deviceSize, 'device', problems, pages, seen) : [];
        fields.iommus = hw.length;
        fields.domains = domains.length;
        fields.devices = devices.length;
        hw.forEach((slot, i) => {
          const r = iommuHwSer.decode(memory.read(slot, iommuHwSer.size));
          fields[`iommu[${i}].token`] = hex(num(r.token));
          fields[`iommu[${i}].ref_count`] = r.ref_count;
          fields[`iommu[${i}].type`] = num(r.type);
          if (variant === 'iommu-liveupdate-v1') {
            const v = iommuHwSerV1.decode(memory.read(slot, iommuHwSerV1.size));
            fields[`iommu[${i}].root_table`] = hex(num(v.root_table));
            fields[`iommu[${i}].restored`] = v.restored;
            walkRoot(memory, num(v.root_table), `iommu[${i}]`, problems, pages, seen);
          }
        });
        domains.forEach((slot, i) => {
          const r = iommuDomainSer.decode(memory.read(slot, iommuDomainSer.size));
          fields[`domain[${i}].top_table_phys`] = hex(num(r.top_table_phys));
          fields[`domain[${i}].top_level`] = num(r.top_level);
          fields[`domain[${i}].vasz`] = r.vasz;
          walkTables(memory, num(r.top_table_phys), num(r.top_level) + 1, `domain[${i}]`, problems, pages, seen);
        });
        devices.forEach((slot, i) => {
          const r = iommuDeviceSer.decode(memory.read(slot, iommuDeviceSer.size));
          const bdf = `${r.pci_domain_nr.toString(16).padStart(4, '0')}:${(r.devid >> 8).toString(16).padStart(2, '0')}:${((r.devid >> 3) & 31).toString(16).padStart(2, '0')}.${r.devid & 7}`;
          fields[`device[${i}]`] = `${bdf} did ${num(r.attachment_id)}`;
          if (!domains.includes(num(r.domain_phys))) problems.push(`device[${i}] names domain ${hex(num(r.domain_phys))}, not a live domain record`);
          if (!hw.includes(num(r.iommu_phys))) problems.push(`device[${i}] names iommu ${hex(num(r.iommu_phys))}, not a live hw record`);
        });
      } catch (e) {
        problems.push(`undecodable: ${String(e)}`);
      }
      return { fields, problems, pages };
    },
  });
}

const iommufdDecoder = defineDecoder({
  target: { kind: 'file', family: 'iommufd' },
  decode(memory, data, version): Decoded {
    const fields: Record<string, DecodedValue> = {};
    const problems: string[] = [];
    const pages: OwnedPages[] = [];
    const at = num(data);
    let size = -1;
    try {
      if (!readable(memory, at, problems, 'iommufd_ser')) return { fields, problems, pages };
      const nr = memory.readU64Number(at);
      fields.nr_hwpts = nr;
      if (nr > 170) { problems.push(`${nr} HWPTs do not fit the handover`); return { fields, problems, pages }; }
      size = iommufdV1Size(nr);
      for (let i = 0; i < nr; i++) {
        const h = iommufdHwptSer.decode(memory.read(at + iommufdSer.size + i * iommufdHwptSer.size, iommufdHwptSer.size));
        fields[`hwpt[${i}]`] = `token ${h.token} domain ${hex(num(h.domain_data))}`;
        if (!isPage(memory, num(h.domain_data) - (num(h.domain_data) % 4096))) problems.push(`hwpt[${i}]: domain record ${hex(num(h.domain_data))} outside memory`);
      }
      if (version && Number(version.split('.')[0]) >= 2) {
        const areasAt = at + iommufdV1Size(nr);
        const na = memory.readU64Number(areasAt);
        fields.nr_areas = na;
        if (na > 4096) { problems.push(`${na} areas`); return { fields, problems, pages }; }
        for (let k = 0; k < na; k++) {
          const a = iommufdAreaSer.decode(memory.read(areasAt + iommufdAreasSer.size + k * iommufdAreaSer.size, iommufdAreaSer.size));
          fields[`area[${k}]`] = `iova ${hex(num(a.iova))} +${hex(num(a.length))} file token ${a.file_token} @${hex(num(a.start))} hwpt ${a.hwpt_index}`;
          if (a.hwpt_index >= nr) problems.push(`area[${k}] names HWPT ${a.hwpt_index} of ${nr}`);
        }
        size = iommufdV2Size(nr, na);
        if (iommufdHasCrc(version)) {
          // 2.1: the CRC-32 of every byte before it (header, HWPTs, nr_areas, areas).
          const c = iommufdCrcSer.decode(memory.read(at + size, iommufdCrcSer.size));
          const want = crc32(memory.read(at, size));
          fields.crc32 = hex(c.crc32);
          if (c.crc32 !== want) problems.push(`handover CRC-32 ${hex(c.crc32)} does not match its bytes (${hex(want)})`);
          if (c.pad !== 0) problems.push(`iommufd_crc_ser pad is ${c.pad}, not 0`);
          size = iommufdV21Size(nr, na);
        }
      }
    } catch (e) {
      problems.push(`undecodable: ${String(e)}`);
    } finally {
      // The pages the handover spans, as far as its counts could be read.
      if (size >= 0) pages.push({ pfn: Math.floor(at / 4096), count: Math.ceil((size + (at % 4096)) / 4096), structure: 'iommufd handover', role: `iommufd ${version ?? ''}`.trim(), upstream: version !== null && version.startsWith('1.'), words: [{ offset: at % 4096, size: 8, kind: 'count' }] });
    }
    return { fields, problems, pages };
  },
});

interface IommuSectionSpec { readonly units: ReadonlyArray<{ readonly segment: number; readonly regBase: number; readonly buses?: readonly [number, number] }> }

/** "iommu": { "units": [{ "segment": 0, "regBase": 4275634176 }] } — VT-d units on the machine; after the update every fault log must be empty. */
const iommuSection = defineSection<IommuSectionSpec, null>({
  key: 'iommu',
  description: 'Intel VT-d remapping units (DRHD) on the machine; after the update their fault logs must be empty',
  schema: {
    type: 'object', additionalProperties: false, required: ['units'],
    properties: {
      units: {
        type: 'array', minItems: 1,
        items: {
          type: 'object', additionalProperties: false, required: ['segment', 'regBase'],
          properties: {
            segment: { type: 'integer', minimum: 0, maximum: 65535 },
            regBase: { type: 'integer', minimum: 4096, multipleOf: 4096 },
            buses: { type: 'array', items: { type: 'integer', minimum: 0, maximum: 255 }, minItems: 2, maxItems: 2 },
          },
        },
      },
    },
  },
  machine(machine, spec) {
    for (const u of spec.units) dmarOf(machine).addUnit({ segment: u.segment, regBase: u.regBase, ...(u.buses ? { buses: [u.buses[0], u.buses[1]] as const } : {}) });
    return null;
  },
  after(ctx) {
    const core = maybeCoreOf(ctx.kernel);
    return dmarOf(ctx.machine).units.map((u) => {
      const faults = u.faults.length + u.faultOverflow;
      const counts = { translations: u.translations, faults };
      // No record this unit could adopt reached the new kernel (the IOMMU FLB is missing or
      // unreadable): the unit starts fresh and a preserved device's DMA is blocked, not
      // misdirected. That is the defined outcome (the series' init for a unit without a record);
      // the VMM learns it from the failed RETRIEVE_FD of its iommufd.
      const unadopted = core !== undefined && core.units.some((x) => x.hw === u && !x.restored);
      if (faults > 0 && unadopted) {
        return { ok: true, summary: `${u.name}: not adopted from the handover: ${faults} DMA faults from preserved devices, blocked`, problems: [], counts };
      }
      return {
        ok: faults === 0,
        summary: `${u.name}: ${u.translations} translations, ${faults} faults`,
        problems: u.faults.map((f) => `DMA fault: source ${hex(f.sourceId)} iova ${hex(f.iova)} ${f.write ? 'write' : 'read'}: ${f.detail}`),
        counts,
      };
    });
  },
});

export const iommuTools: PluginTools = {
  objects: [iommufdKind as unknown as NonNullable<PluginTools['objects']>[number]],
  decoders: [decodeFlb('iommu-liveupdate'), decodeFlb('iommu-liveupdate-v1'), iommufdDecoder],
  sections: [iommuSection as unknown as NonNullable<PluginTools['sections']>[number]],
  scenarios: [passthroughScenario],
};

export { iommuSection };
