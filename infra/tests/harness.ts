// Runs the Pulumi program against mocks: no engine, no AWS. Every resource the program declares is
// recorded with its type, name and inputs; the mocks answer with plausible outputs (ARNs, ids,
// endpoints) so the program's derived values can be checked too.
//
// The program is a module that declares its resources when loaded, and Node loads a module once
// per process: each configuration is tested from a test file of its own (node --test runs every
// file in a process of its own).
import { spawn } from "node:child_process";
import * as http from "node:http";
import { AddressInfo } from "node:net";
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";

export const PROJECT = "wasm-platform";
export const STACK = "test";
export const ACCOUNT = "123456789012";
export const REGION = "us-east-1";
/** Every generated password resolves to a value starting with this, so leaks can be searched for. */
export const PASSWORD_MARK = "MOCKGENERATED";

export interface Recorded {
  type: string;
  name: string;
  /** The inputs, secrets unwrapped. */
  inputs: Record<string, any>;
  /** Paths (`users.0.password`) of the inputs that were marked secret. */
  secretPaths: string[];
  id: string;
  state: Record<string, any>;
}

export interface Run {
  resources: Recorded[];
  outputs: Record<string, unknown>;
}

function service(type: string): string {
  return type.split(":")[1].split("/")[0];
}

/** Outputs the provider would compute, on top of the inputs echoed back. */
function computed(type: string, name: string, inputs: Record<string, any>): Record<string, unknown> {
  const physical = inputs.name ?? `${name}-abc1234`;
  const arnFor = (svc: string, resource: string) => `arn:aws:${svc}:${REGION}:${ACCOUNT}:${resource}`;
  switch (type) {
    case "random:index/randomPassword:RandomPassword":
      return { result: `${PASSWORD_MARK}${name.replace(/[^a-zA-Z0-9]/g, "")}x9Q` };
    case "aws:secretsmanager/secret:Secret":
      return { arn: arnFor("secretsmanager", `secret:${name}-AbCdEf`) };
    case "aws:ecr/repository:Repository":
      return { arn: arnFor("ecr", `repository/${physical}`), repositoryUrl: `${ACCOUNT}.dkr.ecr.${REGION}.amazonaws.com/${physical}` };
    case "aws:rds/instance:Instance":
      return {
        arn: arnFor("rds", `db:${name}`),
        address: `${name}.cmocked.${REGION}.rds.amazonaws.com`,
        masterUserSecrets: [{ secretArn: arnFor("secretsmanager", "secret:rds!db-1234-MaStEr"), kmsKeyId: "", secretStatus: "active" }],
      };
    case "aws:mq/broker:Broker":
      return {
        arn: arnFor("mq", `broker:${name}:b-1234`),
        brokerName: inputs.brokerName ?? `${name}-abc1234`,
        instances: [{
          consoleUrl: `https://b-1234.mq.${REGION}.on.aws`,
          endpoints: [`amqps://b-1234.mq.${REGION}.on.aws:5671`],
          ipAddress: "",
        }],
      };
    case "aws:lb/loadBalancer:LoadBalancer":
      return { arn: arnFor("elasticloadbalancing", `loadbalancer/app/${name}/1`), dnsName: `${name}-1.${REGION}.elb.amazonaws.com` };
    case "aws:ecs/taskDefinition:TaskDefinition":
      return { arn: arnFor("ecs", `task-definition/${inputs.family}:1`), family: inputs.family };
    default:
      return { arn: arnFor(service(type), `${type.split(":").pop()}/${physical}`), name: physical };
  }
}

export function setConfig(config: Record<string, unknown>, secretKeys: string[] = []): void {
  const full = (key: string) => (key.includes(":") ? key : `${PROJECT}:${key}`);
  const values: Record<string, string> = { "aws:region": REGION };
  for (const [key, value] of Object.entries(config)) {
    values[full(key)] = typeof value === "string" ? value : JSON.stringify(value);
  }
  pulumi.runtime.setAllConfig(values, secretKeys.map(full));
}

