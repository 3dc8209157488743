/** debugfs: read-only blobs under /sys/kernel/debug, registered by path prefix. */
import { ErrnoError } from '../errno.js';

export interface DebugfsDir {
  list(): string[];
  read(name: string): Uint8Array | undefined;
}

export class Debugfs {
  private readonly dirs = new Map<string, DebugfsDir>();

  /** `alive` throws once the owning kernel is gone. */
  constructor(private readonly alive: () => void = () => undefined) {}

  /** Register a directory ('kho/out'); names may contain '/' (e.g. 'sub_fdts/LUO'). */
  register(dir: string, provider: DebugfsDir): void { this.dirs.set(dir, provider); }
  unregister(dir: string): void { this.dirs.delete(dir); }

  read(path: string): Uint8Array {
    this.alive();
    const p = path.replace(/^\/?(sys\/kernel\/debug\/)?/, '');
    for (const [dir, provider] of this.dirs) {
      if (!p.startsWith(`${dir}/`)) continue;
      const data = provider.read(p.slice(dir.length + 1));
      if (data) return data;
    }
    throw new ErrnoError('ENOENT', 'open', path);
  }

  readText(path: string): string { return new TextDecoder().decode(this.read(path)); }

  /** Every file path, sorted. */
  list(): string[] {
    this.alive();
    const out: string[] = [];
    for (const [dir, provider] of this.dirs) for (const name of provider.list()) out.push(`${dir}/${name}`);
    return out.sort();
  }
}
