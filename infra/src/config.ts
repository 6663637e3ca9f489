// The stack's configuration, read once and checked before any resource is declared, so a typo
// fails `pulumi preview` with the key's name rather than half-way through an update.
import * as pulumi from "@pulumi/pulumi";
import { Component, readComponents } from "./components";

/** How one host service is sized and scaled: the setting named after its component. */
export interface ServiceSizing {
  /** Fargate CPU units (256 = 0.25 vCPU). */
  cpu: number;
  /** MiB; must suit `cpu` (Fargate's table). */
  memory: number;
  /** Tasks at creation; autoscaling moves it between `minCount` and `maxCount` afterwards. */
  desiredCount: number;
  minCount: number;
  maxCount: number;
  /** Average CPU utilisation (%) the CPU policy keeps the service at. */
  cpuTarget: number;
  /**
   * Messages waiting in the component's queues per running task that the backlog policy aims
   * for: the latency acceptable for a message over the time a task takes per message. Only a
   * component with subscriptions (so queues) has the policy.
   */
  backlogPerTask: number;
}

/** Every host's sizing unless its setting says otherwise. */
export const HOST_DEFAULTS: ServiceSizing = {
  cpu: 256, memory: 512, desiredCount: 2, minCount: 2, maxCount: 6, cpuTarget: 60, backlogPerTask: 50,
};

export interface KongSettings {
  image: string;
  cpu: number;
  memory: number;
  desiredCount: number;
  /** `host[:port]` per kong.yml service name, replacing the service-discovery default. */
  upstreams: Record<string, string>;
  tracingSamplingRate: number;
}

export interface DatabaseSettings {
  instanceClass: string;
  allocatedStorage: number;
  maxAllocatedStorage: number;
  backupRetentionDays: number;
  deletionProtection: boolean;
  skipFinalSnapshot: boolean;
  multiAz: boolean;
}

export interface BrokerSettings {
  instanceType: string;
  deploymentMode: "SINGLE_INSTANCE" | "CLUSTER_MULTI_AZ";
  engineVersion: string;
}

export interface OtlpSettings {
  /** Base URL of an OTLP/HTTP collector; traces go to `<endpoint>/v1/traces`. */
  endpoint: string;
  /** `OTEL_EXPORTER_OTLP_HEADERS` format, e.g. `Authorization=Basic%20...`; always a secret. */
  headers?: pulumi.Output<string>;
}

export interface NetworkSettings {
  /** An existing VPC, with its subnets, instead of the one this program would create. */
  vpcId?: string;
  publicSubnetIds?: string[];
  privateSubnetIds?: string[];
  /** The /16 of a VPC this program creates. */
  vpcCidr: string;
}

export type ContainerInsights = "enabled" | "enhanced";

export interface Settings {
  /** Prefix for the names AWS shows (project and stack), lower case. */
  prefix: string;
  /** The host image: `image` when set, else `<repository>:<imageTag>`. */
  image?: string;
  imageTag?: string;
  /** Untagged images the repository keeps; tagged releases are never expired. */
  imageRetentionCount: number;
  cpuArchitecture: "X86_64" | "ARM64";
  network: NetworkSettings;
  adminCidrs: string[];
  certificateArn?: string;
  sslPolicy: string;
  publicHostname?: string;
  serviceNamespace: string;
  logRetentionDays: number;
  /** Container Insights on the cluster; the backlog policy reads its `RunningTaskCount`. */
  containerInsights: ContainerInsights;
  /** The components, from deploy/manifests (components.ts). */
  components: Component[];
  /** Each component's host sizing, by component name. */
  hosts: Record<string, ServiceSizing>;
  kong: KongSettings;
  otlp?: OtlpSettings;
  db: DatabaseSettings;
  mq: BrokerSettings;
}

// CPU units -> the memory sizes (MiB) Fargate allows with them.
const FARGATE_MEMORY: Record<number, number[]> = {
  256: [512, 1024, 2048],
  512: range(1024, 4096, 1024),
  1024: range(2048, 8192, 1024),
  2048: range(4096, 16384, 1024),
  4096: range(8192, 30720, 1024),
};

function range(from: number, to: number, step: number): number[] {
  const values: number[] = [];
  for (let v = from; v <= to; v += step) values.push(v);
  return values;
}

