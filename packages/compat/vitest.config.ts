import { defineProject } from 'vitest/config';

export default defineProject({
  ssr: { resolve: { conditions: ['@liveupdate/source'] } },
  test: {
    name: 'compat',
    include: ['test/**/*.test.ts'],
    // The released tarballs live in node_modules, which vitest would hand to Node unprocessed:
    // their import of @liveupdate/sdk would then load the SDK's dist/, a second module instance
    // beside the src/ one the tests use. Inlined, they resolve it with the source condition.
    server: { deps: { inline: [/\/node_modules\/plugin-memfd-v[\d.]+\//] } },
  },
});
