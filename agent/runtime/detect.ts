// Which runtime the agent runs on: Bun (also inside a `bun build --compile` executable) or
// Deno. Where the two differ (serving HTTP, FFI, a fetch's TLS options, a native CRC-32, a
// watcher that drops events) code asks here instead of looking at the globals itself, so the
// rule of how a runtime is told apart lives in one place (a plugin may import this module).

/** The members of Deno's global the agent uses (the project builds against Bun's types only). */
export interface DenoGlobal {
  execPath(): string;
  serve?(
    options: Record<string, unknown>,
    handler: (req: Request, info: { remoteAddr: { hostname: string } }) => Response | Promise<Response>,
  ): { shutdown(): Promise<void> };
  dlopen?(path: string, symbols: Record<string, { parameters: string[]; result: string }>): {
    symbols: Record<string, (...args: any[]) => any>;
  };
  UnsafePointerView: new (pointer: unknown) => { getInt32(offset?: number): number };
  createHttpClient?(options: { caCerts?: string[] }): { close(): void };
}

export type RuntimeName = "bun" | "deno" | "node";

const globals = globalThis as { Bun?: typeof Bun; Deno?: DenoGlobal };

/** Bun's global, or undefined under another runtime. */
export function bunGlobal(): typeof Bun | undefined {
  return globals.Bun;
}

/** Deno's global, or undefined under another runtime. */
export function denoGlobal(): DenoGlobal | undefined {
  return globals.Deno;
}

export function isBun(): boolean {
  return globals.Bun !== undefined;
}

export function isDeno(): boolean {
  return globals.Deno !== undefined;
}

/** "bun", "deno", or "node" for anything else (benchmarks label their results with it). */
export function runtimeName(): RuntimeName {
  return isDeno() ? "deno" : isBun() ? "bun" : "node";
}
