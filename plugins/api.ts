/**
 * The storage plugin API. A plugin is an ES module with a named export `plugin` that satisfies
 * {@link StoragePlugin}; the built-in directory storage (`plugins/dir.ts`) is written against
 * exactly this interface. The lifecycle, versioning rules and a worked example are in
 * `docs/plugins.md`.
 *
 * Sizes are bytes (Proxmox uses KiB); volume names are storage-relative (`100/vm-100-disk-0.raw`);
 * a volume id is `storeid:volname`.
 *
 * @module
 */

import type { BackupProvider } from "./backup_api.ts";

/**
 * The API version volt implements. A plugin declares the version it was written against in
 * `api`; volt loads it when `APIVER - APIAGE <= api <= APIVER` (as Proxmox does), warning when
 * `api < APIVER`. Adding optional methods bumps both; changing a method bumps APIVER only.
 */
export const APIVER = 1;
/** How many older API versions volt still loads. */
export const APIAGE = 0;

/** What a storage holds, as Proxmox's `content` option names it. */
export type ContentType =
  | "images"
  | "rootdir"
  | "iso"
  | "vztmpl"
  | "backup"
  | "snippets"
  | "import";

/** Every content type, in Proxmox's order. */
export const CONTENT_TYPES: readonly ContentType[] = [
  "images",
  "rootdir",
  "iso",
  "vztmpl",
  "backup",
  "snippets",
  "import",
];

/** A parsed option value. `prune` options are maps like `{ "keep-daily": 7 }`. */
export type OptionValue = string | number | boolean | string[] | Record<string, number>;

/** The schema of one storage option (a line in storage.cfg). */
export interface OptionSchema {
  /**
   * `string`; `boolean` (`0`/`1`, a key alone means 1); `integer`; `enum` (one of `values`);
   * `list` (comma-separated, each one of `values` when given); `prune` (Proxmox's
   * `keep-last=N,keep-daily=N,…`).
   */
  type: "string" | "boolean" | "integer" | "enum" | "list" | "prune";
  description: string;
  /** Allowed values for `enum` and `list`. */
  values?: readonly string[];
  /** Bounds for `integer`. */
  minimum?: number;
  maximum?: number;
  /** The storage cannot be used without it. */
  required?: boolean;
  /** Cannot be changed once the storage holds data (checked by the plugin). */
  fixed?: boolean;
  /** Value used when the option is absent. */
  default?: OptionValue;
  /** Another accepted name for this option (e.g. `external-snapshots`). */
  alias?: string;
}

/** A configured storage, its options parsed and checked against its plugin's schema. */
export interface Storage {
  /** Storage id, the part before `:` in a volume id. */
  id: string;
  /** Storage type, the plugin's `type`. */
  type: string;
  /** Options by canonical name (aliases resolved), defaults not filled in. */
  options: Record<string, OptionValue>;
}

/** What a volume name says about the volume. */
export interface VolumeName {
  vtype: ContentType;
  /** File name part (`vm-100-disk-0.qcow2`, `x.iso`). */
  name: string;
  /** Owning guest, when the name carries one. */
  vmid?: number;
  /** Data format: raw, qcow2, vmdk, subvol; for import volumes ova, ovf, …. */
  format: string;
  /** A `base-` template image. */
  isBase?: boolean;
}

/** One volume as `volt list` shows it. */
export interface VolumeInfo {
  volid: string;
  format: string;
  /** Virtual size in bytes (0 where it has none, e.g. a subvolume). */
  size: number;
  /** Bytes allocated on disk. */
  used: number;
  vmid?: number;
  content: ContentType;
  /** Creation (or last change) time, seconds since the epoch. */
  ctime: number;
  /** Volume id of the volume this one depends on (a backing image, a parent backup). */
  parent?: string;
  /** For backups: the guest type (`qemu`, `lxc`). */
  subtype?: string;
  /** For backups: free text (`volt notes`). */
  notes?: string;
  /** For backups: cannot be freed or pruned (`volt protect`). */
  protected?: boolean;
  /** For backups: how many backups this one's restore reads (1 for a full backup). */
  chainLength?: number;
}

