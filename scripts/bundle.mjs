#!/usr/bin/env node
/**
 * Bundle each publishable package's JavaScript: what `tsc -b` type-checks (and emits as
 * declarations only), esbuild compiles from src/ into one ES module per entry point in dist/,
 * shared code in chunks beside them (code splitting keeps one instance of every module, so a
 * class is the same class whichever entry reached it, and dynamic imports stay lazy).
 *
 * Why: Node 20 has no compile cache for ES modules, and resolving, reading and compiling ~190
 * small files cost `liveupdate matrix` about 150 ms before its first pair. One file per entry
 * point costs a fraction of that.
 *
 * What stays a separate package: every @liveupdate/* package (each is versioned and installed on
 * its own; a plugin and the CLI must share one SDK and one runtime) and every peer dependency.
 * Third-party dependencies (tapable and semver in the runtime, commander in the CLI) are bundled
 * and their licences copied to dist/THIRD-PARTY-NOTICES.txt; those the code loads lazily through
 * createRequire (ajv, cli-progress) are not seen by the bundler and stay ordinary dependencies.
 * semver is bundled once: the runtime exports it and the SDK, the CLI and our plugins import it
 * from there (loading npm's semver as CommonJS, ~50 files, cost ~20 ms per process).
 *
 * Entry points come from package.json: every export (and the bin) whose "default" is
 * ./dist/<x>.js and whose "@liveupdate/source" is ./src/<x>.ts.
 *
 *   node scripts/bundle.mjs [--verbose]     # every package in BUNDLED
 *   node scripts/bundle.mjs packages/sdk    # one package (its prepack)
 *   node scripts/bundle.mjs --clean         # remove the bundles (npm run clean)
 */
import { build } from 'esbuild';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
/** The packages published to npm, in dependency order. */
export const BUNDLED = ['hw', 'runtime', 'sdk', 'plugin-memfd', 'plugin-mshv', 'plugin-pci', 'plugin-iommu', 'plugin-guest-memfd', 'cli'];

// CommonJS dependencies bundled into an ES module call require() for Node built-ins.
const BANNER = "import { createRequire as __liveupdateCreateRequire } from 'node:module';\nconst require = __liveupdateCreateRequire(import.meta.url);";
const OUTPUT = /\.js(\.map)?$/;

/** dist/<x>.js for src/<x>.ts, from every export and the bin. */
function entryPoints(dir, pkg) {
  const entries = {};
  const add = (dist, src) => {
    if (typeof dist !== 'string' || !dist.startsWith('./dist/') || !dist.endsWith('.js')) return;
    const source = src ?? `./src/${dist.slice('./dist/'.length, -'.js'.length)}.ts`;
    if (!existsSync(path.join(dir, source))) throw new Error(`${pkg.name}: ${dist} has no source ${source}`);
    entries[dist.slice('./dist/'.length, -'.js'.length)] = path.join(dir, source);
  };
  for (const target of Object.values(pkg.exports ?? {})) {
    if (typeof target === 'object' && target !== null) add(target.default, target['@liveupdate/source']);
  }
  for (const bin of Object.values(typeof pkg.bin === 'string' ? { bin: pkg.bin } : pkg.bin ?? {})) add(bin, undefined);
  return entries;
}

/** Files under dir (recursively) whose names match re. */
function filesUnder(dir, re, out = []) {
  if (!existsSync(dir)) return out;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) filesUnder(p, re, out);
    else if (re.test(e.name)) out.push(p);
  }
  return out;
}

/** The third-party packages whose code went into the bundle, with their licence text. */
function notices(inputs) {
  const seen = new Map();
  for (const input of inputs) {
    const m = /(?:^|\/)node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
    if (!m || m[1].startsWith('@liveupdate/')) continue;
    const pkgDir = path.join(root, input.slice(0, m.index + m[0].length));
    if (seen.has(pkgDir)) continue;
    const meta = JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
    const licence = readdirSync(pkgDir).find((f) => /^licen[cs]e/i.test(f));
    seen.set(pkgDir, `${meta.name}@${meta.version} (${meta.license})\n\n${licence ? readFileSync(path.join(pkgDir, licence), 'utf8').trim() : '(no licence file)'}\n`);
  }
  return [...seen.values()];
}