/** Unwraps the mocks' secret envelopes, noting where they were. */
function unwrap(value: any, path: string, secretPaths: string[]): any {
  if (Array.isArray(value)) return value.map((v, i) => unwrap(v, path ? `${path}.${i}` : `${i}`, secretPaths));
  if (value === null || typeof value !== "object") return value;
  if (value[pulumi.runtime.specialSigKey] === pulumi.runtime.specialSecretSig) {
    secretPaths.push(path);
    return unwrap(value.value, path, []);
  }
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, unwrap(v, path ? `${path}.${k}` : k, secretPaths)]));
}

async function settle(resources: Recorded[]): Promise<void> {
  // Registrations are asynchronous; done once the count stops moving for a while.
  let last = -1;
  let still = 0;
  while (still < 10) {
    await new Promise((resolve) => setTimeout(resolve, 10));
    still = resources.length === last ? still + 1 : 0;
    last = resources.length;
  }
}

function value<T>(output: pulumi.Output<T>): Promise<T> {
  return new Promise((resolve) => output.apply((v) => { resolve(v); return v; }));
}

/** Sets the config and the mocks, loads the program and waits for everything it declares. */
export async function runProgram(config: Record<string, unknown>, secretKeys: string[] = []): Promise<Run> {
  const resources: Recorded[] = [];
  setConfig(config, secretKeys);
  await pulumi.runtime.setMocks({
    newResource(args: pulumi.runtime.MockResourceArgs) {
      const secretPaths: string[] = [];
      const inputs = unwrap(args.inputs, "", secretPaths) as Record<string, any>;
      const state = { ...args.inputs, ...computed(args.type, args.name, inputs) };
      const id = args.type === "random:index/randomPassword:RandomPassword" ? args.name : `${args.name}-id`;
      resources.push({ type: args.type, name: args.name, inputs, secretPaths, id, state });
      return { id, state };
    },
    call(args: pulumi.runtime.MockCallArgs) {
      switch (args.token) {
        case "aws:index/getRegion:getRegion":
          return { name: REGION, region: REGION, id: REGION, endpoint: `ec2.${REGION}.amazonaws.com`, description: "" };
        case "aws:index/getAvailabilityZones:getAvailabilityZones":
          return { names: [`${REGION}a`, `${REGION}b`, `${REGION}c`], zoneIds: ["use1-az1", "use1-az2", "use1-az4"], id: REGION };
        default:
          throw new Error(`unexpected call ${args.token}`);
      }
    },
  }, PROJECT, STACK, false);

  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const program = require("../index") as Record<string, unknown>;
  const outputs: Record<string, unknown> = {};
  for (const [key, exported] of Object.entries(program)) {
    outputs[key] = pulumi.Output.isInstance(exported) ? await value(exported as pulumi.Output<unknown>) : exported;
  }
  await settle(resources);
  return { resources, outputs };
}

// Queries on the recorded resources.

export function ofType(run: Run, type: string): Recorded[] {
  return run.resources.filter((r) => r.type === type);
}

export function one(run: Run, type: string, name: string): Recorded {
  const found = run.resources.filter((r) => r.type === type && r.name === name);
  if (found.length !== 1) {
    throw new Error(`expected one ${type} named ${name}, found ${found.length} (have: ${ofType(run, type).map((r) => r.name).join(", ")})`);
  }
  return found[0];
}

export interface Container {
  name: string;
  image: string;
  environment: { name: string; value: string }[];
  secrets: { name: string; valueFrom: string }[];
  [key: string]: any;
}

/** The containers of the task definition of a family (`<prefix>-<family>`). */
export function containers(run: Run, family: string): Container[] {
  const task = one(run, "aws:ecs/taskDefinition:TaskDefinition", family);
  return JSON.parse(task.inputs.containerDefinitions) as Container[];
}

export function env(container: Container): Record<string, string> {
  return Object.fromEntries(container.environment.map((e) => [e.name, e.value]));
}

export function secretEnv(container: Container): Record<string, string> {
  return Object.fromEntries(container.secrets.map((e) => [e.name, e.valueFrom]));
}

/** Resource whose mock id is `id` (ids are `<name>-id`). */
export function byId(run: Run, id: string): Recorded {
  const found = run.resources.find((r) => r.id === id);
  if (!found) throw new Error(`no resource with id ${id}`);
  return found;
}

