// Kong's declarative configuration on AWS is the repository's kong/kong.yml, the same file compose
// mounts, with only what differs between the two rewritten: where the services are and where
// the spans go. Routes and the other plugins stay exactly as written.
import * as fs from "fs";
import * as path from "path";
import * as yaml from "js-yaml";

/** The environment variable Kong's env vault reads `{vault://env/kong-otlp-authorization}` from. */
export const KONG_OTLP_AUTHORIZATION_ENV = "KONG_OTLP_AUTHORIZATION";
export const KONG_OTLP_AUTHORIZATION_REF = "{vault://env/kong-otlp-authorization}";

export interface KongRewrite {
  /** kong.yml service name -> `host[:port]` it is reached at here. */
  upstreams: Record<string, string>;
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

function rewriteHost(service: Json, upstream: string): void {
  const m = /^([a-zA-Z0-9.-]+)(?::(\d+))?$/.exec(upstream);
  if (!m) throw new Error(`kongUpstreams: ${upstream} is not host[:port]`);
  const [, host, port] = m;
  if (typeof service.url === "string") {
    const url = new URL(service.url);
    url.hostname = host;
    if (port) url.port = port;
    service.url = url.toString();
  } else if (typeof service.host === "string") {
    service.host = host;
    if (port) service.port = Number(port);
  } else {
    throw new Error(`kong.yml service ${String(service.name)} has neither url nor host`);
  }
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

/**
 * The declarative configuration for Kong's `KONG_DECLARATIVE_CONFIG_STRING`. Every service in
 * the file must be given an upstream and every upstream must name a service, so a service added
 * to kong.yml cannot silently keep pointing at a compose hostname.
 */
export function kongDeclarativeConfig(source: string, rewrite: KongRewrite): Json {
  const config = yaml.load(source);
  if (!isObject(config) || !Array.isArray(config.services)) {
    throw new Error("kong.yml: expected a mapping with a services list");
  }
  const seen = new Set<string>();
  for (const service of config.services) {
    if (!isObject(service) || typeof service.name !== "string") throw new Error("kong.yml: a service has no name");
    const upstream = rewrite.upstreams[service.name];
    if (!upstream) throw new Error(`no upstream for kong.yml service ${service.name}`);
    rewriteHost(service, upstream);
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
  config.plugins = rewritePlugins(config.plugins, rewrite);
  return JSON.parse(JSON.stringify(config)) as Json;
}
