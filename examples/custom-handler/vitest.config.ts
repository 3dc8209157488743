import { defineProject } from 'vitest/config';

export default defineProject({
  ssr: { resolve: { conditions: ['@liveupdate/source'] } },
  test: { name: 'example-custom-handler', include: ['test/**/*.test.ts'] },
});
