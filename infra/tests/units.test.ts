// The program's pure parts: configuration checks, URL building, the Kong rewrite, the SQL.
import { strict as assert } from "node:assert";
import { describe, it } from "node:test";
import * as fs from "node:fs";
import {
  HOST_DEFAULTS, checkAdminCidrs, checkContainerInsights, checkFargateSize, checkKnownKeys, checkNetwork, checkRetention, checkScaling,
  checkVpcCidr, structured,
} from "../src/config";
import { Component } from "../src/components";
import { brokerPermissions, brokerUsers } from "../src/broker-setup";
import { setupSql } from "../src/db-setup";
import { findKongYaml, kongDeclarativeConfig } from "../src/kong-config";
import { subnetCidr } from "../src/network";
import { lifecyclePolicy } from "../src/registry";
import { amqpUrl, databaseUrl, otlpAuthorization } from "../src/secrets";

const KONG_YML = fs.readFileSync(findKongYaml(), "utf8");
const UPSTREAMS = { orders: "orders.ns:8000", invoices: "invoices.ns:8000" };

/** A component as a manifest of the usual shape would describe it. */
function component(name: string, more: Partial<Component> = {}): Component {
  const sql = name.replace(/-/g, "_");
  return { name, route: `/${name}`, role: sql, database: sql, publishes: [], subscriptions: [], ...more };
}

/** A list of named entities as `name -> pick(entity)`, so the order kong.yml lists them in does not matter. */
function byName(list: any[], pick: (entity: any) => unknown): Record<string, unknown> {
  return Object.fromEntries(list.map((entity) => [entity.name, pick(entity)]));
}