export function checkFargateSize(what: string, cpu: number, memory: number): void {
  const allowed = FARGATE_MEMORY[cpu];
  if (!allowed) {
    throw new Error(`${what}: cpu ${cpu} is not a Fargate size (${Object.keys(FARGATE_MEMORY).join(", ")})`);
  }
  if (!allowed.includes(memory)) {
    throw new Error(`${what}: memory ${memory} MiB does not go with cpu ${cpu} (allowed: ${allowed.join(", ")})`);
  }
}

export function checkScaling(what: string, s: ServiceSizing): void {
  for (const [key, value] of Object.entries(s)) {
    if (!Number.isFinite(value) || value < 0) throw new Error(`${what}.${key} must be a number >= 0, not ${value}`);
  }
  if (s.minCount < 1) throw new Error(`${what}.minCount must be at least 1`);
  if (!(s.minCount <= s.desiredCount && s.desiredCount <= s.maxCount)) {
    throw new Error(`${what}: minCount <= desiredCount <= maxCount does not hold (${s.minCount}, ${s.desiredCount}, ${s.maxCount})`);
  }
  if (s.cpuTarget <= 0 || s.cpuTarget > 100) throw new Error(`${what}.cpuTarget must be a percentage`);
  if (!(s.backlogPerTask > 0)) {
    throw new Error(`${what}.backlogPerTask must be above 0`);
  }
}

const IPV4_CIDR = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/;
const IPV6_CIDR = /^[0-9a-fA-F:]+\/(\d{1,3})$/;

/**
 * Sources allowed to reach the hosts' admin port. The admin API can replace running code, so a
 * rule open to the whole internet is refused even though the tasks have no public address.
 */
export function checkAdminCidrs(cidrs: unknown): string[] {
  if (!Array.isArray(cidrs)) throw new Error("adminCidrs must be a list of CIDR blocks");
  return cidrs.map((cidr) => {
    if (typeof cidr !== "string") throw new Error(`adminCidrs: ${String(cidr)} is not a CIDR block`);
    const v4 = IPV4_CIDR.exec(cidr);
    if (v4) {
      const octets = v4.slice(1, 5).map(Number);
      const bits = Number(v4[5]);
      if (octets.some((o) => o > 255) || bits > 32) throw new Error(`adminCidrs: ${cidr} is not a CIDR block`);
      if (bits === 0) throw new Error("adminCidrs: a /0 would open the admin API to everyone");
      return cidr;
    }
    const v6 = IPV6_CIDR.exec(cidr);
    if (v6 && cidr.includes(":")) {
      const bits = Number(v6[1]);
      if (bits > 128) throw new Error(`adminCidrs: ${cidr} is not a CIDR block`);
      if (bits === 0) throw new Error("adminCidrs: a /0 would open the admin API to everyone");
      return cidr;
    }
    throw new Error(`adminCidrs: ${cidr} is not a CIDR block`);
  });
}

/** The subnets of a VPC this program creates are /20s carved from a /16. */
export function checkVpcCidr(cidr: string): string {
  const m = IPV4_CIDR.exec(cidr);
  if (!m || m[5] !== "16" || m[3] !== "0" || m[4] !== "0" || Number(m[1]) > 255 || Number(m[2]) > 255) {
    throw new Error(`vpcCidr must be an IPv4 /16 such as 10.0.0.0/16, not ${cidr}`);
  }
  return cidr;
}

export function checkNetwork(n: NetworkSettings): NetworkSettings {
  const given = [n.vpcId, n.publicSubnetIds, n.privateSubnetIds].filter((v) => v !== undefined).length;
  if (given !== 0 && given !== 3) {
    throw new Error("an existing VPC needs all of vpcId, publicSubnetIds and privateSubnetIds");
  }
  if (given === 3) {
    for (const key of ["publicSubnetIds", "privateSubnetIds"] as const) {
      const ids = n[key];
      if (!Array.isArray(ids) || ids.length < 2 || ids.some((id) => typeof id !== "string")) {
        throw new Error(`${key} must list at least two subnets, in different Availability Zones`);
      }
    }
  }
  checkVpcCidr(n.vpcCidr);
  return n;
}

/**
 * A structured setting (`orders`, `db`, ...) over its defaults. Keys are checked against the
 * defaults' (a misspelt key fails rather than being ignored) and values are taken as the
 * defaults' types, since `pulumi config set --path` may store a number or a boolean as a string.
 */
