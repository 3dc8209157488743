#!/usr/bin/env node
// Rebuild a released version of @liveupdate/plugin-memfd as the tarball `npm pack` made at its
// tag, into fixtures/liveupdate-plugin-memfd-<version>.tgz (ecosystem.md §10):
//
//   node packages/compat/scripts/make-release.mjs 1.0.0     (or 2.0.0, 3.0.0, --all)
//
// (3.1.0 is the workspace package itself; it is not rebuilt as a tarball.)
//
// The source is today's packages/plugin-memfd/src with the release's defaults written into
// the three DEFAULT_* lines of src/index.ts; package.json gets the release's version and loses
// what only makes sense inside the workspace (devDependencies, the @liveupdate/source export
// condition: a tarball ships dist/ only). It is compiled by the workspace's tsc against the
// workspace's @liveupdate/sdk and @liveupdate/hw declarations (run `npx tsc -b` first) in a
// temporary directory, then packed. The same inputs give the same bytes: tsc output is
// deterministic and npm pack writes fixed mtimes.
//
// A rebuilt tarball that is already installed must be refreshed, or the lockfile's integrity
// no longer matches it and `npm ci` fails EINTEGRITY: one alias at a time,
//   npm update plugin-memfd-v1 -w @liveupdate/compat
// (installing both aliases in one go trips an npm peer-resolution bug that looks the workspace
// SDK up in the registry: ERESOLVE "Found: @liveupdate/sdk@undefined").
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const pluginDir = path.join(root, 'packages/plugin-memfd');
const fixtures = path.join(root, 'fixtures');

/** What each release wrote, read and handled. */
export const RELEASES = {
  '1.0.0': { writes: ['1.0.0'], reads: '^1.0.0', hugetlb: false, what: 'memfd-v1 only, as Linux 6.19' },
  '2.0.0': { writes: ['1.0.0', '2.0.0'], reads: '>=1.0.0 <3.0.0', hugetlb: false, what: 'memfd-v1 and memfd-v2, as mainline' },
  '3.0.0': { writes: ['1.0.0', '2.0.0', '3.0.0'], reads: '>=1.0.0 <4.0.0', hugetlb: true, what: 'adds the sparse memfd@3 format and hugeTLB memfds' },
  // 3.1.0 (the workspace package, not a tarball): writes 3.1.0 too, memfd@3 plus a header CRC-32.
};

function replaceOnce(text, re, by, what) {
  const hits = text.match(new RegExp(re.source, `${re.flags.replace('g', '')}g`));
  if (!hits || hits.length !== 1) throw new Error(`src/index.ts: expected exactly one ${what} line, found ${hits ? hits.length : 0}`);
  return text.replace(re, by);
}

/** src/index.ts with the release's defaults. */
function withDefaults(source, rel) {
  let s = source;
  s = replaceOnce(s, /^const DEFAULT_WRITES: readonly string\[\] = .*;$/m, `const DEFAULT_WRITES: readonly string[] = ${JSON.stringify(rel.writes).replaceAll('"', "'").replaceAll(',', ', ')};`, 'DEFAULT_WRITES');
  s = replaceOnce(s, /^const DEFAULT_READS = .*;$/m, `const DEFAULT_READS = '${rel.reads}';`, 'DEFAULT_READS');
  s = replaceOnce(s, /^const DEFAULT_HUGETLB = .*;$/m, `const DEFAULT_HUGETLB = ${rel.hugetlb};`, 'DEFAULT_HUGETLB');
  return s;
}

/** The package.json of the release: its version, no workspace-only fields, exports without the source condition. */
function releaseManifest(pkg, version, rel) {
  const strip = (entry) => Object.fromEntries(Object.entries(entry).filter(([k]) => k !== '@liveupdate/source'));
  const exports = Object.fromEntries(Object.entries(pkg.exports).map(([k, v]) => [k, typeof v === 'object' ? strip(v) : v]));
  const { devDependencies: _dev, scripts: _scripts, ...rest } = pkg;
  return { ...rest, version, description: `memfd and hugeTLB memfd preservation, release ${version}: ${rel.what}`, exports };
}

/** A standalone tsconfig from the workspace base: no project references, no maps pointing at sources that are not shipped. */
function releaseTsconfig() {
  const base = JSON.parse(readFileSync(path.join(root, 'tsconfig.base.json'), 'utf8'));
  return {
    compilerOptions: {
      ...base.compilerOptions, composite: false, incremental: false, declarationMap: false, sourceMap: false,
      rootDir: 'src', outDir: 'dist',
    },
    include: ['src'],
  };
}

function build(version) {
  const rel = RELEASES[version];
  if (!rel) throw new Error(`unknown release '${version}' (known: ${Object.keys(RELEASES).join(', ')})`);
  for (const dep of ['packages/sdk/dist/index.d.ts', 'packages/hw/dist/index.d.ts']) {
    if (!existsSync(path.join(root, dep))) throw new Error(`${dep} is missing: run \`npx tsc -b\` first`);
  }
  const work = mkdtempSync(path.join(tmpdir(), `liveupdate-plugin-memfd-${version}-`));
  try {
    cpSync(path.join(pluginDir, 'src'), path.join(work, 'src'), { recursive: true });
    const index = path.join(work, 'src/index.ts');
    writeFileSync(index, withDefaults(readFileSync(index, 'utf8'), rel));
    const pkg = JSON.parse(readFileSync(path.join(pluginDir, 'package.json'), 'utf8'));
    writeFileSync(path.join(work, 'package.json'), `${JSON.stringify(releaseManifest(pkg, version, rel), null, 2)}\n`);
    writeFileSync(path.join(work, 'tsconfig.json'), `${JSON.stringify(releaseTsconfig(), null, 2)}\n`);
    // The workspace's node_modules: @liveupdate/sdk and @liveupdate/hw resolve to their dist
    // declarations, semver and node to their @types.
    symlinkSync(path.join(root, 'node_modules'), path.join(work, 'node_modules'), 'dir');
    execFileSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', work], { stdio: 'inherit' });
    rmSync(path.join(work, 'node_modules'));
    mkdirSync(fixtures, { recursive: true });
    const out = execFileSync('npm', ['pack', '--json', '--pack-destination', fixtures], { cwd: work, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    const [packed] = JSON.parse(out);
    console.log(`${path.relative(root, path.join(fixtures, packed.filename))}: ${packed.size} bytes, ${packed.entryCount} files, ${packed.integrity}`);
    console.log(`  ${rel.what}; writes ${rel.writes.join(', ')}, reads '${rel.reads}', hugetlb ${rel.hugetlb}`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

const args = process.argv.slice(2);
if (args.length === 0) {
  console.error(`usage: make-release.mjs <${Object.keys(RELEASES).join('|')}>... | --all`);
  process.exit(2);
}
for (const v of args[0] === '--all' ? Object.keys(RELEASES) : args) build(v);
