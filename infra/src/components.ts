// The platform's components: the one list everything per component is declared from (host
// services, their secrets, databases, broker users, Cloud Map names, Kong upstreams, scaling,
// outputs). The list is the repository's folder deploy/manifests: one container manifest
// `<name>.toml` per host service, which runs the one component named after the file. It is read
// once, when the program starts, from the repository the program is in; the image carries the
// same folder (`/app/manifests`, which HOST_CONFIG names), so the tasks run what is read here.
import * as fs from "fs";
import * as path from "path";
import { parse } from "smol-toml";
import { findKongYaml } from "./kong-config";

/**
 * The environment variable naming another repository to read kong/kong.yml and deploy/manifests
 * from, instead of the one this program is in (the tests' stand-in repositories use it).
 */
export const REPOSITORY_ENV = "PLATFORM_REPOSITORY";

export const MANIFESTS = path.join("deploy", "manifests");

/** The exchange the broker users' permissions are written for (broker-setup.ts). */
export const EVENTS_EXCHANGE = "platform.events";

/** One component, as its manifest describes it. */
export interface Component {
  /** The file's stem and the `[[components]]` entry's name: the service, its broker user, its Cloud Map name. */
  name: string;
  /** The path prefix Kong routes to it (`/orders`); its docs are under `<route>/docs/`. */
  route: string;
  /** Its PostgreSQL login role and database, from the manifest's `database_url`. */
  role: string;
  database: string;
  /** Topics it publishes and consumes; a subscription is a queue `<exchange>.<name>.<topic>`. */
  publishes: string[];
  subscriptions: string[];
}

// As the host checks them (host/src/config/component.rs): a name of lower-case letters, digits
// and single '-'; a route of path segments.
const NAME = /^[a-z][a-z0-9]*(-[a-z0-9]+)*$/;
const ROUTE = /^(\/[a-z0-9][a-z0-9._-]*)+$/;
// db-setup writes roles and databases unquoted.
const SQL_NAME = /^[a-z_][a-z0-9_]*$/;

/**
 * Names this program cannot give a component: its own families of tasks (their services, log
 * groups and roles are named so), the broker's admin user and the database's master user.
 */
export const RESERVED_NAMES = ["kong", "db-setup", "broker-setup", "platform", "postgres"];

/** `<NAME>` of the host's `<NAME>_DATABASE_URL`: upper case, `-` as `_`. */
export function envName(component: string): string {
  return component.toUpperCase().replace(/-/g, "_");
}

/** The queue a component consumes a topic from, on the vhost `/`. */
export function queueName(component: string, topic: string): string {
  return `${EVENTS_EXCHANGE}.${component}.${topic}`;
}

/** The repository the program reads: `PLATFORM_REPOSITORY`, else the one holding this program. */
export function repositoryRoot(): string {
  const given = process.env[REPOSITORY_ENV];
  return given ? path.resolve(given) : path.dirname(path.dirname(findKongYaml()));
}

function strings(value: unknown, where: string): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.some((v) => typeof v !== "string")) throw new Error(`${where} must be a list of topics`);
  return value as string[];
}

/** One manifest's component; `file` is the manifest's path, named in every error. */
export function parseManifest(file: string, text: string): Component {
  const name = path.basename(file, ".toml");
  const where = path.join(MANIFESTS, path.basename(file));
  if (!NAME.test(name) || name.length > 40) {
    throw new Error(`${where}: the file's name is the component's: up to 40 lower-case letters, digits and single '-'`);
  }
  if (RESERVED_NAMES.includes(name)) throw new Error(`${where}: ${name} is a name the deployment keeps for itself`);
  let manifest: Record<string, unknown>;
  try {
    manifest = parse(text) as Record<string, unknown>;
  } catch (error) {
    throw new Error(`${where}: ${(error as Error).message}`);
  }
  const entries = Array.isArray(manifest.components) ? manifest.components as Record<string, unknown>[] : [];
  if (entries.length !== 1 || entries[0].name !== name) {
    throw new Error(`${where}: expected one [[components]] entry, named ${name} after the file`);
  }
  const [entry] = entries;
  const route = entry.route;
  if (typeof route !== "string" || !ROUTE.test(route) || route === "/health" || route.startsWith("/health/")) {
    throw new Error(`${where}: route ${String(route)} is not a path prefix such as /${name}`);
  }
  let database: URL;
  try {
    database = new URL(String(entry.database_url));
  } catch {
    throw new Error(`${where}: database_url must be a postgres:// URL naming its role and database`);
  }
  const role = decodeURIComponent(database.username);
  const dbName = database.pathname.replace(/^\/+|\/+$/g, "");
  for (const [what, value] of [["role", role], ["database", dbName]]) {
    if (!SQL_NAME.test(value) || value.length > 63 || RESERVED_NAMES.includes(value)) {
      throw new Error(`${where}: database_url's ${what} ${JSON.stringify(value)} must be lower-case letters, digits and '_'`);
    }
  }
  const messaging = (manifest.messaging ?? {}) as Record<string, unknown>;
  if (messaging.exchange !== undefined && messaging.exchange !== EVENTS_EXCHANGE) {
    throw new Error(`${where}: exchange ${String(messaging.exchange)}, but the broker users may use ${EVENTS_EXCHANGE} only`);
  }
  return {
    name,
    route,
    role,
    database: dbName,
    publishes: strings(entry.publishes, `${where}: publishes`),
    subscriptions: strings(entry.subscriptions, `${where}: subscriptions`),
  };
}

/** Whether two routes are one, or one is under the other (Kong could not tell them apart). */
function nested(a: string, b: string): boolean {
  return a === b || a.startsWith(`${b}/`) || b.startsWith(`${a}/`);
}

/**
 * Every component of the repository at `root`, sorted by name. Refuses an empty folder, two
 * components with one route (or one under another's), and two with one database or role.
 */
export function readComponents(root: string = repositoryRoot()): Component[] {
  const dir = path.join(root, MANIFESTS);
  const files = fs.readdirSync(dir).filter((file) => file.endsWith(".toml")).sort();
  if (files.length === 0) throw new Error(`${dir} holds no manifest`);
  const components = files.map((file) => parseManifest(file, fs.readFileSync(path.join(dir, file), "utf8")));
  components.forEach((a, i) => {
    for (const b of components.slice(i + 1)) {
      if (nested(a.route, b.route)) {
        throw new Error(`${a.name} (${a.route}) and ${b.name} (${b.route}): routes must not be equal or nested`);
      }
      if (a.role === b.role || a.database === b.database) throw new Error(`${a.name} and ${b.name} share a database role or database`);
    }
  });
  return components;
}
