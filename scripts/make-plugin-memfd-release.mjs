#!/usr/bin/env node
// Rebuild a released version of @liveupdate/plugin-memfd as the tarball `npm pack` makes, into
// fixtures/liveupdate-plugin-memfd-<version>.tgz:
//
//   node scripts/make-plugin-memfd-release.mjs 1.0.0     (or 2.0.0, 3.0.0, 3.1.0, --all)
//
// (The workspace package itself, 4.0.0, is not a tarball.)
//
// What goes in: packages/plugin-memfd/src as it stood at the release's source commit (the git
// tag @liveupdate/plugin-memfd@<version>, or the commit recorded below when tags were not
// fetched), with the release's defaults written into the three DEFAULT_* lines of src/index.ts;
// then today's surface for tools is added on top: src/tools/, and the files it needs that the
// source commit does not have yet (src/crc32.ts) or has an older, smaller copy of
// (src/abi/memfd.ts, which only ever gains layouts: a release's handler never reads them),
// and the `tools:` line in src/index.ts. So a release behaves as it shipped (its handler, file
// type and page cache are the source commit's) and speaks to `liveupdate` through plugin.tools.
// package.json gets the release's version and loses what only makes sense inside the workspace
// (devDependencies, scripts, the @liveupdate/source export condition, src/ in files: a tarball
// ships dist/ only). It is compiled by the workspace's tsc against the workspace's @liveupdate/sdk and
// @liveupdate/hw declarations (run `npx tsc -b` first) in a temporary directory, then packed.
// The same inputs give the same bytes: tsc output is deterministic and npm pack writes fixed
// mtimes.
//
// A rebuilt tarball must be reinstalled, or the lockfile's integrity no longer matches it and
// `npm ci` fails EINTEGRITY: the tarballs are root devDependencies under the aliases
// plugin-memfd-v1, -v2, -v3, -v3.1, so
//   rm -rf node_modules/plugin-memfd-v1 && npm install plugin-memfd-v1@file:fixtures/liveupdate-plugin-memfd-1.0.0.tgz -D
// (or delete their four entries from package-lock.json and run `npm install`).
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const pluginDir = path.join(root, 'packages/plugin-memfd');
const fixtures = path.join(root, 'fixtures');

/** The commit the first three releases were built from (before the 3.1 header checksum and the stricter header checks). */
const FIRST_RELEASES_COMMIT = 'e6f97007fae51289432abc467f4af90034b35a5e';

/** The commit release 3.1.0 was built from (the header CRC-32 of memfd@3.1.0; before 3.2 and 4.x). */
const RELEASE_3_1_COMMIT = '99211de25e332c3e0866bb433695f299a6480cad';

/** What each release wrote, read and handled, and the commit its sources come from. */
export const RELEASES = {
  '1.0.0': { writes: ['1.0.0'], reads: '^1.0.0', hugetlb: false, what: 'memfd-v1 only, as Linux 6.19', commit: FIRST_RELEASES_COMMIT },
  '2.0.0': { writes: ['1.0.0', '2.0.0'], reads: '>=1.0.0 <3.0.0', hugetlb: false, what: 'memfd-v1 and memfd-v2, as mainline', commit: FIRST_RELEASES_COMMIT },
  '3.0.0': { writes: ['1.0.0', '2.0.0', '3.0.0'], reads: '>=1.0.0 <4.0.0', hugetlb: true, what: 'adds the sparse memfd@3 format and hugeTLB memfds', commit: FIRST_RELEASES_COMMIT },
  '3.1.0': { writes: ['1.0.0', '2.0.0', '3.0.0', '3.1.0'], reads: '>=1.0.0 <4.0.0', hugetlb: true, what: 'adds memfd@3.1.0, the sparse format with a header CRC-32', commit: RELEASE_3_1_COMMIT },
  // 4.0.0 (the workspace package, not a tarball): writes 3.2.0 and 4.0.0 too, reads '>=1.0.0 <5.0.0'.
};

function replaceOnce(text, re, by, what) {
  const hits = text.match(new RegExp(re.source, `${re.flags.replace('g', '')}g`));
  if (!hits || hits.length !== 1) throw new Error(`src/index.ts: expected exactly one ${what} line, found ${hits ? hits.length : 0}`);
  return text.replace(re, by);
}

/** src/index.ts with the release's defaults and today's tools attached. */
function withDefaults(source, rel) {
  let s = source;
  if (!s.includes('memfdTools(')) {
    s = replaceOnce(s, /^(import \{ PLUGIN_VERSION \} from '\.\/version\.js';)$/m, "import { memfdTools } from './tools/index.js';\n$1", 'PLUGIN_VERSION import');
    s = replaceOnce(s, /^(\s+)(flbs: withHugetlb \? .*,)$/m, '$1$2\n$1tools: memfdTools({ hugetlb: withHugetlb }),', 'flbs');
  }
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
  // files: dist only (the workspace package also ships src/ for its source maps; a release has no maps).
  return { ...rest, version, description: `memfd and hugeTLB memfd preservation, release ${version}: ${rel.what}`, exports, files: ['dist'] };
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
    // The release's sources: its tag when present, else the recorded commit.
    const tag = `@liveupdate/plugin-memfd@${version}`;
    let ref = rel.commit;
    try { execFileSync('git', ['rev-parse', '--verify', '--quiet', `refs/tags/${tag}`], { cwd: root, stdio: 'ignore' }); ref = tag; } catch { /* no tag: the commit */ }
    const archive = execFileSync('git', ['archive', '--format=tar', ref, 'packages/plugin-memfd/src'], { cwd: root, maxBuffer: 64 << 20 });
    execFileSync('tar', ['-x', '-C', work, '--strip-components=2'], { input: archive });
    // Today's surface for tools, and what it needs that the release's sources lack.
    cpSync(path.join(pluginDir, 'src/tools'), path.join(work, 'src/tools'), { recursive: true });
    for (const f of ['src/abi/memfd.ts', 'src/abi/memfd-v4.ts', 'src/abi/memfd-decode.ts', 'src/crc32.ts']) cpSync(path.join(pluginDir, f), path.join(work, f));
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
    console.log(`  ${rel.what}; writes ${rel.writes.join(', ')}, reads '${rel.reads}', hugetlb ${rel.hugetlb}; sources ${ref}`);
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
