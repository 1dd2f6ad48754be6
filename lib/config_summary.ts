/**
 * The `--check-config` summary, one style for every service: "config OK: FILE", then one
 * indented "label: value" line per entry. Never given key material.
 */
export function configSummary(file: string, entries: [label: string, value: string][]): string {
  return [`config OK: ${file}`, ...entries.map(([k, v]) => `  ${k}: ${v}`)].join("\n");
}
