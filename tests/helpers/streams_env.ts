/**
 * A throwaway volt setup for the stream tests: a temp dir with a storage.cfg holding a
 * directory storage `local` (every content type), a second one `other`, and `chain` (a storage
 * with `snapshot-as-volume-chain`), plus helpers to run volt, pipelines and look at files.
 *
 * @module
 */

import { sh, TempDir, volt, voltCommand, type VoltResult } from "./volt.ts";

const ALL_CONTENT = "images,rootdir,iso,vztmpl,backup,snippets,import";

/** Quotes a word for `sh -c`. */
export function shQuote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/** The volt argv as one shell word list. */
export function voltShell(args: string[]): string {
  return [...voltCommand(), ...args].map(shQuote).join(" ");
}

/** A temp volt configuration with storages `local`, `other` and `chain`. */
export class StreamEnv implements AsyncDisposable {
  readonly tmp: TempDir;
  readonly env: Record<string, string>;

  constructor() {
    this.tmp = new TempDir("volt-streams-");
    const cfg = [
      `dir: local\n\tpath ${this.tmp.join("local")}\n\tcontent ${ALL_CONTENT}\n`,
      `dir: other\n\tpath ${this.tmp.join("other")}\n\tcontent ${ALL_CONTENT}\n`,
      `dir: chain\n\tpath ${
        this.tmp.join("chain")
      }\n\tcontent images\n\tsnapshot-as-volume-chain 1\n`,
    ].join("\n");
    Deno.writeTextFileSync(this.tmp.join("storage.cfg"), cfg);
    this.env = { VOLT_CONFIG: this.tmp.join("storage.cfg"), VOLT_HOME: this.tmp.join("home") };
  }

  /** Runs volt with this configuration. */
  volt(args: string[], stdin?: Uint8Array | string): Promise<VoltResult> {
    return volt(args, { env: this.env, stdin });
  }

  /** Runs volt and fails the test with its stderr unless it exits 0. */
  async ok(args: string[], stdin?: Uint8Array | string): Promise<VoltResult> {
    const r = await this.volt(args, stdin);
    if (r.code !== 0) throw new Error(`volt ${args.join(" ")} failed (${r.code}): ${r.stderr}`);
    return r;
  }

  /** Runs volt and returns its stdout as bytes (an export to `-`); throws unless it exits 0. */
  async bytes(args: string[]): Promise<Uint8Array> {
    const [cmd, ...rest] = voltCommand();
    const out = await new Deno.Command(cmd, {
      args: [...rest, ...args],
      env: { NO_COLOR: "1", ...this.env },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (out.code !== 0) {
      throw new Error(`volt ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
    }
    return out.stdout;
  }

  /** Runs a shell command line with this configuration in the environment. */
  async shell(script: string): Promise<VoltResult> {
    const out = await new Deno.Command("sh", {
      args: ["-c", script],
      env: { NO_COLOR: "1", ...this.env },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  }

  /** `volt export SRC FMT - | volt import DST FMT -` through a real pipe. */
  pipe(
    source: string,
    target: string,
    format: string,
    exportFlags: string[] = [],
    importFlags: string[] = [],
  ): Promise<VoltResult> {
    return this.shell(
      `${voltShell(["export", source, format, "-", ...exportFlags])} | ${
        voltShell(["import", target, format, "-", ...importFlags])
      }`,
    );
  }

  /** The file of a volume of storage `local` (or another storage). */
  path(volname: string, storage = "local"): string {
    const base = this.tmp.join(storage);
    const m = /^(\d+)\/(.+)$/.exec(volname);
    if (m) return `${base}/images/${m[1]}/${m[2]}`;
    const [vtype, name] = volname.split("/");
    const dirs: Record<string, string> = {
      iso: "template/iso",
      vztmpl: "template/cache",
      backup: "dump",
      snippets: "snippets",
      import: "import",
    };
    return `${base}/${dirs[vtype]}/${name}`;
  }

  /** Writes `bytes` as the file of volume `volname` (creating its directory). */
  put(volname: string, bytes: Uint8Array, storage = "local"): string {
    const p = this.path(volname, storage);
    Deno.mkdirSync(p.slice(0, p.lastIndexOf("/")), { recursive: true });
    Deno.writeFileSync(p, bytes);
    return p;
  }

  /** A path in the temp dir (outside the storages). */
  join(...parts: string[]): string {
    return this.tmp.join(...parts);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.tmp[Symbol.asyncDispose]();
  }
}

/** Does a file or directory exist? */
export function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Files whose names start with `.volt-import` or that are left in a directory. */
export function listDir(path: string): string[] {
  try {
    return [...Deno.readDirSync(path)].map((e) => e.name).sort();
  } catch {
    return [];
  }
}

/** Deterministic non-zero bytes: byte i is `(i * 7 + seed) % 251 + 1`. */
export function pattern(length: number, seed = 0): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = ((i * 7 + seed) % 251) + 1;
  return out;
}

/** The 8 little-endian bytes of `n`. */
export function le64(n: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n), true);
  return out;
}

/** Concatenates byte arrays. */
export function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Bytes allocated on disk for a file. */
export function allocated(path: string): number {
  const st = Deno.statSync(path);
  return (st.blocks ?? 0) * 512;
}

/** Runs a program and returns its stdout as bytes; throws on failure. */
export async function shBytes(cmd: string, args: string[]): Promise<Uint8Array> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (out.code !== 0) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return out.stdout;
}

export { sh };
