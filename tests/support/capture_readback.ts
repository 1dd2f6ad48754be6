/**
 * Reads capture files back with the Wireshark tools: per-interface counts from capinfos, and
 * per-packet fields from tshark.
 */
import { run } from "../../lab/netns.ts";
import { tokensIn } from "../../lab/traffic.ts";

export interface InterfaceInfo {
  name: string;
  packets: number;
  statEntries: number;
}

/** Interfaces of a pcapng file from `capinfos -I`. */
export async function interfaces(file: string): Promise<InterfaceInfo[]> {
  const out = (await run("capinfos", ["-I", file])).stdout;
  return out.split(/Interface #\d+ info:/).slice(1).map((block) => ({
    name: /Name = (.*)/.exec(block)?.[1].trim() ?? "",
    packets: Number(/Number of packets = (\d+)/.exec(block)?.[1] ?? -1),
    statEntries: Number(/Number of stat entries = (\d+)/.exec(block)?.[1] ?? 0),
  }));
}

/** `tshark -T fields` rows of a capture file: one array of `fields` values per packet. */
export async function tsharkFields(file: string, fields: string[]): Promise<string[][]> {
  const args = ["-r", file, "-n", "-T", "fields", "-E", "separator=|"];
  const r = await run("tshark", [...args, ...fields.flatMap((f) => ["-e", f])]);
  return r.stdout.split("\n").filter((l) => l.trim()).map((line) => line.split("|"));
}

/** Per packet: interface name, epoch ns, marker tokens. */
export async function packets(file: string) {
  const rows = await tsharkFields(file, [
    "frame.interface_name",
    "frame.time_epoch",
    "udp.payload",
  ]);
  return rows.map(([iface, epoch, hex]) => {
    const [s, frac = ""] = epoch.split(".");
    const bytes = new Uint8Array((hex.match(/../g) ?? []).map((h) => parseInt(h, 16)));
    return {
      iface,
      ns: BigInt(s) * 1_000_000_000n + BigInt(frac.padEnd(9, "0").slice(0, 9)),
      tokens: tokensIn(bytes),
    };
  });
}
