// Kong's declarative configuration on AWS is the repository's kong/kong.yml, the same file compose
// mounts, with only what differs between the two rewritten: where the services are and where
// the spans go. Routes and the other plugins stay exactly as written.
//
// Where the services are: each kong.yml service is pointed at an upstream of its own (a Kong
// load balancer, `<service>.upstream`) whose one target is the service's Cloud Map name. Kong
// resolves that name to every running task's address and balances over them, and the upstream's
// health checks decide which of those addresses get requests: readiness (`GET /health`, which
// asks the component's database) is Kong's to judge, while ECS restarts a task only when it fails
// liveness (hosts.ts). No load balancer target group sits between Kong and the hosts, so this is
// the one place a task that serves but is not ready is kept out of rotation.
import * as fs from "fs";
import * as path from "path";
import * as yaml from "js-yaml";

/** The environment variable Kong's env vault reads `{vault://env/kong-otlp-authorization}` from. */
export const KONG_OTLP_AUTHORIZATION_ENV = "KONG_OTLP_AUTHORIZATION";
export const KONG_OTLP_AUTHORIZATION_REF = "{vault://env/kong-otlp-authorization}";

export interface KongRewrite {
  /** kong.yml service name -> `host[:port]` it is reached at here. */
  upstreams: Record<string, string>;
  /**
   * Component name -> the route its manifest declares: kong.yml must have a service for each,
   * of that name and with that path among its routes' paths, and no other service.
   */
  routes?: Record<string, string>;
  /** `<endpoint>/v1/traces`; without one the opentelemetry plugin is dropped. */
  tracesEndpoint?: string;
  /** Send `Authorization` (from the env vault) with the spans. */
  authorization?: boolean;
}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** kong/kong.yml, looked for from here upwards (the program runs from source or compiled). */
export function findKongYaml(start: string = __dirname): string {
  for (let dir = start; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, "kong", "kong.yml");
    if (fs.existsSync(candidate)) return candidate;
    if (path.dirname(dir) === dir) throw new Error(`kong/kong.yml not found above ${start}`);
  }
}

/** The virtual host a kong.yml service is pointed at: an upstream's name, never looked up in DNS. */
export function upstreamName(service: string): string {
  return `${service}.upstream`;
}

/**
 * Every upstream's health checks. Kong keeps the health of each address a target's name resolves
 * to (each task), per Kong node, and sends requests only to healthy ones; a new address starts
 * healthy. When every address is unhealthy Kong answers 503 itself.
 *
 * - Active: `GET /health` on each address every 3 s. Two failures (a 5xx such as the 503 a host
 *   answers while its database is away or while it drains before stopping, a refused connection,
 *   no answer in 3 s) take it out; two 200s put it back. The timeout is above the host's own 2 s
 *   bound on its database check, so a slow database shows as the host's 503, not as Kong's
 *   timeout. Two probes, each at most 3 s after the last and given 3 s (12 s in all), fit in
 *   the host's drain delay (hosts.ts, 15 s): a stopping task, which answers 503 at once, is out
 *   of rotation before it stops serving.
 * - Passive: proxied requests that fail to connect (twice) or time out (three times) take an
 *   address out between probes; the active checks bring it back. HTTP statuses
 *   of proxied requests are not counted (`http_failures: 0`): a component's 4xx and 5xx are about
 *   that request, and a 503 for a database outage is the same on every task, which the active
 *   checks already see.
 */
export const UPSTREAM_HEALTHCHECKS = {
  active: {
    type: "http",
    http_path: "/health",
    timeout: 3,
    concurrency: 10,
    healthy: { interval: 3, successes: 2, http_statuses: [200] },
    unhealthy: {
      interval: 3,
      http_failures: 2,
      tcp_failures: 2,
      timeouts: 2,
      http_statuses: [404, 429, 500, 501, 502, 503, 504, 505],
    },
  },
  passive: {
    type: "http",
    unhealthy: { http_failures: 0, tcp_failures: 2, timeouts: 3 },
  },
} as const;

/** `host[:port]`, the port defaulting to the one kong.yml gives the service. */
function endpoint(upstream: string, defaultPort: number): { host: string; port: number } {
  const m = /^([a-zA-Z0-9.-]+)(?::(\d+))?$/.exec(upstream);
  if (!m) throw new Error(`kongUpstreams: ${upstream} is not host[:port]`);
  return { host: m[1], port: m[2] ? Number(m[2]) : defaultPort };
}

/**
 * Points a kong.yml service at its upstream and returns that upstream, whose one target is
 * `upstream` (`host[:port]`). Kong sends the target's name (with its port) as the Host header,
 * as it did when the service named the host itself.
 */
