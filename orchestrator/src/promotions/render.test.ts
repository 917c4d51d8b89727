import { describe, expect, it } from "vitest";
import { renderMessage } from "./render.ts";

describe("promotion messages", () => {
  it("greets a member by first name or full name", () => {
    expect(renderMessage("Welcome back, {firstName} — 10% off today", "Barack Obama")).toBe(
      "Welcome back, Barack — 10% off today",
    );
    expect(renderMessage("{displayName}, your order is ready", "  Rose  Leslie ")).toBe(
      "Rose  Leslie, your order is ready",
    );
  });

  it("reads naturally for an unknown visitor, with the name and its comma gone", () => {
    expect(renderMessage("Welcome, {firstName}! Join the club", null)).toBe("Welcome! Join the club");
    expect(renderMessage("Hi {firstName} — coffee on us", null)).toBe("Hi — coffee on us");
  });
});
