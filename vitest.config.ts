import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["**/src/**/*.test.ts", "test/**/*.test.ts"],
    exclude: ["**/node_modules/**", "models/dist/**"],
    testTimeout: 120_000,
    hookTimeout: 180_000,
    pool: "forks",
  },
});
