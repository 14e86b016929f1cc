/**
 * The task log of a backup: every message of the job, time-stamped, in a temporary file that
 * is handed to the provider (`backupHandleLogFile`) and removed afterwards.
 *
 * @module
 */

/** An append-only log file. */
export class TaskLog implements AsyncDisposable {
  /** Path of the log file. */
  readonly path: string;
  #file: Deno.FsFile | undefined;
  readonly #encoder = new TextEncoder();

  private constructor(path: string, file: Deno.FsFile) {
    this.path = path;
    this.#file = file;
  }

  /** Creates the log in the system's temporary directory. */
  static async create(): Promise<TaskLog> {
    const path = await Deno.makeTempFile({ prefix: "volt-task-", suffix: ".log" });
    const file = await Deno.open(path, { append: true });
    return new TaskLog(path, file);
  }

  /** Appends `<ISO time> <level>: <message>`. */
  write(level: string, message: string): void {
    if (!this.#file) return;
    const line = `${new Date().toISOString()} ${level}: ${message}\n`;
    try {
      this.#file.writeSync(this.#encoder.encode(line));
    } catch {
      // A log that cannot be written must not fail the backup.
    }
  }

  /** Closes and removes the file. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.#file?.close();
    this.#file = undefined;
    await Deno.remove(this.path).catch(() => {});
  }
}
