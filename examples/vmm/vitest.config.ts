import { defineProject } from 'vitest/config';

export default defineProject({
  ssr: { resolve: { conditions: ['@liveupdate/source'] } },
  test: { name: 'example-vmm', include: ['test/**/*.test.ts'] },
});
