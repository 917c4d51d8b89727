export * from "./proto.ts";
