// Where a packet's CPU goes on agent → api → pcap-bosh (issue 13.2 "measure first"): one e2e
// pcap path (bench/e2e.ts's set-up: real agent, api and `pcap-bosh capture -o file`, all on core
// 1, the generator on core 0), a steady stream of FRAME-byte frames at RATE pps, and `perf record`
// on the three processes meanwhile. JIT frames are named through V8's --perf-basic-prof (set in
// DENO_V8_FLAGS for every process of the lab). Prints, per process, the share of samples by
// shared object and the hottest symbols; native symbols of the stripped deno binary show as
// addresses (crypto is recognised by its instructions, see docs/benchmarks.md).
// `--path ssh` profiles the baseline instead: tcpdump, sshd and the ssh client writing the file
// (bench/e2e.ts's aes128-gcm path), so that both clients' costs can be set side by side.
//   deno run -A bench/e2e_profile.ts [--frame 1500] [--rate 50000] [--secs 4] [--path ssh]
import { PcapBoshCapture } from "./pcap_client.ts";
import {
  compileGenerator,
  FILTER,
  generate,
  HEADERS,
  pidOf,
  pin,
  pretouchPageCache,
  sleep,
} from "./bench_support.ts";
import { genTargets, startBenchApi, startBenchLab } from "./fan_in.ts";
import { run } from "../lab/netns.ts";
import { LabSshd, SshTcpdump } from "./ssh_baseline.ts";
import { holdFreedMemory } from "./free_page_reporting.ts";

const arg = (name: string, dflt: number) => {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Number(Deno.args[i + 1]) : dflt;
};
const frame = arg("frame", 1500);
const rate = arg("rate", 50_000);
const secs = arg("secs", 4);
const ssh = Deno.args.includes("--path") && Deno.args[Deno.args.indexOf("--path") + 1] === "ssh";

Deno.env.set("DENO_V8_FLAGS", "--perf-basic-prof");
const held = holdFreedMemory(); // as bench/e2e.ts: freed memory stays the guest's
console.log(held.note);
const tmp = await Deno.makeTempDir({ prefix: "pcap-bench-prof-" });
const lab = await startBenchLab(1);
// the output file in memory touched before, as in bench/e2e.ts
await pretouchPageCache(tmp, 2 * (rate * secs + 22_000) * (frame + 32) + 256 * 2 ** 20);
try {
  const vm = lab.vms[0];
  const apiPid = await startBenchApi(lab);
  const agentPid = pidOf(`${lab.dir}/${lab.agentLogName(vm)}.yml`, "agent");
  await pin(agentPid, "1");
  await pin(apiPid, "1");
  const gen = await compileGenerator(tmp);
  const target = genTargets(lab, [vm])[0];
  const file = `${tmp}/out.${ssh ? "pcap" : "pcapng"}`;
  const sshd = ssh ? await LabSshd.start(lab.topology.netns, vm.netns!, vm.ip, "1") : null;
  const client = sshd
    ? await SshTcpdump.start(lab.topology.netns, sshd, {
      cipher: "aes128-gcm@openssh.com",
      dev: vm.device,
      filter: FILTER,
      file,
      cpus: "1",
    })
    : await PcapBoshCapture.start(lab, vm, { filter: FILTER, file, cpus: "1", dir: tmp });
  try {
    await generate(gen, target, frame - HEADERS, 20_000, 2_000, 40000);
    const pids: Record<string, number[]> = client instanceof SshTcpdump
      ? { tcpdump: client.pids().tcpdump, sshd: client.pids().sshd, ssh: [client.pids().ssh] }
      : { agent: [agentPid], api: [apiPid], client: [client.pid] };
    const recs = Object.entries(pids).map(([role, pid]) => {
      const data = `${tmp}/${role}.data`;
      const p = new Deno.Command("perf", {
        args: [
          "record",
          "-F",
          "1999",
          "-g",
          "-o",
          data,
          "-p",
          pid.join(","),
          "--",
          "sleep",
          `${secs}`,
        ],
        stdout: "null",
        stderr: "null",
      }).spawn();
      return { role, data, done: p.status };
    });
    const g = await generate(gen, target, frame - HEADERS, rate, Math.round(rate * secs), 40001);
    await Promise.all(recs.map((r) => r.done));
    console.log(`sent ${g.sent} frames of ${frame} B at ${Math.round(g.sent / g.secs)} pps\n`);
    for (const r of recs) {
      for (const sort of ["dso", "dso,sym"]) {
        const rep = await run("perf", [
          "report",
          "-i",
          r.data,
          "--no-children",
          "--sort",
          sort,
          "--percent-limit",
          sort === "dso" ? "0.5" : "0.8",
          "--stdio",
          "-g",
          "none",
        ]);
        const lines = rep.stdout.split("\n").filter((l) => l.trim() && !l.startsWith("#"));
        console.log(`== ${r.role} by ${sort}\n${lines.slice(0, 40).join("\n")}\n`);
      }
    }
  } finally {
    await client.stop();
    await sshd?.stop();
  }
  // How many of the agent's frames were built in reused memory (lib/frame_pool.ts)
  const endedLine = () =>
    lab.logs(lab.agentLogName(vm)).split("\n").find((l) => l.includes('"capture ended"'));
  let ended = endedLine();
  for (let i = 0; i < 50 && !ended; i++) {
    await sleep(100);
    ended = endedLine();
  }
  console.log(`agent frame buffers: ${JSON.stringify(ended && JSON.parse(ended).frame_buffers)}`);
} finally {
  await lab.stopApi();
  await lab.stop();
  held.restore();
  console.log(`perf data in ${tmp}`);
}
