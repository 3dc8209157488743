// Lint: eslint with typescript-eslint's recommended rules, over every workspace package and
// example (packages/*, examples/*), their tests and the benches. Run by `npm test` (npm run lint).
// The rule set is the recommended one, so a new package passes with little work.
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

export default defineConfig(
  { ignores: ['**/dist/**', '**/node_modules/**', '**/coverage/**', '.scratch/**', 'out/**'] },
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    files: ['**/*.{js,mjs}'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly', URL: 'readonly', TextEncoder: 'readonly', TextDecoder: 'readonly', performance: 'readonly' } },
  },
  {
    rules: {
      // `_`-prefixed names are deliberately unused (a destructured field left out, a callback argument).
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' }],
    },
  },
);
