export * from "./proto.ts";
export * from "./rewrite.ts";