/** Volume attributes of {@link StoragePlugin.getVolumeAttribute} (Proxmox's names). */
export type VolumeAttribute = "notes" | "protected";

/** Size facts of one volume. */
export interface VolumeSize {
  format: string;
  /** Virtual size in bytes. */
  size: number;
  /** Bytes allocated on disk. */
  used: number;
  /** Backing file name as recorded in the image, if any. */
  backing?: string;
}

/** Capacity of a storage. */
export interface StorageStatus {
  active: boolean;
  total: number;
  used: number;
  avail: number;
}

/** Filter for {@link StoragePlugin.listVolumes}. */
export interface ListFilter {
  vmid?: number;
  content?: ContentType[];
}

/**
 * One snapshot of a volume, or `current` (the volume itself), as
 * {@link StoragePlugin.volumeSnapshotList} returns it.
 */
export interface SnapshotInfo {
  /** Snapshot name; `current` for the volume itself. */
  name: string;
  /** Position: 1 is the oldest snapshot; `current` comes last. */
  order: number;
  /** Local path of the file holding it (for internal snapshots: the volume's file). */
  file?: string;
  /** Volume id of that file (`local:100/snap-s1-vm-100-disk-0.qcow2` for a chain). */
  volid?: string;
  /** The snapshot it is based on (chains only). */
  parent?: string;
  /** The snapshot or `current` based on it (chains only). */
  child?: string;
  /** Virtual size in bytes, when known. */
  size?: number;
  /** Creation time, seconds since the epoch (absent for `current`). */
  ctime?: number;
}

/** Something {@link StoragePlugin.volumeCheck} found. */
export interface VolumeCheckProblem {
  /** `error`: needs repair before snapshot operations continue; `warning`: informational. */
  severity: "error" | "warning";
  /** Stable key, e.g. `unfinished-delete`, `leftover-link`, `leaked-clusters`, `unsafe-chain`. */
  code: string;
  /** The file concerned, relative to the volume's directory. */
  file?: string;
  /** One line for the user. */
  message: string;
  /** What a repair does about it; absent when volt leaves it alone. */
  repair?: string;
  /** With `repair`: whether it was repaired. */
  repaired?: boolean;
  /** Why the repair failed. */
  repairError?: string;
}

/** The result of {@link StoragePlugin.volumeCheck}. */
export interface VolumeCheckReport {
  volid: string;
  /** No error is left (after repairing, when asked to). */
  ok: boolean;
  /** In the order found; with a repair, the repaired ones first. */
  problems: VolumeCheckProblem[];
}

/** Where a plugin writes messages meant for the user (stderr in the CLI). */
export type LogFunction = (level: "info" | "warn" | "err", message: string) => void;

/**
 * A piece of an import stream: bytes, or a run of zero bytes the reader already knows to be
 * zero (a hole in a sparse source), which an importer can skip instead of writing.
 */
export type StreamChunk = { data: Uint8Array } | { zeros: number };

/**
 * Where {@link StoragePlugin.volumeExport} writes its stream: stdout, a file, or the
 * in-process channel of `volt migrate`. Byte layouts of every format: `docs/formats.md`.
 * Implementations in `lib/streams/` pick the cheapest way per destination (`splice` into a
 * pipe, holes in a file).
 */
export interface StreamSink {
  /** Appends bytes; the caller may reuse `bytes` once the promise resolves. */
  write(bytes: Uint8Array): Promise<void>;
  /** Appends `length` zero bytes (a hole of the source). */
  writeZeros(length: number): Promise<void>;
  /**
   * Appends `length` bytes of the open file `fd` (a libc descriptor, see
   * `lib/streams/fd.ts`) starting at `offset`, without changing the descriptor's offset.
   */
  writeRange(fd: number, offset: number, length: number): Promise<void>;
  /**
   * 1 when the sink is this process's stdout, so a child process (tar) may write the rest of
   * the stream into it directly; undefined otherwise.
   */
  readonly fd?: number;
}

/** Where {@link StoragePlugin.volumeImport} reads its stream: stdin, a file, or a channel. */
export interface StreamSource {
  /** Reads exactly `length` bytes, fewer only when the stream ends first. */
  readExact(length: number): Promise<Uint8Array>;
  /**
   * The rest of the stream. A `data` chunk is only valid until the next chunk is requested.
   */
  chunks(): AsyncIterable<StreamChunk>;
  /**
   * 0 when the rest of the stream can be read straight from this process's stdin (nothing
   * was read ahead), so a child process (tar) may take it over; undefined otherwise.
   */
  readonly fd?: number;
}