export function structured<T extends object>(key: string, defaults: T, given: unknown): T {
  if (given === undefined) return { ...defaults };
  if (typeof given !== "object" || given === null || Array.isArray(given)) throw new Error(`${key} must be an object`);
  const merged: Record<string, unknown> = { ...(defaults as Record<string, unknown>) };
  for (const [name, value] of Object.entries(given)) {
    if (!(name in defaults)) {
      throw new Error(`${key}.${name} is not a setting (known: ${Object.keys(defaults).join(", ")})`);
    }
    const expected = typeof (defaults as Record<string, unknown>)[name];
    if (expected === "number") {
      const n = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
      if (typeof n !== "number" || !Number.isFinite(n)) throw new Error(`${key}.${name} must be a number, not ${String(value)}`);
      merged[name] = n;
    } else if (expected === "boolean") {
      const b = value === "true" ? true : value === "false" ? false : value;
      if (typeof b !== "boolean") throw new Error(`${key}.${name} must be true or false, not ${String(value)}`);
      merged[name] = b;
    } else {
      if (typeof value !== "string") throw new Error(`${key}.${name} must be a string`);
      merged[name] = value;
    }
  }
  return merged as T;
}

function sizing(cfg: pulumi.Config, key: string, defaults: ServiceSizing): ServiceSizing {
  const merged = structured(key, defaults, cfg.getObject<unknown>(key));
  checkFargateSize(key, merged.cpu, merged.memory);
  checkScaling(key, merged);
  return merged;
}

// The retention periods CloudWatch Logs offers, in days.
const RETENTION_DAYS = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

export function checkRetention(days: number): number {
  if (!RETENTION_DAYS.includes(days)) throw new Error(`logRetentionDays must be one of ${RETENTION_DAYS.join(", ")}, not ${days}`);
  return days;
}

/**
 * Container Insights cannot be off: the backlog policies divide a queue's backlog by the
 * service's running tasks, a metric only Container Insights publishes.
 */
export function checkContainerInsights(value: string): ContainerInsights {
  if (value === "enabled" || value === "enhanced") return value;
  throw new Error(`containerInsights must be enabled or enhanced, not ${value}: backlog scaling `
    + "divides a queue's backlog by ECS/ContainerInsights RunningTaskCount");
}

/**
 * Every key this program reads besides the components' own (each component's sizing is the
 * setting named after it); any other key in the project's namespace is a mistake.
 */
export const KNOWN_KEYS = [
  "image", "imageTag", "imageRetentionCount", "cpuArchitecture", "vpcId", "publicSubnetIds", "privateSubnetIds",
  "vpcCidr", "adminCidrs", "certificateArn", "sslPolicy", "publicHostname", "serviceNamespace", "logRetentionDays",
  "containerInsights", "kong", "kongUpstreams", "otlpEndpoint", "otlpHeaders", "db", "mq",
];

export function checkKnownKeys(project: string, keys: string[], componentNames: readonly string[] = []): void {
  const clash = componentNames.filter((name) => KNOWN_KEYS.includes(name));
  if (clash.length > 0) throw new Error(`components named like a setting: ${clash.join(", ")}`);
  const known = [...KNOWN_KEYS, ...componentNames];
  const unknown = keys.filter((k) => k.startsWith(`${project}:`) && !known.includes(k.slice(project.length + 1)));
  if (unknown.length > 0) {
    throw new Error(`unknown configuration ${unknown.join(", ")} (known: ${known.join(", ")})`);
  }
}

function checkUpstreams(value: unknown): Record<string, string> {
  if (value === undefined) return {};
  if (typeof value !== "object" || value === null || Array.isArray(value)
    || Object.values(value).some((v) => typeof v !== "string")) {
    throw new Error("kongUpstreams must map kong.yml service names to host[:port]");
  }
  return value as Record<string, string>;
}

