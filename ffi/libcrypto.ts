/**
 * SHA-256 from OpenSSL's libcrypto (`libcrypto.so.3`, package `libssl3`), which uses the CPU's
 * SHA extensions: measured here about 2.5× faster than `node:crypto` in Deno. The update call
 * runs on Deno's blocking thread pool, so hashing a file overlaps with reading it and leaves
 * the main thread free. {@link loadLibcrypto} returns undefined when the library is missing;
 * callers then fall back to `node:crypto`.
 *
 * @module
 */

/** The libcrypto functions volt calls. */
export const LIBCRYPTO_SYMBOLS = {
  // EVP_MD_CTX *EVP_MD_CTX_new (void);
  EVP_MD_CTX_new: { parameters: [], result: "pointer" },
  // void EVP_MD_CTX_free (EVP_MD_CTX *ctx);
  EVP_MD_CTX_free: { parameters: ["pointer"], result: "void" },
  // const EVP_MD *EVP_sha256 (void);
  EVP_sha256: { parameters: [], result: "pointer" },
  // int EVP_DigestInit_ex (EVP_MD_CTX *ctx, const EVP_MD *type, ENGINE *impl);
  EVP_DigestInit_ex: { parameters: ["pointer", "pointer", "pointer"], result: "i32" },
  // int EVP_DigestUpdate (EVP_MD_CTX *ctx, const void *d, size_t cnt);  (thread pool)
  EVP_DigestUpdate: {
    parameters: ["pointer", "buffer", "usize"],
    result: "i32",
    nonblocking: true,
  },
  // int EVP_DigestFinal_ex (EVP_MD_CTX *ctx, unsigned char *md, unsigned int *s);
  EVP_DigestFinal_ex: { parameters: ["pointer", "buffer", "pointer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The loaded libcrypto functions. */
export type Libcrypto = Deno.DynamicLibrary<typeof LIBCRYPTO_SYMBOLS>["symbols"];

let loaded: Libcrypto | null | undefined;

/**
 * libcrypto, loaded on first use (`$VOLT_LIBCRYPTO` overrides the file name); undefined when
 * it cannot be loaded.
 *
 * @example
 * ```ts
 * import { loadLibcrypto } from "./libcrypto.ts";
 * const lib = loadLibcrypto();
 * console.assert(lib === undefined || typeof lib.EVP_sha256 === "function");
 * ```
 */
export function loadLibcrypto(): Libcrypto | undefined {
  if (loaded === undefined) {
    try {
      const name = Deno.env.get("VOLT_LIBCRYPTO") ?? "libcrypto.so.3";
      loaded = Deno.dlopen(name, LIBCRYPTO_SYMBOLS).symbols;
    } catch {
      loaded = null;
    }
  }
  return loaded ?? undefined;
}

/**
 * An incremental SHA-256 digest in libcrypto. Call {@link Sha256.update} one at a time (await
 * each) and {@link Sha256.digest} once; the context is freed by `digest` or `dispose`.
 *
 * @example
 * ```ts
 * import { loadLibcrypto, Sha256 } from "./libcrypto.ts";
 * const lib = loadLibcrypto();
 * if (lib) {
 *   using h = new Sha256(lib);
 *   await h.update(new TextEncoder().encode("abc"));
 *   console.assert(h.digest().startsWith("ba7816bf"));
 * }
 * ```
 */
export class Sha256 implements Disposable {
  readonly #lib: Libcrypto;
  #ctx: Deno.PointerValue;

  constructor(lib: Libcrypto) {
    this.#lib = lib;
    this.#ctx = lib.EVP_MD_CTX_new();
    if (this.#ctx === null || lib.EVP_DigestInit_ex(this.#ctx, lib.EVP_sha256(), null) !== 1) {
      this[Symbol.dispose]();
      throw new Error("libcrypto: cannot start a SHA-256 digest");
    }
  }

  /** Adds bytes (hashed on a worker thread); `data` must not change until this resolves. */
  async update(data: Uint8Array): Promise<void> {
    if (this.#ctx === null) throw new Error("digest already finished");
    if (data.byteLength === 0) return;
    const ok = await this.#lib.EVP_DigestUpdate(
      this.#ctx,
      data as Uint8Array<ArrayBuffer>,
      BigInt(data.byteLength),
    );
    if (ok !== 1) throw new Error("libcrypto: EVP_DigestUpdate failed");
  }

  /** The digest as lower-case hex; frees the context. */
  digest(): string {
    return Array.from(this.digestBytes(), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  /** The 32 digest bytes; frees the context. */
  digestBytes(): Uint8Array {
    if (this.#ctx === null) throw new Error("digest already finished");
    const out = new Uint8Array(32);
    const ok = this.#lib.EVP_DigestFinal_ex(this.#ctx, out, null);
    this[Symbol.dispose]();
    if (ok !== 1) throw new Error("libcrypto: EVP_DigestFinal_ex failed");
    return out;
  }

  /** Frees the context (idempotent). */
  [Symbol.dispose](): void {
    if (this.#ctx !== null) this.#lib.EVP_MD_CTX_free(this.#ctx);
    this.#ctx = null;
  }
}
