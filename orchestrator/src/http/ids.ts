import { randomUUID } from "node:crypto";
import { DesiredState } from "@glance/shared";

/** The contract's id rule (1-64 of A-Z a-z 0-9 _ -): store, node and camera ids travel in MQTT payloads. */
export const Id = DesiredState.shape.storeId;

export const newId = (): string => randomUUID();
