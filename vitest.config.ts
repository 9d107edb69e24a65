import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 300_000,
    pool: 'forks',
    // 2-core CI machines: two workers keep the suite bounded without oversubscribing.
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
  },
});
