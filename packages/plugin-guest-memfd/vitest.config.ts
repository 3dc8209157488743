import { defineProject } from 'vitest/config';

export default defineProject({
  ssr: { resolve: { conditions: ['@liveupdate/source'] } },
  test: { name: 'plugin-guest-memfd', include: ['test/**/*.test.ts'] },
});