function pointAtUpstream(service: Json, upstream: string): Json {
  const name = upstreamName(String(service.name));
  let target: { host: string; port: number };
  if (typeof service.url === "string") {
    const url = new URL(service.url);
    target = endpoint(upstream, url.port ? Number(url.port) : url.protocol === "https:" ? 443 : 80);
    url.hostname = name;
    url.port = String(target.port);
    service.url = url.toString();
  } else if (typeof service.host === "string") {
    target = endpoint(upstream, typeof service.port === "number" ? service.port : 80);
    service.host = name;
    service.port = target.port;
  } else {
    throw new Error(`kong.yml service ${String(service.name)} has neither url nor host`);
  }
  return {
    name,
    algorithm: "round-robin",
    healthchecks: UPSTREAM_HEALTHCHECKS,
    targets: [{ target: `${target.host}:${target.port}`, weight: 100 }],
  };
}

/** Rewrites (or drops) every opentelemetry plugin in a plugin list; returns the new list. */
function rewritePlugins(plugins: unknown, rewrite: KongRewrite): unknown {
  if (!Array.isArray(plugins)) return plugins;
  const kept: unknown[] = [];
  for (const plugin of plugins) {
    if (!isObject(plugin) || plugin.name !== "opentelemetry") {
      kept.push(plugin);
      continue;
    }
    if (!rewrite.tracesEndpoint) continue;
    const config: Json = isObject(plugin.config) ? { ...plugin.config } : {};
    config.traces_endpoint = rewrite.tracesEndpoint;
    // The header's value stays out of the configuration: Kong resolves the reference from its
    // environment, which ECS fills from Secrets Manager.
    if (rewrite.authorization) config.headers = { Authorization: KONG_OTLP_AUTHORIZATION_REF };
    else delete config.headers;
    kept.push({ ...plugin, config });
  }
  return kept;
}

/** kong.yml's services are the components, each routed at its manifest's route. */
function checkRoutes(services: unknown[], routes: Record<string, string>): void {
  const named = new Map<string, Json>();
  for (const service of services) {
    if (isObject(service) && typeof service.name === "string") named.set(service.name, service);
  }
  for (const name of named.keys()) {
    if (!(name in routes)) throw new Error(`kong.yml service ${name} is no component: there is no deploy/manifests/${name}.toml`);
  }
  for (const [name, route] of Object.entries(routes)) {
    const service = named.get(name);
    if (!service) throw new Error(`component ${name} (deploy/manifests/${name}.toml) has no kong.yml service`);
    const paths = (Array.isArray(service.routes) ? service.routes : [])
      .flatMap((r) => (isObject(r) && Array.isArray(r.paths) ? r.paths : []));
    if (!paths.includes(route)) {
      throw new Error(`kong.yml service ${name} routes ${paths.join(", ") || "nothing"}, but its manifest's route is ${route}`);
    }
  }
}

/**
 * The declarative configuration for Kong's `KONG_DECLARATIVE_CONFIG_STRING`. Every service in
 * the file must be given an upstream and every upstream must name a service, so a service added
 * to kong.yml cannot silently keep pointing at a compose hostname. Each service is pointed at an
 * upstream of its own, with readiness checks, whose target is the `host[:port]` given for it.
 */
export function kongDeclarativeConfig(source: string, rewrite: KongRewrite): Json {
  const config = yaml.load(source);
  if (!isObject(config) || !Array.isArray(config.services)) {
    throw new Error("kong.yml: expected a mapping with a services list");
  }
  if (rewrite.routes) checkRoutes(config.services, rewrite.routes);
  const seen = new Set<string>();
  const upstreams: Json[] = [];
  for (const service of config.services) {
    if (!isObject(service) || typeof service.name !== "string") throw new Error("kong.yml: a service has no name");
    const upstream = rewrite.upstreams[service.name];
    if (!upstream) throw new Error(`no upstream for kong.yml service ${service.name}`);
    upstreams.push(pointAtUpstream(service, upstream));
    seen.add(service.name);
    service.plugins = rewritePlugins(service.plugins, rewrite);
    if (Array.isArray(service.routes)) {
      for (const route of service.routes) {
        if (isObject(route)) route.plugins = rewritePlugins(route.plugins, rewrite);
      }
    }
  }
  const unknown = Object.keys(rewrite.upstreams).filter((name) => !seen.has(name));
  if (unknown.length > 0) throw new Error(`kongUpstreams names services kong.yml does not have: ${unknown.join(", ")}`);
  // Upstreams kong.yml declares itself (none today) are kept; a name taken twice is refused.
  const declared = Array.isArray(config.upstreams) ? config.upstreams : [];
  const taken = new Set(declared.map((u) => (isObject(u) ? u.name : undefined)));
  const clash = upstreams.find((u) => taken.has(u.name));
  if (clash) throw new Error(`kong.yml already declares an upstream named ${String(clash.name)}`);
  config.upstreams = [...declared, ...upstreams];
  config.plugins = rewritePlugins(config.plugins, rewrite);
  return JSON.parse(JSON.stringify(config)) as Json;
}
