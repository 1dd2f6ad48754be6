/** Certificates shaped like the manifests' variables, from the lab PKI, as manifest properties. */
import { Pki } from "../../lab/pki.ts";
import type { Json } from "./release_render.ts";

export interface ReleasePki {
  dir: string;
  pki: Pki;
  agentProps: Record<string, Json>;
  apiProps: Record<string, Json>;
}

export const AGENT_NAME = "pcap-agent.service.cf.internal";

export async function makeReleasePki(): Promise<ReleasePki> {
  const dir = await Deno.makeTempDir({ prefix: "release-pki-" });
  const pki = await Pki.create(dir, "pcap-agent-mtls-ca");
  const agent = await pki.issue("pcap-agent", { server: true, dns: [AGENT_NAME] });
  const client = await pki.issue("pcap-api.service.cf.internal", { client: true });
  const gorouterFacing = await pki.issue("pcap-api", { server: true, dns: ["pcap.sys.example"] });
  const agentProps = {
    "pcap-agent": {
      listen: { tls: { certificate: agent.cert, private_key: agent.key, client_cas: pki.caCert } },
    },
  };
  const apiProps = {
    "pcap-api": {
      listen: { tls: { certificate: gorouterFacing.cert, private_key: gorouterFacing.key } },
      agents_mtls: { certificate: client.cert, private_key: client.key, ca: pki.caCert },
      bosh: { director_url: "https://10.0.0.6:25555", tls: { ca: pki.caCert } },
    },
  };
  return { dir, pki, agentProps, apiProps };
}

/** A deep copy, so tests can change properties freely. */
export function copy<T>(v: T): T {
  return structuredClone(v);
}
