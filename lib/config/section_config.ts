/**
 * Proxmox's section-config text format (`/etc/pve/storage.cfg`), without any schema:
 *
 * ```
 * dir: local
 * 	path /var/lib/vz
 * 	content iso,vztmpl,backup
 * 	disable
 * ```
 *
 * A section starts with `type: id` at column 0; its properties follow as indented
 * `key value` lines (a key alone means the flag is set, value `1`). Blank lines end a section,
 * `#` lines are comments. Schema checks live in `storage_config.ts`.
 *
 * @module
 */

/** One `type: id` section with its raw `key value` properties in file order. */
export interface Section {
  type: string;
  id: string;
  /** Properties as written, in order; a key without value has value "1". */
  properties: [string, string][];
  /** 1-based line number of the `type: id` line (0 for sections not read from a file). */
  line: number;
}

const HEADER = /^([a-z][a-z0-9_-]*):\s*(\S+)\s*$/i;
const PROPERTY = /^\s+(\S+)(?:\s+(.*\S))?\s*$/;

/**
 * Parses section-config text. Throws `SyntaxError` naming the line for a property outside a
 * section, a malformed header or a key given twice in one section.
 *
 * @example
 * ```ts
 * import { parseSectionConfig } from "./section_config.ts";
 * const [s] = parseSectionConfig("dir: local\n\tpath /var/lib/vz\n", "storage.cfg");
 * console.assert(s.id === "local" && s.properties[0][1] === "/var/lib/vz");
 * ```
 */
export function parseSectionConfig(text: string, filename: string): Section[] {
  const sections: Section[] = [];
  let current: Section | undefined;
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const where = `${filename}:${i + 1}`;
    if (/^\s*#/.test(line)) continue;
    if (/^\s*$/.test(line)) {
      current = undefined;
      continue;
    }
    if (/^\S/.test(line)) {
      const m = HEADER.exec(line);
      if (!m) throw new SyntaxError(`${where}: expected 'type: id', got '${line.trim()}'`);
      current = { type: m[1], id: m[2], properties: [], line: i + 1 };
      sections.push(current);
      continue;
    }
    const m = PROPERTY.exec(line);
    if (!current || !m) {
      throw new SyntaxError(`${where}: property line outside a section: '${line.trim()}'`);
    }
    const [, key, value = "1"] = m;
    if (current.properties.some(([k]) => k === key)) {
      throw new SyntaxError(`${where}: storage '${current.id}': option '${key}' given twice`);
    }
    current.properties.push([key, value]);
  }
  return sections;
}

/**
 * Writes sections back in the same format (tab-indented, a blank line between sections).
 *
 * @example
 * ```ts
 * import { writeSectionConfig } from "./section_config.ts";
 * const text = writeSectionConfig([{ type: "dir", id: "a", properties: [["path", "/x"]], line: 0 }]);
 * console.assert(text === "dir: a\n\tpath /x\n");
 * ```
 */
export function writeSectionConfig(sections: Section[]): string {
  return sections
    .map((s) =>
      [`${s.type}: ${s.id}`, ...s.properties.map(([k, v]) => `\t${k} ${v}`)].join("\n") + "\n"
    )
    .join("\n");
}
