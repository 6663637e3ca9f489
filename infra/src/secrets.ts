// Generated passwords and the Secrets Manager secrets the tasks read. A task gets a secret only
// through its task definition's `secrets` (an ARN, or `ARN:jsonKey::`), which ECS resolves when
// the task starts: no value is ever written into a task definition, an environment or the config.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { Component } from "./components";

export const RDS_CA_BUNDLE = "/app/certs/rds-global-bundle.pem";

/** The URL a host accepts: TLS, the server's certificate checked against the RDS CA bundle. */
export function databaseUrl(role: string, password: string, host: string, database: string): string {
  return `postgres://${role}:${password}@${host}:5432/${database}`
    + `?sslmode=verify-full&sslrootcert=${RDS_CA_BUNDLE}`;
}

/** `amqps://b-x.mq.r.amazonaws.com:5671` + credentials -> the URL of the default vhost `/`. */
export function amqpUrl(endpoint: string, username: string, password: string): string {
  const m = /^amqps:\/\/([^/:@]+)(?::(\d+))?\/?$/.exec(endpoint);
  if (!m) throw new Error(`unexpected Amazon MQ endpoint ${endpoint}`);
  return `amqps://${username}:${password}@${m[1]}:${m[2] ?? "5671"}/%2f`;
}

/**
 * The Authorization header Kong sends with its spans, taken from `OTEL_EXPORTER_OTLP_HEADERS`
 * (`key=value` pairs, comma separated, values percent-encoded). Undefined when there is none.
 */
export function otlpAuthorization(headers: string): string | undefined {
  for (const pair of headers.split(",")) {
    const at = pair.indexOf("=");
    if (at < 0) continue;
    if (pair.slice(0, at).trim().toLowerCase() === "authorization") {
      return decodeURIComponent(pair.slice(at + 1).trim());
    }
  }
  return undefined;
}

/** Per component name. */
export type PerComponent<T> = Record<string, T>;

export interface Passwords {
  /** Each component's database role. */
  database: PerComponent<random.RandomPassword>;
  /** The broker's admin user (the console, broker-setup); no host uses it. */
  brokerAdmin: random.RandomPassword;
  /** Each component's own broker user, named after the component. */
  broker: PerComponent<random.RandomPassword>;
  adminToken: random.RandomPassword;
}

// Letters and digits only: the passwords go into URLs (and Amazon MQ refuses commas, colons and
// equals signs), so no character needs escaping anywhere.
function password(name: string, length: number): random.RandomPassword {
  return new random.RandomPassword(name, { length, special: false, minLower: 2, minUpper: 2, minNumeric: 2 });
}

function perComponent<T>(components: readonly Component[], make: (c: Component) => T): PerComponent<T> {
  return Object.fromEntries(components.map((c) => [c.name, make(c)]));
}

export function createPasswords(components: readonly Component[]): Passwords {
  return {
    database: perComponent(components, (c) => password(`${c.name}-database`, 32)),
    brokerAdmin: password("broker", 32),
    broker: perComponent(components, (c) => password(`${c.name}-broker`, 32)),
    adminToken: password("host-admin-token", 48),
  };
}

export interface StoredSecret {
  secret: aws.secretsmanager.Secret;
  version: aws.secretsmanager.SecretVersion;
  arn: pulumi.Output<string>;
}

function stored(name: string, description: string, value: pulumi.Input<string>): StoredSecret {
  // Named by Pulumi (with a suffix): a deleted secret's name stays taken for the recovery window.
  const secret = new aws.secretsmanager.Secret(name, { description, recoveryWindowInDays: 7 });
  const version = new aws.secretsmanager.SecretVersion(name, {
    secretId: secret.id,
    secretString: pulumi.secret(value),
  });
  return { secret, version, arn: secret.arn };
}

export interface Secrets {
  /** JSON: username (the role), password, url (the host's `<NAME>_DATABASE_URL`). */
  database: PerComponent<StoredSecret>;
  /** JSON: username, password, url of the broker's admin user (the console login; broker-setup). */
  brokerAdmin: StoredSecret;
  /** JSON: username (the component's name), password, url (the host's `<NAME>_AMQP_URL`). */
  broker: PerComponent<StoredSecret>;
  /** The hosts' `HOST_ADMIN_TOKEN`, as a plain string. */
  adminToken: StoredSecret;
  /** JSON: headers (`OTEL_EXPORTER_OTLP_HEADERS`), authorization (Kong's header value). */
  otlp?: StoredSecret;
}

export function createSecrets(args: {
  prefix: string;
  components: readonly Component[];
  passwords: Passwords;
  databaseAddress: pulumi.Output<string>;
  brokerEndpoint: pulumi.Output<string>;
  brokerUsername: string;
  otlpHeaders?: pulumi.Output<string>;
}): Secrets {
  const { prefix, passwords, components } = args;
  const database = perComponent(components, ({ name, role, database: db }) => {
    const value = pulumi.all([passwords.database[name].result, args.databaseAddress]).apply(([pw, host]) =>
      JSON.stringify({ username: role, password: pw, url: databaseUrl(role, pw, host, db) }));
    return stored(`${name}-database`, `${prefix}: the ${name} role's password and database URL`, value);
  });
  const brokerAdmin = stored("amqp", `${prefix}: the RabbitMQ admin user (console, broker-setup) and its AMQP URL`,
    pulumi.all([passwords.brokerAdmin.result, args.brokerEndpoint]).apply(([pw, endpoint]) =>
      JSON.stringify({ username: args.brokerUsername, password: pw, url: amqpUrl(endpoint, args.brokerUsername, pw) })));
  // One broker user per component, named after it: the host refuses a URL with another user.
  const broker = perComponent(components, ({ name }) => {
    const value = pulumi.all([passwords.broker[name].result, args.brokerEndpoint]).apply(([pw, endpoint]) =>
      JSON.stringify({ username: name, password: pw, url: amqpUrl(endpoint, name, pw) }));
    return stored(`${name}-amqp`, `${prefix}: the ${name} RabbitMQ user and AMQP URL`, value);
  });
  const adminToken = stored("host-admin-token", `${prefix}: bearer token of the hosts' admin API`,
    passwords.adminToken.result);
  const otlp = args.otlpHeaders
    ? stored("otlp-headers", `${prefix}: headers of the OTLP exporter`, args.otlpHeaders.apply((headers) => {
      const authorization = otlpAuthorization(headers);
      if (!authorization) {
        throw new Error("otlpHeaders has no Authorization entry, which Kong's tracing plugin needs "
          + "(format: Authorization=Basic%20<base64>)");
      }
      return JSON.stringify({ headers, authorization });
    }))
    : undefined;
  return { database, brokerAdmin, broker, adminToken, otlp };
}

/** A task definition `secrets` entry: the whole secret, or one key of its JSON. */
export function secretRef(name: string, arn: pulumi.Input<string>, jsonKey?: string) {
  return { name, valueFrom: jsonKey ? pulumi.interpolate`${arn}:${jsonKey}::` : pulumi.output(arn) };
}
