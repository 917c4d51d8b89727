export * from "./contract.ts";
export * from "./crypto.ts";
export * from "./errors.ts";
export * from "./manifest.ts";
