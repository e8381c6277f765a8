// npm run package: dist/cybexp-agent_<version>_amd64.deb, built with dpkg-deb from packaging/:
// /usr/bin/cybexp-agent (the compiled executable, built first when missing or older than the
// source), the systemd unit, the commented /etc/cybexp-agent/agent.config.toml (a conffile)
// and the maintainer scripts that create the cybexp-agent user.
// Options: --binary FILE (use this executable), --out DIR (default dist).
import { spawnSync } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";

const root = resolve(import.meta.dirname ?? new URL(".", import.meta.url).pathname, "..");
const { values } = parseArgs({ options: { binary: { type: "string" }, out: { type: "string" } } });
const version = (JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version: string }).version;
const outDir = resolve(values.out ?? join(root, "dist"));
const fail = (msg: string): never => {
  console.error(`package: ${msg}`);
  process.exit(1);
};

if (spawnSync("dpkg-deb", ["--version"]).status !== 0) fail("dpkg-deb is needed (Debian package dpkg)");

/** Newest modification time of the files the executable is built from. */
function newestSource(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) t = Math.max(t, newestSource(p));
    else if (/\.(ts|json|toml)$/.test(e.name) && !/\.test\.ts$/.test(e.name)) t = Math.max(t, statSync(p).mtimeMs);
  }
  return t;
}

let binary = values.binary ? resolve(values.binary) : join(root, "dist", "cybexp-agent");
if (!values.binary) {
  const sources = Math.max(...["agent", "plugins", "packaging"].map((d) => newestSource(join(root, d))), statSync(join(root, "package.json")).mtimeMs);
  if (!existsSync(binary) || statSync(binary).mtimeMs < sources) {
    console.log("package: building dist/cybexp-agent first");
    const b = spawnSync(process.execPath, [join(root, "scripts", "build.ts")], { cwd: root, stdio: "inherit" });
    if (b.status !== 0) fail("the build failed");
  }
}
if (!existsSync(binary)) fail(`no executable at ${binary}`);
const ran = spawnSync(binary, ["version"], { encoding: "utf8" });
if (ran.status !== 0 || !ran.stdout.includes(version)) fail(`${binary} is not cybexp-agent ${version}: ${ran.stdout}${ran.stderr}`);

/** libc6 (>= the newest GLIBC_x.y symbol version the executable needs), when readelf can tell. */
function libcDepends(file: string): string {
  const r = spawnSync("readelf", ["--version-info", "--wide", file], { encoding: "utf8", maxBuffer: 64 << 20 });
  const versions = r.status === 0 ? [...r.stdout.matchAll(/GLIBC_(\d+)\.(\d+)/g)].map((m) => [Number(m[1]), Number(m[2])] as const) : [];
  if (!versions.length) return "libc6";
  const [maj, min] = versions.reduce((a, b) => (b[0] > a[0] || (b[0] === a[0] && b[1] > a[1]) ? b : a));
  return `libc6 (>= ${maj}.${min})`;
}

const stage = mkdtempSync(join(tmpdir(), "cybexp-agent-deb-"));
try {
  const put = (from: string, to: string, mode: number) => {
    const dest = join(stage, to);
    mkdirSync(join(dest, ".."), { recursive: true });
    copyFileSync(from, dest);
    chmodSync(dest, mode);
  };
  put(binary, "usr/bin/cybexp-agent", 0o755);
  put(join(root, "packaging", "cybexp-agent.service"), "lib/systemd/system/cybexp-agent.service", 0o644);
  put(join(root, "packaging", "agent.config.toml"), "etc/cybexp-agent/agent.config.toml", 0o640);
  put(join(root, "README.md"), "usr/share/doc/cybexp-agent/README.md", 0o644);
  for (const script of ["postinst", "prerm", "postrm"]) put(join(root, "packaging", "debian", script), `DEBIAN/${script}`, 0o755);
  put(join(root, "packaging", "debian", "conffiles"), "DEBIAN/conffiles", 0o644);

  const installedKiB = Math.ceil(
    ["usr/bin/cybexp-agent", "lib/systemd/system/cybexp-agent.service", "etc/cybexp-agent/agent.config.toml", "usr/share/doc/cybexp-agent/README.md"]
      .reduce((n, f) => n + statSync(join(stage, f)).size, 0) / 1024,
  );
  const control = readFileSync(join(root, "packaging", "debian", "control"), "utf8")
    .replace("@VERSION@", version)
    .replace("@INSTALLED_SIZE@", String(installedKiB))
    .replace("@DEPENDS@", libcDepends(binary));
  writeFileSync(join(stage, "DEBIAN", "control"), control, { mode: 0o644 });
  chmodSync(stage, 0o755);
  for (const d of ["usr", "usr/bin", "usr/share", "usr/share/doc", "usr/share/doc/cybexp-agent", "lib", "lib/systemd", "lib/systemd/system", "etc", "etc/cybexp-agent", "DEBIAN"])
    chmodSync(join(stage, d), 0o755);

  mkdirSync(outDir, { recursive: true });
  const deb = join(outDir, `cybexp-agent_${version}_amd64.deb`);
  const r = spawnSync("dpkg-deb", ["--root-owner-group", "-Zgzip", "--build", stage, deb], { encoding: "utf8" });
  if (r.status !== 0) fail(`dpkg-deb failed: ${r.stderr}${r.stdout}`);
  console.log(`built ${deb} (${(statSync(deb).size / 1048576).toFixed(1)} MiB)`);
} finally {
  rmSync(stage, { recursive: true, force: true });
}
