// flock(2) for the runtime we are on. Node's fs has no flock, so the C library's is called
// through FFI: bun:ffi under Bun (also inside `bun build --compile` executables), Deno.dlopen
// under Deno (needs --allow-ffi, which -A gives). This is the one place that knows the
// difference; callers get a plain function or the reason there is none.
import { errorMessage } from "../errortext.ts";
import { denoGlobal, isBun } from "./detect.ts";

export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;
export const EWOULDBLOCK = 11; // Linux (EAGAIN)
export const EINTR = 4;

/** Calls flock(fd, operation): 0 on success, else the errno. `fd` is an OS descriptor (fs.openSync gives one in both runtimes). */
export type Flock = (fd: number, operation: number) => number;

export type FlockLoad = { flock: Flock } | { unavailable: string };

// glibc's name; on other C libraries and systems the caller falls back to a lock file.
const LIBC = "libc.so.6";

let loaded: Promise<FlockLoad> | undefined;

export function loadFlock(): Promise<FlockLoad> {
  loaded ??= load().catch((err) => ({ unavailable: `cannot load flock from ${LIBC}: ${errorMessage(err)}` }));
  return loaded;
}

async function load(): Promise<FlockLoad> {
  if (process.platform !== "linux") return { unavailable: `flock through FFI is wired for Linux only (this is ${process.platform})` };
  if (isBun()) {
    const ffi = await import("bun:ffi");
    const lib = ffi.dlopen(LIBC, {
      flock: { args: [ffi.FFIType.i32, ffi.FFIType.i32], returns: ffi.FFIType.i32 },
      __errno_location: { args: [], returns: ffi.FFIType.ptr },
    });
    const errno = () => ffi.read.i32(lib.symbols.__errno_location()!, 0);
    return { flock: (fd, op) => (lib.symbols.flock(fd, op) === 0 ? 0 : errno()) };
  }
  const Deno = denoGlobal();
  if (Deno?.dlopen) {
    const lib = Deno.dlopen(LIBC, {
      flock: { parameters: ["i32", "i32"], result: "i32" },
      __errno_location: { parameters: [], result: "pointer" },
    });
    const errno = () => new Deno.UnsafePointerView(lib.symbols.__errno_location()).getInt32(0) as number;
    return { flock: (fd, op) => (lib.symbols.flock(fd, op) === 0 ? 0 : errno()) };
  }
  return { unavailable: "no FFI in this runtime (neither Bun nor Deno)" };
}
