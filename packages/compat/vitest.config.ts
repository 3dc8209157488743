import { defineProject } from 'vitest/config';

export default defineProject({
  ssr: { resolve: { conditions: ['@liveupdate/source'] } },
  test: { name: 'compat', include: ['test/**/*.test.ts'] },
});
