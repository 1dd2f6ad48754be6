// Per-run PKI for the lab: a CA plus leaf certificates, made with the `openssl` CLI.
// Every certificate carries v3 extensions because rustls (Deno's TLS) refuses v1 certificates.
// Issuance goes through `openssl ca` with a fresh database per call: that is the only way in
// OpenSSL 3.0 to set arbitrary validity dates (needed for expired certificates), and a private
// database keeps concurrent issue() calls independent.

export interface CertPair {
  cert: string;
  key: string;
  certPath: string;
  keyPath: string;
}

export interface IssueOptions {
  /** extendedKeyUsage serverAuth */
  server?: boolean;
  /** extendedKeyUsage clientAuth */
  client?: boolean;
  /** subjectAltName DNS entries */
  dns?: string[];
  /** subjectAltName IP entries */
  ips?: string[];
  /** subjectAltName email (rfc822Name) entries */
  emails?: string[];
  /** subjectAltName URI entries */
  uris?: string[];
  /** validity in days from now (default 2) */
  days?: number;
  /** valid for one day, ended a day ago */
  expired?: boolean;
  /** explicit validity window; overrides days/expired */
  notBefore?: Date;
  notAfter?: Date;
}

export async function openssl(args: string[], cwd?: string): Promise<string> {
  const out = await new Deno.Command("openssl", { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  const dec = new TextDecoder();
  if (!out.success) {
    throw new Error(
      `openssl ${args[0]} failed (exit ${out.code}): ${dec.decode(out.stderr).trim()}`,
    );
  }
  return dec.decode(out.stdout);
}

/** Turns a common name into a safe file name stem. */
function fileStem(cn: string): string {
  return cn.replace(/[^A-Za-z0-9._-]+/g, "_").slice(0, 60) || "cert";
}

/** openssl ca date format: YYYYMMDDHHMMSSZ (UTC). */
export function opensslDate(d: Date): string {
  return d.toISOString().replace(/[-:T]/g, "").replace(/\.\d+Z$/, "Z");
}

function randomSerialHex(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[0] &= 0x7f; // positive INTEGER
  if (b[0] === 0) b[0] = 1;
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** Builds the v3 extension section for a leaf certificate. Pure, exported for tests. */
export function leafExtensions(opts: IssueOptions): string {
  const eku: string[] = [];
  if (opts.server) eku.push("serverAuth");
  if (opts.client) eku.push("clientAuth");
  const lines = [
    "basicConstraints = critical, CA:FALSE",
    "keyUsage = critical, digitalSignature", // EC keys sign; they never encipher
    "subjectKeyIdentifier = hash",
    "authorityKeyIdentifier = keyid, issuer",
  ];
  if (eku.length) lines.push(`extendedKeyUsage = ${eku.join(", ")}`);
  const san = [
    ...(opts.dns ?? []).map((d) => `DNS:${d}`),
    ...(opts.ips ?? []).map((ip) => `IP:${ip}`),
    ...(opts.emails ?? []).map((e) => `email:${e}`),
    ...(opts.uris ?? []).map((u) => `URI:${u}`),
  ];
  if (san.length) lines.push(`subjectAltName = ${san.join(", ")}`);
  return lines.join("\n") + "\n";
}

function caConfig(dbDir: string): string {
  return `[ ca ]
default_ca = lab_ca
[ lab_ca ]
database = ${dbDir}/index.txt
serial = ${dbDir}/serial
new_certs_dir = ${dbDir}
default_md = sha256
policy = policy_any
unique_subject = no
email_in_dn = no
copy_extensions = none
[ policy_any ]
commonName = supplied
`;
}

export class Pki {
  private counter = 0;

  private constructor(
    readonly dir: string,
    readonly name: string,
    readonly caCert: string,
    readonly caPath: string,
    readonly caKeyPath: string,
  ) {}

  /** Creates a new CA (EC P-256, self-signed, v3 CA extensions) in dir. */
  static async create(dir: string, name = "pcap-lab-ca"): Promise<Pki> {
    await Deno.mkdir(dir, { recursive: true });
    const stem = fileStem(name);
    const caKeyPath = `${dir}/${stem}.key`;
    const caPath = `${dir}/${stem}.pem`;
    const extPath = `${dir}/${stem}.ext`;
    await Deno.writeTextFile(
      extPath,
      `[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
`,
    );
    await openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", caKeyPath]);
    await Deno.chmod(caKeyPath, 0o600);
    await openssl([
      "req",
      "-x509",
      "-new",
      "-key",
      caKeyPath,
      "-subj",
      `/CN=${name}`,
      "-days",
      "30",
      "-sha256",
      "-config",
      extPath,
      "-extensions",
      "v3_ca",
      "-set_serial",
      `0x${randomSerialHex()}`,
      "-out",
      caPath,
    ]);
    return new Pki(dir, name, await Deno.readTextFile(caPath), caPath, caKeyPath);
  }

  /** Issues a leaf certificate signed by this CA. */
  async issue(cn: string, opts: IssueOptions = {}): Promise<CertPair> {
    const id = `${fileStem(cn)}-${++this.counter}`;
    const work = await Deno.makeTempDir({ dir: this.dir, prefix: `${id}.` });
    const keyPath = `${this.dir}/${id}.key`;
    const certPath = `${this.dir}/${id}.pem`;
    try {
      const csrPath = `${work}/req.csr`;
      await openssl([
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        keyPath,
        "-subj",
        `/CN=${cn}`,
        "-out",
        csrPath,
      ]);
      await Deno.chmod(keyPath, 0o600);
      const { notBefore, notAfter } = validity(opts);
      await Deno.writeTextFile(`${work}/index.txt`, "");
      await Deno.writeTextFile(`${work}/serial`, randomSerialHex() + "\n");
      await Deno.writeTextFile(`${work}/ca.cnf`, caConfig(work));
      await Deno.writeTextFile(`${work}/ext.cnf`, leafExtensions(opts));
      await openssl([
        "ca",
        "-batch",
        "-notext",
        "-config",
        `${work}/ca.cnf`,
        "-cert",
        this.caPath,
        "-keyfile",
        this.caKeyPath,
        "-in",
        csrPath,
        "-out",
        certPath,
        "-extfile",
        `${work}/ext.cnf`,
        "-startdate",
        opensslDate(notBefore),
        "-enddate",
        opensslDate(notAfter),
      ]);
    } finally {
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
    return {
      cert: await Deno.readTextFile(certPath),
      key: await Deno.readTextFile(keyPath),
      certPath,
      keyPath,
    };
  }
}

const DAY_MS = 86_400_000;

/** Validity window for IssueOptions. Pure, exported for tests. */
export function validity(
  opts: IssueOptions,
  now = new Date(),
): { notBefore: Date; notAfter: Date } {
  if (opts.notBefore || opts.notAfter) {
    const notBefore = opts.notBefore ?? new Date(now.getTime() - 60_000);
    const notAfter = opts.notAfter ?? new Date(notBefore.getTime() + DAY_MS);
    if (notAfter <= notBefore) throw new Error("pki: notAfter must be later than notBefore");
    return { notBefore, notAfter };
  }
  if (opts.expired) {
    return {
      notBefore: new Date(now.getTime() - 2 * DAY_MS),
      notAfter: new Date(now.getTime() - DAY_MS),
    };
  }
  const days = opts.days ?? 2;
  if (!(days > 0)) throw new Error(`pki: days must be positive, got ${days}`);
  // Back-date a minute so that small clock differences do not make a fresh cert "not yet valid".
  return {
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + days * DAY_MS),
  };
}
