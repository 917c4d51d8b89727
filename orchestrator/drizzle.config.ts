import { defineConfig } from "drizzle-kit";

// Run from orchestrator/: `npm run db:generate -w orchestrator` after changing src/db/schema.ts.
export default defineConfig({
  dialect: "postgresql",
  schema: "./src/db/schema.ts",
  out: "./drizzle",
});