describe("configuration checks", () => {
  it("accepts Fargate sizes and refuses others", () => {
    checkFargateSize("x", 256, 512);
    checkFargateSize("x", 1024, 8192);
    assert.throws(() => checkFargateSize("orders", 300, 512), /orders: cpu 300/);
    assert.throws(() => checkFargateSize("orders", 256, 4096), /memory 4096 MiB does not go with cpu 256/);
  });

  it("wants min <= desired <= max", () => {
    const ok = { ...HOST_DEFAULTS, minCount: 1, maxCount: 3 };
    checkScaling("x", ok);
    assert.throws(() => checkScaling("orders", { ...ok, desiredCount: 5 }), /orders: minCount <= desiredCount/);
    assert.throws(() => checkScaling("orders", { ...ok, minCount: 0, desiredCount: 0 }), /minCount must be at least 1/);
    assert.throws(() => checkScaling("orders", { ...ok, cpuTarget: 120 }), /percentage/);
    assert.throws(() => checkScaling("invoices", { ...ok, backlogPerTask: 0 }), /invoices.backlogPerTask must be above 0/);
  });

  it("keeps Container Insights on, which the backlog policy reads the running task count from", () => {
    assert.equal(checkContainerInsights("enabled"), "enabled");
    assert.equal(checkContainerInsights("enhanced"), "enhanced");
    for (const off of ["false", "disabled"]) assert.throws(() => checkContainerInsights(off), /RunningTaskCount/);
  });

  it("refuses admin sources that are not CIDRs or are everyone", () => {
    assert.deepEqual(checkAdminCidrs(["10.0.0.0/8", "192.168.1.7/32", "fd00::/8"]), ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8"]);
    assert.throws(() => checkAdminCidrs(["0.0.0.0/0"]), /everyone/);
    assert.throws(() => checkAdminCidrs(["::/0"]), /everyone/);
    assert.throws(() => checkAdminCidrs(["10.0.0.300/8"]), /not a CIDR/);
    assert.throws(() => checkAdminCidrs(["10.0.0.0"]), /not a CIDR/);
    assert.throws(() => checkAdminCidrs("10.0.0.0/8"), /must be a list/);
  });

  it("wants all three keys of an existing VPC, with two subnets each", () => {
    assert.throws(() => checkNetwork({ vpcId: "vpc-1", vpcCidr: "10.0.0.0/16" }), /needs all of/);
    assert.throws(() => checkNetwork({ vpcId: "vpc-1", publicSubnetIds: ["a"], privateSubnetIds: ["b", "c"], vpcCidr: "10.0.0.0/16" }),
      /publicSubnetIds must list at least two/);
    checkNetwork({ vpcId: "vpc-1", publicSubnetIds: ["a", "b"], privateSubnetIds: ["c", "d"], vpcCidr: "10.0.0.0/16" });
  });

  it("merges structured settings over their defaults, with the defaults' types", () => {
    const defaults = { cpu: 256, image: "kong", multiAz: false };
    assert.deepEqual(structured("x", defaults, undefined), defaults);
    assert.deepEqual(structured("x", defaults, { cpu: "512", multiAz: "true" }), { cpu: 512, image: "kong", multiAz: true });
    assert.throws(() => structured("orders", defaults, { cpus: 512 }), /orders.cpus is not a setting/);
    assert.throws(() => structured("orders", defaults, { cpu: "lots" }), /orders.cpu must be a number/);
    assert.throws(() => structured("orders", defaults, { multiAz: "yes" }), /true or false/);
    assert.throws(() => structured("orders", defaults, "512"), /must be an object/);
  });

  it("takes only the log retentions CloudWatch offers", () => {
    assert.equal(checkRetention(30), 30);
    assert.throws(() => checkRetention(31), /logRetentionDays must be one of/);
  });

  it("refuses keys of the project it does not know, and ignores other namespaces", () => {
    checkKnownKeys("wasm-platform", ["wasm-platform:imageTag", "aws:region", "other:thing"]);
    assert.throws(() => checkKnownKeys("wasm-platform", ["wasm-platform:certificateARN"]), /unknown configuration wasm-platform:certificateARN/);
  });

  it("knows each component's sizing by the component's name, and no other", () => {
    checkKnownKeys("wasm-platform", ["wasm-platform:orders", "wasm-platform:shipping"], ["orders", "shipping"]);
    assert.throws(() => checkKnownKeys("wasm-platform", ["wasm-platform:invoices"], ["orders"]), /unknown configuration wasm-platform:invoices/);
    assert.throws(() => checkKnownKeys("wasm-platform", [], ["orders", "mq"]), /components named like a setting: mq/);
  });

  it("carves /20 subnets out of a /16", () => {
    assert.equal(checkVpcCidr("10.42.0.0/16"), "10.42.0.0/16");
    assert.throws(() => checkVpcCidr("10.42.0.0/20"), /must be an IPv4 \/16/);
    assert.deepEqual([0, 1, 8, 9].map((i) => subnetCidr("10.42.0.0/16", i)),
      ["10.42.0.0/20", "10.42.16.0/20", "10.42.128.0/20", "10.42.144.0/20"]);
  });
});

describe("connection strings", () => {
  it("database URLs ask for verified TLS against the RDS bundle", () => {
    assert.equal(databaseUrl("orders", "pw1", "db.example", "orders"),
      "postgres://orders:pw1@db.example:5432/orders?sslmode=verify-full&sslrootcert=/app/certs/rds-global-bundle.pem");
  });

  it("AMQP URLs come from the broker endpoint, on the default vhost", () => {
    assert.equal(amqpUrl("amqps://b-1.mq.eu-west-1.amazonaws.com:5671", "u", "p"), "amqps://u:p@b-1.mq.eu-west-1.amazonaws.com:5671/%2f");
    assert.equal(amqpUrl("amqps://b-1.mq.eu-west-1.amazonaws.com", "u", "p"), "amqps://u:p@b-1.mq.eu-west-1.amazonaws.com:5671/%2f");
    assert.throws(() => amqpUrl("https://b-1.example:443", "u", "p"), /unexpected Amazon MQ endpoint/);
  });

  it("Kong's Authorization value is the decoded OTLP header", () => {
    assert.equal(otlpAuthorization("Authorization=Basic%20YWJj"), "Basic YWJj");
    assert.equal(otlpAuthorization("x-team=1, authorization=Bearer%20t0k=="), "Bearer t0k==");
    assert.equal(otlpAuthorization("x-honeycomb-team=abc"), undefined);
  });
});

describe("Kong declarative config", () => {
  it("points each service at an upstream of its own, whose target is the given host", () => {
    const config = kongDeclarativeConfig(KONG_YML, { upstreams: UPSTREAMS }) as any;
    assert.deepEqual(byName(config.services, (s) => s.url),
      { orders: "http://orders.upstream:8000/orders", invoices: "http://invoices.upstream:8000/invoices" });
    assert.deepEqual(byName(config.upstreams, (u) => u.targets), {
      "orders.upstream": [{ target: "orders.ns:8000", weight: 100 }],
      "invoices.upstream": [{ target: "invoices.ns:8000", weight: 100 }],
    });
    assert.ok(!config.plugins.some((p: any) => p.name === "opentelemetry"));
  });

  it("checks readiness (/health) actively and connection failures passively", () => {
    const config = kongDeclarativeConfig(KONG_YML, { upstreams: UPSTREAMS }) as any;
    for (const upstream of config.upstreams) {
      const { active, passive } = upstream.healthchecks;
      assert.deepEqual([active.type, active.http_path, active.timeout], ["http", "/health", 3]);
      assert.deepEqual([active.healthy.interval, active.healthy.successes], [3, 2]);
      assert.deepEqual([active.unhealthy.interval, active.unhealthy.http_failures, active.unhealthy.tcp_failures,
        active.unhealthy.timeouts], [3, 2, 2, 2]);
      assert.deepEqual(passive, { type: "http", unhealthy: { http_failures: 0, tcp_failures: 2, timeouts: 3 } });
    }
  });

  it("keeps a port the override does not give", () => {
    const config = kongDeclarativeConfig(KONG_YML, { upstreams: { ...UPSTREAMS, orders: "orders.other" } }) as any;
    assert.equal(byName(config.services, (s) => s.url).orders, "http://orders.upstream:8000/orders");
    assert.deepEqual(byName(config.upstreams, (u) => u.targets[0].target)["orders.upstream"], "orders.other:8000");
  });

  it("keeps upstreams kong.yml declares, and refuses one named like a generated one", () => {
    const source = (name: string) => `${KONG_YML}\nupstreams:\n  - name: ${name}\n    targets: [{ target: "x:1" }]\n`;
    const config = kongDeclarativeConfig(source("legacy"), { upstreams: UPSTREAMS }) as any;
    assert.deepEqual(config.upstreams.map((u: any) => u.name).sort(), ["invoices.upstream", "legacy", "orders.upstream"]);
    assert.equal(config.upstreams[0].name, "legacy");
    assert.throws(() => kongDeclarativeConfig(source("orders.upstream"), { upstreams: UPSTREAMS }), /already declares an upstream named orders.upstream/);
  });

  it("sends spans to the endpoint, with the header only when asked", () => {
    const plain = kongDeclarativeConfig(KONG_YML, { upstreams: UPSTREAMS, tracesEndpoint: "https://c/v1/traces" }) as any;
    const otel = plain.plugins.find((p: any) => p.name === "opentelemetry");
    assert.equal(otel.config.traces_endpoint, "https://c/v1/traces");
    assert.equal(otel.config.headers, undefined);
    assert.equal(otel.config.resource_attributes["service.name"], "kong");
  });

  it("refuses a service without an upstream, or an upstream without a service", () => {
    assert.throws(() => kongDeclarativeConfig(KONG_YML, { upstreams: { orders: "o" } }), /no upstream for kong.yml service invoices/);
    assert.throws(() => kongDeclarativeConfig(KONG_YML, { upstreams: { ...UPSTREAMS, shipping: "s" } }), /shipping/);
    assert.throws(() => kongDeclarativeConfig(KONG_YML, { upstreams: { ...UPSTREAMS, orders: "http://x" } }), /not host\[:port\]/);
  });

  it("handles services given as host and port, and plugins on services and routes", () => {
    const source = [
      "_format_version: '3.0'",
      "services:",
      "  - name: a",
      "    host: a",
      "    port: 80",
      "    plugins: [{ name: opentelemetry, config: { traces_endpoint: 'http://j/v1/traces' } }]",
      "    routes: [{ name: a, paths: [/a], plugins: [{ name: opentelemetry }, { name: cors }] }]",
    ].join("\n");
    const config = kongDeclarativeConfig(source, { upstreams: { a: "a.ns:8000" } }) as any;
    assert.deepEqual([config.services[0].host, config.services[0].port], ["a.upstream", 8000]);
    assert.equal(config.upstreams[0].targets[0].target, "a.ns:8000");
    assert.deepEqual(config.services[0].plugins, []);
    assert.deepEqual(config.services[0].routes[0].plugins, [{ name: "cors" }]);
  });
});

describe("db-setup SQL", () => {
  it("creates each role and database only when missing and never holds a password", () => {
    const sql = setupSql([component("orders")]);
    assert.match(sql, /^\\set ON_ERROR_STOP on$/m);
    assert.match(sql, /^SELECT 'CREATE ROLE orders LOGIN' WHERE NOT EXISTS \(SELECT FROM pg_roles WHERE rolname = 'orders'\)\n\\gexec$/m);
    assert.match(sql, /^SELECT 'CREATE DATABASE orders OWNER orders' WHERE NOT EXISTS \(SELECT FROM pg_database WHERE datname = 'orders'\)\n\\gexec$/m);
    assert.match(sql, /^ALTER ROLE orders WITH LOGIN NOCREATEDB NOCREATEROLE PASSWORD :'orders_password';$/m);
    assert.match(sql, /^REVOKE ALL ON DATABASE orders FROM PUBLIC;$/m);
    // The password variable is set from the environment before it is used.
    assert.ok(sql.indexOf("\\getenv orders_password ORDERS_PASSWORD") < sql.indexOf(":'orders_password'"));
  });

  it("uses the role and database the manifest's database_url names", () => {
    const sql = setupSql([component("billing-runs", { role: "billing", database: "billing_runs" })]);
    assert.match(sql, /^\\getenv billing_password BILLING_RUNS_PASSWORD$/m);
    assert.match(sql, /^SELECT 'CREATE DATABASE billing_runs OWNER billing' WHERE NOT EXISTS \(SELECT FROM pg_database WHERE datname = 'billing_runs'\)$/m);
    assert.match(sql, /^REVOKE ALL ON DATABASE billing_runs FROM PUBLIC;$/m);
    assert.ok(!sql.includes("billing-runs "), "the component's name is no SQL identifier");
  });

  it("keeps PUBLIC out and sets the role's session defaults, once the role exists", () => {
    const sql = setupSql([component("orders"), component("invoices")]);
    for (const name of ["orders", "invoices"]) {
      assert.match(sql, new RegExp(`^REVOKE ALL ON DATABASE ${name} FROM PUBLIC;$`, "m"));
      const defaults = sql.split("\n").filter((line) => line.startsWith(`ALTER ROLE ${name} SET `));
      assert.deepEqual(defaults, [
        `ALTER ROLE ${name} SET statement_timeout = '30s';`,
        `ALTER ROLE ${name} SET idle_in_transaction_session_timeout = '30s';`,
      ]);
      assert.ok(sql.indexOf(`CREATE ROLE ${name} LOGIN`) < sql.indexOf(defaults[0]));
    }
  });
});

describe("broker users", () => {
  it("are the components, on the vhost /, each with its own password variable", () => {
    assert.deepEqual(brokerUsers([component("orders"), component("billing-runs")]).map((u) => [u.name, u.vhost, u.passwordEnv]),
      [["orders", "/", "ORDERS_PASSWORD"], ["billing-runs", "/", "BILLING_RUNS_PASSWORD"]]);
  });

  it("may touch the exchange and their own queues, never the other component's", () => {
    const orders = brokerPermissions("orders");
    const may = (pattern: string, name: string) => new RegExp(pattern).test(name);
    // Declaring: the exchange and its own queues.
    assert.ok(may(orders.configure, "platform.events"));
    assert.ok(may(orders.configure, "platform.events.orders.invoices.created"));
    for (const name of ["platform.events.invoices.orders.created", "platform.eventsX", "platform-events", "amq.default",
      "other", "xplatform.events", "platform.events.orders"]) {
      assert.ok(!may(orders.configure, name), `configure ${name}`);
    }
    // Publishing and binding: the exchange, its own queues, the default exchange.
    for (const name of ["platform.events", "platform.events.orders.x", "amq.default"]) assert.ok(may(orders.write, name), name);
    for (const name of ["platform.events.invoices.orders.created", "amq.topic", "amq.defaultX", "amqXdefault", "platform.eventsX"]) {
      assert.ok(!may(orders.write, name), `write ${name}`);
    }
    // Consuming and binding from: the exchange and its own queues.
    for (const name of ["platform.events", "platform.events.orders.x"]) assert.ok(may(orders.read, name), name);
    for (const name of ["platform.events.invoices.orders.created", "amq.default", "platform.eventsX"]) {
      assert.ok(!may(orders.read, name), `read ${name}`);
    }
  });
});

describe("image repository lifecycle", () => {
  it("expires all but the newest N untagged images, never a tagged release", () => {
    const rules = JSON.parse(lifecyclePolicy(5)).rules;
    assert.equal(rules.length, 1);
    assert.deepEqual(rules[0].selection, { tagStatus: "untagged", countType: "imageCountMoreThan", countNumber: 5 });
  });
});
