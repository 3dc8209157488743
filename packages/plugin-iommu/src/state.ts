/** The IOMMU core of each kernel this plugin was loaded into (kernel-local; never crosses a kexec). */
import { ErrnoError, type Kernel } from '@liveupdate/sdk';
import type { IommuCore } from './core.js';

const cores = new WeakMap<Kernel, IommuCore>();

export function setCore(kernel: Kernel, core: IommuCore): void { cores.set(kernel, core); }

export function coreOf(kernel: Kernel, syscall = 'iommu'): IommuCore {
  const c = cores.get(kernel);
  if (!c) throw new ErrnoError('ENODEV', syscall, 'plugin-iommu is not loaded in this kernel');
  return c;
}

export function maybeCoreOf(kernel: Kernel): IommuCore | undefined { return cores.get(kernel); }
