// The one-off task that gives each component its own RabbitMQ user, named after it. Amazon MQ
// takes one user at broker creation (the admin, for the console); the others are made through
// the RabbitMQ management API, which the broker serves on its console endpoint (HTTPS, 443) inside
// the VPC only. So this runs there, as a Node.js script in the official image, started with the
// `aws ecs run-task` command the stack outputs. Running it again is harmless: both requests are
// PUTs that set the user's password (to the one in Secrets Manager), tags and permissions.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { Broker } from "./data";
import { Platform, awslogs, executionRole, logGroup, runTaskCommand, taskDefinition } from "./ecs";
import { Component, EVENTS_EXCHANGE, envName } from "./components";
import { Secrets, secretRef } from "./secrets";

export const BROKER_SETUP_IMAGE = "node:22-alpine";

/** The vhost of the exchange every component publishes to and consumes from (`platform.events`). */
export const VHOST = "/";

export interface BrokerPermissions {
  configure: string;
  write: string;
  read: string;
}

/** A broker user the task creates: no tags (no console, no management API), these permissions. */
export interface BrokerUser {
  /** The component's name. */
  name: string;
  vhost: string;
  /** The variable holding its password (from Secrets Manager). */
  passwordEnv: string;
  permissions: BrokerPermissions;
}

function regexEscape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * A component's permissions on the vhost: declare (configure) the exchange and its own queues
 * `platform.events.<name>.*`; publish (write) to the exchange, bind its own queues and use the
 * default exchange; consume (read) its own queues and bind from the exchange. Nothing of the
 * other components'.
 */
export function brokerPermissions(name: string): BrokerPermissions {
  const exchange = regexEscape(EVENTS_EXCHANGE);
  const own = `${exchange}\\.${regexEscape(name)}\\..*`;
  return {
    configure: `^${exchange}(\\.${regexEscape(name)}\\..*)?$`,
    write: `^(${exchange}|${own}|amq\\.default)$`,
    read: `^(${exchange}|${own})$`,
  };
}

export function brokerUsers(components: readonly Component[]): BrokerUser[] {
  return components.map(({ name }) => ({
    name,
    vhost: VHOST,
    passwordEnv: `${envName(name)}_PASSWORD`,
    permissions: brokerPermissions(name),
  }));
}

/**
 * The script, for `node -`. It reads everything from the environment: RABBITMQ_API (the
 * management API's base URL), ADMIN_USERNAME and ADMIN_PASSWORD (the admin login), BROKER_USERS
 * (JSON, `BrokerUser[]`) and each user's password variable. Passwords are never printed; an
 * error response is logged with them blanked out. Any failure ends the task with status 1.
 */
export const SETUP_SCRIPT = String.raw`"use strict";
const env = process.env;
const api = (env.RABBITMQ_API || "").replace(/\/+$/, "");
const users = JSON.parse(env.BROKER_USERS || "[]");
const secrets = [env.ADMIN_PASSWORD, ...users.map((u) => env[u.passwordEnv])].filter(Boolean);
const redact = (text) => secrets.reduce((t, s) => t.split(s).join("<redacted>"), String(text));
const auth = "Basic " + Buffer.from(env.ADMIN_USERNAME + ":" + env.ADMIN_PASSWORD).toString("base64");

async function put(path, body) {
  const response = await fetch(api + path, {
    method: "PUT",
    headers: { authorization: auth, "content-type": "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(15000),
  });
  const text = await response.text();
  if (response.status !== 201 && response.status !== 204) {
    throw new Error("PUT " + path + ": HTTP " + response.status + " " + redact(text).slice(0, 500));
  }
}

async function main() {
  if (!/^https?:\/\//.test(api)) throw new Error("RABBITMQ_API is not a URL");
  if (!env.ADMIN_USERNAME || !env.ADMIN_PASSWORD) throw new Error("ADMIN_USERNAME and ADMIN_PASSWORD are required");
  if (users.length === 0) throw new Error("BROKER_USERS names no user");
  for (const user of users) {
    if (!env[user.passwordEnv]) throw new Error(user.passwordEnv + " is not set");
  }
  for (const user of users) {
    const password = env[user.passwordEnv];
    const name = encodeURIComponent(user.name);
    await put("/users/" + name, { password, tags: "" });
    const { configure, write, read } = user.permissions;
    await put("/permissions/" + encodeURIComponent(user.vhost) + "/" + name, { configure, write, read });
    console.log(user.name + ": user set (no tags), permissions on vhost " + user.vhost
      + ": configure " + configure + " write " + write + " read " + read);
  }
}

function describe(error) {
  if (!error || !error.message) return String(error);
  return error.message + (error.cause && error.cause.message ? " (" + error.cause.message + ")" : "");
}

main().catch((error) => {
  console.error("broker-setup failed: " + redact(describe(error)));
  process.exit(1);
});
`;

export interface BrokerSetup {
  taskDefinition: aws.ecs.TaskDefinition;
  executionRole: aws.iam.Role;
  /** `aws ecs run-task ...`, to run once after the broker exists. */
  command: pulumi.Output<string>;
}

export function createBrokerSetup(args: {
  platform: Platform;
  components: readonly Component[];
  broker: Broker;
  secrets: Secrets;
  subnets: pulumi.Input<string>[];
  securityGroup: aws.ec2.SecurityGroup;
}): BrokerSetup {
  const { platform, broker, secrets } = args;
  const users = brokerUsers(args.components);
  // The admin login and the components' broker secrets; no database secret.
  const role = executionRole("broker-setup", [secrets.brokerAdmin.arn, ...users.map((u) => secrets.broker[u.name].arn)]);
  const logs = logGroup(platform, "broker-setup");
  const task = taskDefinition(platform, {
    family: "broker-setup",
    cpu: 256,
    memory: 512,
    // The official image is multi-arch; X86_64 keeps this independent of the hosts' setting.
    cpuArchitecture: "X86_64",
    executionRole: role,
    containers: [{
      name: "broker-setup",
      image: BROKER_SETUP_IMAGE,
      essential: true,
      // The script is an environment value, passed to node on its standard input unchanged.
      entryPoint: ["sh", "-c"],
      command: ['printf "%s" "$SETUP_SCRIPT" | node -'],
      environment: [
        { name: "RABBITMQ_API", value: broker.consoleUrl.apply((url) => `${url.replace(/\/+$/, "")}/api`) },
        { name: "BROKER_USERS", value: JSON.stringify(users) },
        { name: "SETUP_SCRIPT", value: SETUP_SCRIPT },
      ],
      secrets: [
        secretRef("ADMIN_USERNAME", secrets.brokerAdmin.arn, "username"),
        secretRef("ADMIN_PASSWORD", secrets.brokerAdmin.arn, "password"),
        ...users.map((u) => secretRef(u.passwordEnv, secrets.broker[u.name].arn, "password")),
      ],
      logConfiguration: awslogs(platform, logs),
    }],
  });
  const command = runTaskCommand(platform, task, args.securityGroup, args.subnets);
  return { taskDefinition: task, executionRole: role, command };
}