/** Options of {@link StoragePlugin.volumeExport} and {@link StoragePlugin.volumeExportFormats}. */
export interface VolumeExportOptions {
  /** Carry the volume's snapshots (qcow2/vmdk files as they are). */
  withSnapshots?: boolean;
  /** Fires on SIGINT/SIGTERM: stop and throw. */
  signal?: AbortSignal;
  log?: LogFunction;
}

/** Options of {@link StoragePlugin.volumeImport} and {@link StoragePlugin.volumeImportFormats}. */
export interface VolumeImportOptions {
  /** The stream carries snapshots (qcow2/vmdk files as they are). */
  withSnapshots?: boolean;
  /** When the target name is taken, import into the next free disk name (images, rootdir). */
  allowRename?: boolean;
  /** Fires on SIGINT/SIGTERM: free what was allocated and throw. */
  signal?: AbortSignal;
  log?: LogFunction;
}

/**
 * A storage plugin. Required members are listed in {@link REQUIRED_METHODS}; the rest are
 * optional and volt says "storage type X does not support …" when one is missing.
 */
export interface StoragePlugin {
  /** Storage type name as written in storage.cfg (`dir`, `backup-dir`). */
  readonly type: string;
  /** The API version the plugin was written against: see {@link APIVER}. */
  readonly api: number;
  /** One line for `volt plugins`. */
  readonly description?: string;
  /** Content types this type can hold, and the default when `content` is not set. */
  readonly content: { supported: readonly ContentType[]; default: readonly ContentType[] };
  /** Image formats and the default (`format` option). Omit if the storage holds no images. */
  readonly formats?: { supported: readonly string[]; default: string };
  /** The options this type accepts in storage.cfg. `content`, `disable`, `shared`, `nodes` are always accepted. */
  readonly options: Readonly<Record<string, OptionSchema>>;
  /** Capabilities: `backup-provider` (has {@link StoragePlugin.newBackupProvider}). */
  readonly features?: readonly string[];

  /** Parses a volume name; throws `TypeError` naming it when it is not valid for this type. */
  parseVolname(volname: string): VolumeName;
  /** Local path of a volume (file or directory). */
  path(storage: Storage, volname: string): string;
  /** Makes the storage usable (create directories, check mounts). Idempotent. */
  activateStorage(storage: Storage): Promise<void>;
  /** Capacity; `active: false` when the storage cannot be reached. */
  status(storage: Storage): Promise<StorageStatus>;
  /**
   * Allocates a new image or subvolume for `vmid` and returns its volume name. `name` is the
   * file name wanted, or undefined for the next free `vm-<vmid>-disk-<n>`. Two concurrent calls
   * never return the same name.
   */
  allocImage(
    storage: Storage,
    vmid: number,
    format: string,
    name: string | undefined,
    size: number,
  ): Promise<string>;
  /** Removes a volume (and, for a snapshot chain, all of its files). */
  freeImage(storage: Storage, volname: string): Promise<void>;
  /** Volumes on the storage, filtered. */
  listVolumes(storage: Storage, filter: ListFilter): Promise<VolumeInfo[]>;
  /** Virtual size and usage of one volume; refuses unsafe images rather than opening them. */
  volumeSizeInfo(storage: Storage, volname: string): Promise<VolumeSize>;
  /** Called once when volt no longer needs the storage in this process (optional). */
  deactivateStorage?(storage: Storage): Promise<void>;

  /**
   * Reads an attribute of a volume (optional; backups): `notes` as text (empty when none),
   * `protected` as a boolean.
   */
  getVolumeAttribute?(
    storage: Storage,
    volname: string,
    attribute: VolumeAttribute,
  ): Promise<string | boolean>;
  /**
   * Changes an attribute of a volume (optional; backups). `notes`: text, empty removes
   * them. `protected`: a protected volume cannot be freed or pruned; the storage's
   * `max-protected-backups` limits how many backups of a guest may be protected.
   */
  updateVolumeAttribute?(
    storage: Storage,
    volname: string,
    attribute: VolumeAttribute,
    value: string | boolean,
  ): Promise<void>;