export function arnOf(run: Run, type: string, name: string): string {
  return one(run, type, name).state.arn as string;
}

/** Security group rules as `<group> <in|out> <port> <peer>` lines, peers by group name or CIDR. */
export function securityRules(run: Run): string[] {
  const lines: string[] = [];
  for (const [type, direction] of [["aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "in"],
    ["aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule", "out"]] as const) {
    for (const rule of ofType(run, type)) {
      const i = rule.inputs;
      const group = byId(run, i.securityGroupId).name;
      const peer = i.referencedSecurityGroupId ? byId(run, i.referencedSecurityGroupId).name : (i.cidrIpv4 ?? i.cidrIpv6);
      const ports = i.fromPort === i.toPort ? `${i.fromPort}` : `${i.fromPort}-${i.toPort}`;
      lines.push(`${group} ${direction} ${i.ipProtocol}/${ports} ${peer}`);
    }
  }
  return lines.sort();
}

/**
 * A container's `secrets` as ECS would resolve them when the task starts: each `valueFrom` (an
 * ARN, or `ARN:jsonKey::`) looked up in the secret versions the program declared.
 */
export function resolveSecrets(run: Run, container: Container): Record<string, string> {
  const values: Record<string, string> = {};
  for (const { name, valueFrom } of container.secrets) {
    const m = /^(arn:aws:secretsmanager:[^:]+:\d{12}:secret:[^:]+)(?::([A-Za-z]+)::)?$/.exec(valueFrom);
    if (!m) throw new Error(`${container.name}/${name}: not a secret reference: ${valueFrom}`);
    const secret = run.resources.find((r) => r.type === "aws:secretsmanager/secret:Secret" && r.state.arn === m[1]);
    if (!secret) throw new Error(`${container.name}/${name}: no secret ${m[1]} in the program`);
    const stored = one(run, "aws:secretsmanager/secretVersion:SecretVersion", secret.name).inputs.secretString as string;
    const value = m[2] === undefined ? stored : JSON.parse(stored)[m[2]];
    if (typeof value !== "string") throw new Error(`${container.name}/${name}: secret ${secret.name} has no key ${m[2]}`);
    values[name] = value;
  }
  return values;
}

export interface Exit {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a container's entry point and command here (`sh`, with this Node.js as `node`), with its
 * plain environment, its resolved secrets and `overrides`, and nothing else from this process.
 */
export function runContainer(run: Run, container: Container, overrides: Record<string, string> = {}): Promise<Exit> {
  const argv = [...(container.entryPoint ?? []), ...(container.command ?? [])];
  const environment = {
    PATH: [path.dirname(process.execPath), "/usr/bin", "/bin"].join(path.delimiter),
    ...env(container),
    ...resolveSecrets(run, container),
    ...overrides,
  };
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { env: environment, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => { stdout += chunk; });
    child.stderr.on("data", (chunk) => { stderr += chunk; });
    const timer = setTimeout(() => child.kill("SIGKILL"), 20000);
    child.on("error", reject);
    child.on("close", (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

export interface ApiRequest {
  method: string;
  /** The path as sent, not decoded (`/api/permissions/%2F/orders`). */
  url: string;
  authorization?: string;
  contentType?: string;
  body: string;
}

/**
 * A local HTTP server standing in for an API: records every request and answers with `respond`.
 * `use` gets the server's base URL; the server is closed after it.
 */
export async function withFakeApi<T>(
  respond: (request: ApiRequest) => { status: number; body?: string },
  use: (base: string, requests: ApiRequest[]) => Promise<T>,
): Promise<T> {
  const requests: ApiRequest[] = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (chunk) => { body += chunk; });
    req.on("end", () => {
      const request: ApiRequest = {
        method: req.method ?? "", url: req.url ?? "", authorization: req.headers.authorization,
        contentType: req.headers["content-type"], body,
      };
      requests.push(request);
      const answer = respond(request);
      res.writeHead(answer.status, { "content-type": "application/json" });
      res.end(answer.body ?? "");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const { port } = server.address() as AddressInfo;
    return await use(`http://127.0.0.1:${port}`, requests);
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
}
