/**
 * The root README stays true: its quick start is exactly the two one-liners, its exit codes
 * are the CLI's, and its "write your own handler" code is the fixture this test runs.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { EXIT, EXIT_CODE_MEANINGS, EXIT_CODES_HELP } from '../src/exit.js';

const readme = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');
const fixture = readFileSync(new URL('./fixtures/write-your-own-handler.ts', import.meta.url), 'utf8');

describe('README', () => {
  it('quick start is exactly `npm ci && npm run demo` and `npm ci && npm test`', () => {
    const section = readme.split('## Quick start')[1]?.split('\n## ')[0] ?? '';
    const blocks = [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => (m[1] ?? '').trim());
    expect(blocks).toEqual(['npm ci && npm run demo', 'npm ci && npm test']);
  });

  it('documents every exit code the CLI uses, in the very words of `liveupdate --help`', () => {
    for (const code of Object.values(EXIT)) {
      expect(readme).toContain(`| ${code} | ${EXIT_CODE_MEANINGS[code]} |`);
      expect(EXIT_CODES_HELP).toContain(`  ${code}  ${EXIT_CODE_MEANINGS[code]}`);
    }
  });

  it('shows the handler walkthrough exactly as the tested fixture has it', () => {
    expect(readme).toContain(`\`\`\`ts\n${fixture}\`\`\``);
  });

  it('the handler walkthrough runs: upgrade and rollback keep every invariant', async () => {
    await expect(import('./fixtures/write-your-own-handler.js')).resolves.toHaveProperty('counter');
  });
});
