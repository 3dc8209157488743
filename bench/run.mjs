#!/usr/bin/env node
// Run one benchmark: `npm run bench -- <name> [args...]` runs bench/<name>.ts with tsx. The
// root script builds first (tsc -b), and the packages resolve to their compiled dist/ (no
// source condition here), so a benchmark measures what users run. Node flags may come before
// the name: `npm run bench -- --cpu-prof kho`.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const available = readdirSync(here).filter((f) => f.endsWith('.ts')).map((f) => f.slice(0, -3)).sort();
const argv = process.argv.slice(2);
const nodeFlags = [];
while (argv.length > 0 && argv[0].startsWith('--')) nodeFlags.push(argv.shift());
const name = argv.shift();

if (!name || !available.includes(name)) {
  console.error(`usage: npm run bench -- [node flags] <name> [args...]\n  benchmarks: ${available.join(', ') || '(none)'}`);
  process.exit(name ? 1 : 2);
}
for (const pkg of ['hw', 'runtime', 'plugin-mshv']) {
  const dist = path.join(here, '..', 'packages', pkg, 'dist', 'index.js');
  if (!existsSync(dist)) {
    console.error(`${dist} is missing: run \`npx tsc -b\` first (npm run bench does)`);
    process.exit(1);
  }
}

const script = path.join(here, `${name}.ts`);
const r = spawnSync(process.execPath, [...nodeFlags, '--import', 'tsx', script, ...argv], { stdio: 'inherit' });
if (r.error) throw r.error;
process.exit(r.status ?? 1);