  /**
   * A backup provider for this storage: required with the `backup-provider` feature, never
   * called without it (opting in is explicit). The provider API and its lifecycle:
   * `plugins/backup_api.ts` and `docs/backup-providers.md`.
   */
  newBackupProvider?(storage: Storage, log: LogFunction): BackupProvider | Promise<BackupProvider>;

  /**
   * Takes snapshot `snap` of a volume that no VM is using (optional: "snapshots" are not
   * supported without it). Names are `[A-Za-z][A-Za-z0-9_-]*`, at most 40 characters, not
   * `current` or `pending`. Holds the volume's lock; a failure leaves the volume as it was.
   */
  volumeSnapshot?(storage: Storage, volname: string, snap: string): Promise<void>;
  /**
   * Rolls a volume back to `snap`. A storage that keeps snapshots as volume chains only
   * allows the most recent one, and its error names the newer snapshots.
   */
  volumeSnapshotRollback?(storage: Storage, volname: string, snap: string): Promise<void>;
  /** Deletes snapshot `snap`; the volume and the other snapshots read exactly as before. */
  volumeSnapshotDelete?(storage: Storage, volname: string, snap: string): Promise<void>;
  /** The snapshots of a volume, oldest first, then `current`. */
  volumeSnapshotList?(storage: Storage, volname: string): Promise<SnapshotInfo[]>;
  /**
   * Checks a volume for interrupted snapshot operations and damaged images; with
   * `repair`, finishes or undoes what was interrupted. Holds the volume's lock.
   */
  volumeCheck?(
    storage: Storage,
    volname: string,
    options: { repair?: boolean },
  ): Promise<VolumeCheckReport>;

  /**
   * Stream formats the volume can be exported as, preferred first (optional: without it the
   * volume cannot be exported). Path-based plugins can return
   * `exportFormatsForPath(...)` from `lib/streams/export.ts`.
   */
  volumeExportFormats?(
    storage: Storage,
    volname: string,
    options: VolumeExportOptions,
  ): Promise<string[]>;
  /**
   * Writes the volume to `sink` as a stream of `format` (one of
   * {@link StoragePlugin.volumeExportFormats}); throws naming the format when it does not
   * apply. Writes nothing but stream bytes. Generic implementation: `exportPathVolume`.
   */
  volumeExport?(
    storage: Storage,
    volname: string,
    format: string,
    sink: StreamSink,
    options: VolumeExportOptions,
  ): Promise<void>;
  /** Stream formats a new volume `volname` can be imported from, preferred first (optional). */
  volumeImportFormats?(
    storage: Storage,
    volname: string,
    options: VolumeImportOptions,
  ): Promise<string[]>;
  /**
   * Creates volume `volname` from a stream of `format` read from `source` and returns the
   * volume name it used (another one only with `allowRename`). Refuses an existing target;
   * on any failure, interruption included, frees what it allocated before throwing.
   * Generic implementation: `importPathVolume` in `lib/streams/import.ts`.
   */
  volumeImport?(
    storage: Storage,
    volname: string,
    format: string,
    source: StreamSource,
    options: VolumeImportOptions,
  ): Promise<string>;
}

/** The members every plugin must define, with their `typeof`. */
export const REQUIRED_METHODS: Readonly<Record<string, string>> = {
  type: "string",
  api: "number",
  content: "object",
  options: "object",
  parseVolname: "function",
  path: "function",
  activateStorage: "function",
  status: "function",
  allocImage: "function",
  freeImage: "function",
  listVolumes: "function",
  volumeSizeInfo: "function",
};

/** Options every storage type accepts, whatever its plugin declares. */
export const COMMON_OPTIONS: Readonly<Record<string, OptionSchema>> = {
  content: { type: "list", values: CONTENT_TYPES, description: "content types the storage holds" },
  disable: { type: "boolean", description: "storage is disabled", default: false },
  shared: { type: "boolean", description: "storage is shared between nodes", default: false },
  nodes: { type: "list", description: "nodes where the storage is available" },
};
