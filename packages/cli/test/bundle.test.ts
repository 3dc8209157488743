/**
 * scripts/bundle.mjs, the build step that turns each published package's src/ into one ES module
 * per entry point: what each dist/ holds, that one SDK and one runtime serve the CLI and a plugin
 * loaded beside it, and that a build with nothing new writes nothing (a test importing a package
 * while `npm pack` runs prepack never sees a file being replaced). Runs on the built tree (the root
 * `npm test` builds and bundles first).
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const SCRIPT = path.join(ROOT, 'scripts/bundle.mjs');

interface BundleScript {
  readonly BUNDLED: readonly string[];
  bundlePackage(dir: string): Promise<{ name: string; entries: string[]; files: number; bytes: number; bundled: string[] }>;
}
const load = async (): Promise<BundleScript> => await import(pathToFileURL(SCRIPT).href) as BundleScript;

const jsFiles = (dir: string): string[] => readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.js')).sort();

describe('scripts/bundle.mjs', () => {
  it('bundles every published package: dist/ holds the entry points package.json names and shared chunks, nothing else', async () => {
    const { BUNDLED } = await load();
    expect(BUNDLED).toEqual(['hw', 'runtime', 'sdk', 'plugin-memfd', 'plugin-mshv', 'plugin-pci', 'plugin-iommu', 'plugin-guest-memfd', 'cli']);
    const shapes = Object.fromEntries(BUNDLED.map((p) => [p, jsFiles(path.join(ROOT, 'packages', p, 'dist')).map((f) => (/^chunk-[A-Z0-9]+\.js$/.test(f) ? 'chunk' : f))]));
    const entriesOnly = (p: string): string[] => (shapes[p] ?? []).filter((f) => f !== 'chunk');
    for (const p of ['hw', 'runtime', 'plugin-memfd', 'plugin-mshv', 'plugin-pci', 'plugin-iommu', 'plugin-guest-memfd']) expect(shapes[p], p).toEqual(['index.js']);
    expect(entriesOnly('sdk')).toEqual(['index.js', 'testing/index.js']);
    expect(entriesOnly('cli')).toEqual(['bin.js', 'index.js']);
  });

  it('leaves every @liveupdate package an import: no bundle carries a second copy of another package\'s code', async () => {
    const { BUNDLED } = await load();
    for (const p of BUNDLED) {
      const dist = path.join(ROOT, 'packages', p, 'dist');
      for (const f of jsFiles(dist)) {
        const map = JSON.parse(readFileSync(path.join(dist, `${f}.map`), 'utf8')) as { sources: string[] };
        const foreign = map.sources.map((s) => path.resolve(path.dirname(path.join(dist, f)), s)).filter((s) => s.startsWith(path.join(ROOT, 'packages')) && !s.startsWith(path.join(ROOT, 'packages', p, 'src')));
        expect(foreign, `${p}/dist/${f}`).toEqual([]);
      }
    }
  });

  it('semver is bundled once, in the runtime, and its licence ships in the runtime\'s notices; the CLI carries commander', async () => {
    const notices = (p: string): string => readFileSync(path.join(ROOT, 'packages', p, 'dist/THIRD-PARTY-NOTICES.txt'), 'utf8');
    expect(notices('runtime')).toMatch(/^semver@\d+\.\d+\.\d+ \(ISC\)$/m);
    expect(notices('runtime')).toMatch(/^tapable@\d+\.\d+\.\d+ \(MIT\)$/m);
    expect(notices('cli')).toMatch(/^commander@\d+\.\d+\.\d+ \(MIT\)$/m);
    const { BUNDLED } = await load();
    const withSemver = BUNDLED.filter((p) => jsFiles(path.join(ROOT, 'packages', p, 'dist')).some((f) => readFileSync(path.join(ROOT, 'packages', p, 'dist', `${f}.map`), 'utf8').includes('node_modules/semver/')));
    expect(withSemver).toEqual(['runtime']);
  });

  it('the CLI and a plugin loaded beside it share one SDK and one runtime (the plugin\'s semver is the runtime\'s)', () => {
    const script = [
      `const sdk = await import(${JSON.stringify(pathToFileURL(path.join(ROOT, 'packages/sdk/dist/index.js')).href)});`,
      `const runtime = await import(${JSON.stringify(pathToFileURL(path.join(ROOT, 'packages/runtime/dist/index.js')).href)});`,
      `const memfd = (await import(${JSON.stringify(pathToFileURL(path.join(ROOT, 'packages/plugin-memfd/dist/index.js')).href)})).default();`,
      'process.stdout.write(JSON.stringify({ sameSemver: sdk.semver === runtime.semver, sameKernel: memfd.sdkIdentity.kernelClass === runtime.Kernel, sameErrno: memfd.sdkIdentity.errnoClass === runtime.ErrnoError }));',
    ].join('\n');
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({ sameSemver: true, sameKernel: true, sameErrno: true });
  });

  it('a second bundle of an unchanged package writes no file', async () => {
    const { bundlePackage } = await load();
    const dir = path.join(ROOT, 'packages/plugin-mshv');
    await bundlePackage(dir);
    const before = jsFiles(path.join(dir, 'dist')).map((f) => [f, statSync(path.join(dir, 'dist', f)).mtimeMs]);
    const r = await bundlePackage(dir);
    expect(r).toMatchObject({ name: '@liveupdate/plugin-mshv', entries: ['index'], files: 1, bundled: [] });
    expect(jsFiles(path.join(dir, 'dist')).map((f) => [f, statSync(path.join(dir, 'dist', f)).mtimeMs])).toEqual(before);
  });
});
