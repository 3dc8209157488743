/** The IOMMU FLB ops (drivers/iommu/liveupdate.c iommu_flb_ops), linked to the iommufd handler. */
import { defineFlb, type FlbDefinition } from '@liveupdate/sdk';
import type { IommuFlbVariant } from './abi/iommu.js';
import { FlbOut } from './flb-arrays.js';
import { retrieveFlb, type FlbIn } from './flb-incoming.js';
import { maybeCoreOf } from './state.js';

export function iommuFlb(variant: IommuFlbVariant): FlbDefinition<FlbOut | FlbIn> {
  return defineFlb<FlbOut | FlbIn>({
    compatible: variant,
    preserve(ctx) {
      const f = new FlbOut(ctx.kernel, variant);
      ctx.data = BigInt(f.headerPhys);
      ctx.obj = f;
    },
    unpreserve(ctx) {
      if (ctx.obj instanceof FlbOut) ctx.obj.free();
    },
    /** Already retrieved at IOMMU init; the same restored object is handed out. */
    retrieve(ctx) {
      ctx.obj = maybeCoreOf(ctx.kernel)?.incoming ?? retrieveFlb(ctx.kernel, variant, Number(ctx.data));
    },
    /** folio_put of every array page and the header. */
    finish(ctx) {
      const inc = ctx.obj;
      if (!inc || inc instanceof FlbOut) return;
      const core = maybeCoreOf(ctx.kernel);
      if (core?.incoming === inc) core.releaseIncoming();
      else for (const p of inc.pages) ctx.kernel.mm.freePages(p / 4096, 0);
    },
  });
}
