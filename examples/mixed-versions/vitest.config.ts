import { defineProject } from 'vitest/config';

export default defineProject({
  ssr: { resolve: { conditions: ['@liveupdate/source'] } },
  test: {
    name: 'example-mixed-versions',
    include: ['test/**/*.test.ts'],
    // The released plugin-memfd tarballs (through @liveupdate/compat) must share the SDK the
    // example uses, so vitest processes them instead of handing them to Node as-is.
    server: { deps: { inline: [/\/node_modules\/plugin-memfd-v[\d.]+\//] } },
  },
});
