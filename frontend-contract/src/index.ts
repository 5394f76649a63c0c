export * from "./client.js";
export * from "./flows.js";