export function loadSettings(): Settings {
  const components = readComponents();
  checkKnownKeys(pulumi.getProject(), Object.keys(pulumi.runtime.allConfig()), components.map((c) => c.name));
  const cfg = new pulumi.Config();
  const prefix = `${pulumi.getProject()}-${pulumi.getStack()}`.toLowerCase().replace(/[^a-z0-9-]+/g, "-");

  const image = cfg.get("image");
  // A tag is required unless the whole reference is given: there is no "latest" to fall back on,
  // since the repository's tags are immutable and a deployment must name what it runs.
  const imageTag = image ? cfg.get("imageTag") : cfg.require("imageTag");

  const kong = structured("kong", { image: "kong:3.9.1", cpu: 512, memory: 1024, desiredCount: 2, tracingSamplingRate: 1.0 },
    cfg.getObject<unknown>("kong"));
  checkFargateSize("kong", kong.cpu, kong.memory);
  if (kong.desiredCount < 1) throw new Error("kong.desiredCount must be at least 1");
  if (kong.tracingSamplingRate < 0 || kong.tracingSamplingRate > 1) throw new Error("kong.tracingSamplingRate must be between 0 and 1");

  const otlpEndpoint = cfg.get("otlpEndpoint");
  const otlpHeaders = cfg.getSecret("otlpHeaders");
  if (otlpHeaders && !otlpEndpoint) throw new Error("otlpHeaders is set but otlpEndpoint is not");
  // The tasks may reach the internet on 443 only (security.ts), so a collector elsewhere would
  // drop every span without an error.
  if (otlpEndpoint && !/^https:\/\/[^/:]+(:443)?(\/|$)/.test(otlpEndpoint)) {
    throw new Error(`otlpEndpoint must be an https:// URL on port 443 (the tasks reach the internet on 443 only), not ${otlpEndpoint}`);
  }

  const mq = structured<BrokerSettings>("mq", { instanceType: "mq.t3.micro", deploymentMode: "SINGLE_INSTANCE", engineVersion: "3.13" },
    cfg.getObject<unknown>("mq"));
  if (mq.deploymentMode !== "SINGLE_INSTANCE" && mq.deploymentMode !== "CLUSTER_MULTI_AZ") {
    throw new Error("mq.deploymentMode must be SINGLE_INSTANCE or CLUSTER_MULTI_AZ");
  }
  const [major, minor] = mq.engineVersion.split(".").map(Number);
  if (!(major > 3 || (major === 3 && minor >= 13))) throw new Error("mq.engineVersion must be 3.13 or newer");

  const cpuArchitecture = cfg.get("cpuArchitecture") ?? "X86_64";
  if (cpuArchitecture !== "X86_64" && cpuArchitecture !== "ARM64") {
    throw new Error("cpuArchitecture must be X86_64 or ARM64 (the one the image was built for)");
  }

  return {
    prefix,
    image,
    imageTag,
    imageRetentionCount: cfg.getNumber("imageRetentionCount", { min: 1 }) ?? 20,
    cpuArchitecture,
    network: checkNetwork({
      vpcId: cfg.get("vpcId"),
      publicSubnetIds: cfg.getObject<string[]>("publicSubnetIds"),
      privateSubnetIds: cfg.getObject<string[]>("privateSubnetIds"),
      vpcCidr: cfg.get("vpcCidr") ?? "10.0.0.0/16",
    }),
    adminCidrs: checkAdminCidrs(cfg.getObject<string[]>("adminCidrs") ?? []),
    certificateArn: cfg.get("certificateArn"),
    sslPolicy: cfg.get("sslPolicy") ?? "ELBSecurityPolicy-TLS13-1-2-2021-06",
    publicHostname: cfg.get("publicHostname"),
    serviceNamespace: cfg.get("serviceNamespace", { pattern: /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$/ }) ?? "platform.internal",
    logRetentionDays: checkRetention(cfg.getNumber("logRetentionDays") ?? 30),
    containerInsights: checkContainerInsights(cfg.get("containerInsights") ?? "enabled"),
    components,
    hosts: Object.fromEntries(components.map(({ name }) => [name, sizing(cfg, name, HOST_DEFAULTS)])),
    kong: { ...kong, upstreams: checkUpstreams(cfg.getObject<unknown>("kongUpstreams")) },
    otlp: otlpEndpoint ? { endpoint: otlpEndpoint.replace(/\/+$/, ""), headers: otlpHeaders } : undefined,
    db: structured<DatabaseSettings>("db", {
      instanceClass: "db.t4g.micro", allocatedStorage: 20, maxAllocatedStorage: 100, backupRetentionDays: 7,
      deletionProtection: true, skipFinalSnapshot: false, multiAz: false,
    }, cfg.getObject<unknown>("db")),
    mq,
  };
}
