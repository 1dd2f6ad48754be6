// Every certificate a landscape needs, issued in parallel by the lab CA: the api's client and
// server certificates, one for the HTTPS simulators, one per agent; rogue and expired ones are
// made only when a test asks for them.
import { type CertPair, Pki } from "./pki.ts";
import type { LabVm } from "./lab_vms.ts";

export interface LabCerts {
  /** the api's client certificate for agents */
  apiClient: CertPair;
  /** the api's server certificate (127.0.0.1, localhost, host ip) */
  apiServer: CertPair;
  agentServer(vm: LabVm): CertPair;
  /** certificates of a second CA the lab's parties must refuse (made on first use) */
  rogue(): Promise<{ caPath: string; client: CertPair; server: CertPair }>;
  /** a client certificate of the lab CA that has expired (made on first use) */
  expiredClient(): Promise<CertPair>;
}

export interface IssuedCerts {
  certs: LabCerts;
  /** server certificate of the Director and UAA simulators */
  simServer: CertPair;
  /** agent server certificates, in the order of the VMs */
  agentCerts: CertPair[];
}

/** Issues the landscape's certificates; `hostIps` are where the api listens. */
export async function issueLabCerts(pki: Pki, vms: LabVm[], hostIps: string[]) {
  const [apiClient, apiServer, simServer, ...agentCerts] = await Promise.all([
    pki.issue("pcap-api", { client: true }),
    pki.issue("pcap-api", { server: true, dns: ["localhost"], ips: hostIps }),
    // The Director and UAA simulators speak HTTPS like the real ones, so the lab exercises
    // the production trust path (bosh.tls.ca), not the loopback-http convenience.
    pki.issue("pcap-lab-bosh", { server: true, dns: ["localhost"], ips: ["127.0.0.1"] }),
    ...vms.map((vm) =>
      pki.issue(vm.agentDnsName, { server: true, dns: [vm.agentDnsName], ips: [vm.ip] })
    ),
  ]);
  const certs = makeCerts(pki, apiClient, apiServer, vms, agentCerts);
  return { certs, simServer, agentCerts } satisfies IssuedCerts;
}

function makeCerts(
  pki: Pki,
  apiClient: CertPair,
  apiServer: CertPair,
  vms: LabVm[],
  agentCerts: CertPair[],
): LabCerts {
  let rogue: Promise<{ caPath: string; client: CertPair; server: CertPair }> | null = null;
  let expired: Promise<CertPair> | null = null;
  return {
    apiClient,
    apiServer,
    agentServer(vm) {
      const i = vms.findIndex((v) => v.id === vm.id);
      if (i < 0) throw new Error(`lab: VM ${vm.group}/${vm.index} is not part of this lab`);
      return agentCerts[i];
    },
    rogue() {
      // Same names as the real ones, signed by a CA nobody trusts.
      rogue ??= (async () => {
        const other = await Pki.create(`${pki.dir}/rogue`, "pcap-lab-rogue-ca");
        const [client, server] = await Promise.all([
          other.issue("pcap-api", { client: true }),
          other.issue("pcap-api", { server: true, dns: ["localhost"], ips: ["127.0.0.1"] }),
        ]);
        return { caPath: other.caPath, client, server };
      })();
      return rogue;
    },
    expiredClient() {
      expired ??= pki.issue("pcap-api-expired", { client: true, expired: true });
      return expired;
    },
  };
}
