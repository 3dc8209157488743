import { defineConfig } from 'vitest/config';

export default defineConfig({
  ssr: { resolve: { conditions: ['@liveupdate/source'] } },
  test: {
    projects: ['packages/*', 'examples/*'],
  },
});