export async function bundlePackage(dir) {
  const pkg = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8'));
  const entries = entryPoints(dir, pkg);
  const keep = new Set(Object.keys(pkg.peerDependencies ?? {}));
  const outdir = path.join(dir, 'dist');
  const result = await build({
    entryPoints: entries,
    outdir,
    absWorkingDir: root,
    write: false,
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    chunkNames: 'chunk-[hash]',
    sourcemap: true,
    sourcesContent: false,
    banner: { js: BANNER },
    tsconfig: path.join(dir, 'tsconfig.json'),
    metafile: true,
    logLevel: 'warning',
    plugins: [{
      name: 'liveupdate-packages',
      setup(b) {
        // Another @liveupdate package or a peer dependency: imported, never copied in.
        b.onResolve({ filter: /^[^./]/ }, (args) => {
          const name = args.path.startsWith('@') ? args.path.split('/').slice(0, 2).join('/') : args.path.split('/')[0];
          if (name.startsWith('@liveupdate/') || keep.has(name)) return { path: args.path, external: true };
          return undefined;
        });
      },
    }],
  });
  // Write only what changed: a build with nothing new leaves dist/ untouched, so a process
  // importing the package meanwhile (a test running while `npm pack` runs prepack) never sees a
  // half-written file (and a changed file is replaced by a rename). Then drop JavaScript a previous build left (old chunks, tsc's per-file output).
  const written = new Set();
  let bytes = 0;
  for (const f of result.outputFiles) {
    written.add(f.path);
    if (f.path.endsWith('.js')) bytes += f.contents.length;
    if (existsSync(f.path) && Buffer.compare(readFileSync(f.path), f.contents) === 0) continue;
    mkdirSync(path.dirname(f.path), { recursive: true });
    writeFileSync(`${f.path}.tmp-${process.pid}`, f.contents);
    renameSync(`${f.path}.tmp-${process.pid}`, f.path);
  }
  for (const f of filesUnder(outdir, OUTPUT)) if (!written.has(f)) rmSync(f);
  const third = notices(Object.keys(result.metafile.inputs));
  const noticeFile = path.join(outdir, 'THIRD-PARTY-NOTICES.txt');
  const notice = `${pkg.name} bundles the following packages in dist/:\n\n${third.join('\n---\n\n')}`;
  if (!third.length) {
    if (existsSync(noticeFile)) rmSync(noticeFile);
  } else if (!existsSync(noticeFile) || readFileSync(noticeFile, 'utf8') !== notice) writeFileSync(noticeFile, notice);
  return { name: pkg.name, entries: Object.keys(entries), files: [...written].filter((f) => f.endsWith('.js')).length, bytes, bundled: third.map((t) => t.split(' ')[0]) };
}

/** Remove what bundlePackage wrote (dist/'s JavaScript, maps and notices); tsc -b --clean removes the declarations. */
export function cleanPackage(dir) {
  const outdir = path.join(dir, 'dist');
  for (const f of [...filesUnder(outdir, OUTPUT), path.join(outdir, 'THIRD-PARTY-NOTICES.txt')]) rmSync(f, { force: true });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const verbose = args.includes('--verbose');
  const named = args.filter((a) => a !== '--verbose' && a !== '--clean');
  const dirs = named.length ? named.map((d) => path.resolve(d)) : BUNDLED.map((p) => path.join(root, 'packages', p));
  if (args.includes('--clean')) {
    for (const dir of dirs) cleanPackage(dir);
    process.exit(0);
  }
  const t0 = performance.now();
  let files = 0;
  let bytes = 0;
  for (const dir of dirs) {
    const r = await bundlePackage(dir);
    files += r.files;
    bytes += r.bytes;
    if (verbose) process.stderr.write(`bundled ${r.name}: ${r.entries.join(', ')} -> ${r.files} file${r.files === 1 ? '' : 's'}, ${(r.bytes / 1024).toFixed(0)} KiB${r.bundled.length ? ` (with ${r.bundled.join(', ')})` : ''}\n`);
  }
  process.stderr.write(`bundled ${dirs.length} package${dirs.length === 1 ? '' : 's'} into ${files} file${files === 1 ? "" : "s"}, ${(bytes / 1024).toFixed(0)} KiB (${Math.round(performance.now() - t0)} ms)\n`);
}
