// The component list: read from deploy/manifests, one manifest per host service, checked before
// anything is declared from it.
import { strict as assert } from "node:assert";
import { describe, it } from "node:test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { envName, parseManifest, queueName, readComponents, repositoryRoot } from "../src/components";
import { kongDeclarativeConfig } from "../src/kong-config";

/** A manifest of the usual shape; `extra` is appended to its [[components]] entry. */
function manifest(name: string, route = `/${name}`, extra = ""): string {
  return [
    "[messaging]",
    `url = "amqp://${name}@rabbitmq:5672/%2f"`,
    'exchange = "platform.events"',
    "",
    "[[components]]",
    `name = "${name}"`,
    `wasm = "/app/components/${name}.wasm"`,
    `route = "${route}"`,
    `database_url = "postgres://${name.replace(/-/g, "_")}@postgres:5432/${name.replace(/-/g, "_")}"`,
    extra,
  ].join("\n");
}

/** A stand-in repository holding these manifests, removed after `use`. */
function withManifests<T>(files: Record<string, string>, use: (root: string) => T): T {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "manifests-"));
  try {
    fs.mkdirSync(path.join(root, "deploy", "manifests"), { recursive: true });
    for (const [file, text] of Object.entries(files)) fs.writeFileSync(path.join(root, "deploy", "manifests", file), text);
    return use(root);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

describe("the component list", () => {
  it("is the repository's manifests, by name, with their routes, databases and topics", () => {
    const components = readComponents(repositoryRoot());
    assert.deepEqual(components.map((c) => [c.name, c.route, c.role, c.database]), [
      ["invoices", "/invoices", "invoices", "invoices"],
      ["orders", "/orders", "orders", "orders"],
    ]);
    const invoices = components[0];
    assert.deepEqual([invoices.publishes, invoices.subscriptions], [["invoices.issued"], ["orders.created"]]);
    assert.equal(queueName("invoices", "orders.created"), "platform.events.invoices.orders.created");
  });

  it("follows the folder: a third manifest is a third component", () => {
    withManifests({ "a.toml": manifest("a"), "shipping.toml": manifest("shipping", "/ship", 'subscriptions = ["orders.created"]'),
      "notes.txt": "not a manifest" }, (root) => {
      assert.deepEqual(readComponents(root).map((c) => [c.name, c.route, c.subscriptions]),
        [["a", "/a", []], ["shipping", "/ship", ["orders.created"]]]);
    });
  });

  it("spells a name with '-' as '_' in variables", () => {
    assert.equal(envName("billing-runs"), "BILLING_RUNS");
  });

  it("refuses a manifest whose component is not named after its file, or has more than one", () => {
    assert.throws(() => parseManifest("a.toml", manifest("b")),
      /deploy\/manifests\/a.toml: expected one \[\[components\]\] entry, named a/);
    assert.throws(() => parseManifest("a.toml", `${manifest("a")}\n[[components]]\nname = "b"\n`), /expected one/);
    assert.throws(() => parseManifest("a.toml", "[http]\n"), /expected one/);
  });

  it("refuses names and routes the deployment cannot use", () => {
    for (const name of ["kong", "db-setup", "broker-setup", "platform", "postgres"]) {
      assert.throws(() => parseManifest(`${name}.toml`, manifest(name)), /keeps for itself/, name);
    }
    for (const name of ["Orders", "orders_v2", "-a", "a--b"]) {
      assert.throws(() => parseManifest(`${name}.toml`, manifest(name)), /lower-case letters/, name);
    }
    for (const route of ["orders", "/orders/", "/health", "/health/x", "/Orders", "/a b"]) {
      assert.throws(() => parseManifest("a.toml", manifest("a", route)), /is not a path prefix/, route);
    }
  });

  it("refuses a database role the setup SQL could not write unquoted, or another exchange", () => {
    const text = manifest("a").replace("postgres://a@", "postgres://A%20B@");
    assert.throws(() => parseManifest("a.toml", text), /database_url's role "A B"/);
    assert.throws(() => parseManifest("a.toml", manifest("a").replace("5432/a\"", "5432/a-b\"")), /database "a-b"/);
    assert.throws(() => parseManifest("a.toml", manifest("a").replace('exchange = "platform.events"', 'exchange = "other"')),
      /exchange other, but the broker users may use platform.events only/);
    assert.throws(() => parseManifest("a.toml", manifest("a").replace("[[components]]", "[[components")), /deploy\/manifests\/a.toml/);
  });

  it("refuses an empty folder, one route twice or nested, one database twice", () => {
    withManifests({}, (root) => assert.throws(() => readComponents(root), /holds no manifest/));
    withManifests({ "a.toml": manifest("a", "/x"), "b.toml": manifest("b", "/x/y") }, (root) => {
      assert.throws(() => readComponents(root), /a \(\/x\) and b \(\/x\/y\): routes must not be equal or nested/);
    });
    withManifests({ "a.toml": manifest("a"), "b.toml": manifest("b").replace("5432/b\"", "5432/a\"") }, (root) => {
      assert.throws(() => readComponents(root), /a and b share a database/);
    });
  });
});

describe("kong.yml against the components", () => {
  const kongYml = (services: [string, string][]) => [
    "_format_version: '3.0'",
    "services:",
    ...services.flatMap(([name, route]) => [
      `  - name: ${name}`,
      `    url: http://${name}:8000${route}`,
      `    routes: [{ name: ${name}, paths: [${route}], strip_path: true }]`,
    ]),
  ].join("\n");
  const rewrite = (routes: Record<string, string>) => ({
    upstreams: Object.fromEntries(Object.keys(routes).map((name) => [name, `${name}.ns:8000`])),
    routes,
  });

  it("has a service per component, routed at its manifest's route", () => {
    const config = kongDeclarativeConfig(kongYml([["a", "/a"], ["b", "/bee"]]), rewrite({ a: "/a", b: "/bee" })) as any;
    assert.deepEqual(config.upstreams.map((u: any) => u.name), ["a.upstream", "b.upstream"]);
  });

  it("refuses a component kong.yml does not route, a service no manifest has, and a route that differs", () => {
    assert.throws(() => kongDeclarativeConfig(kongYml([["a", "/a"]]), rewrite({ a: "/a", b: "/b" })),
      /component b \(deploy\/manifests\/b.toml\) has no kong.yml service/);
    assert.throws(() => kongDeclarativeConfig(kongYml([["a", "/a"], ["b", "/b"]]), rewrite({ a: "/a" })),
      /kong.yml service b is no component/);
    assert.throws(() => kongDeclarativeConfig(kongYml([["a", "/a"]]), rewrite({ a: "/other" })),
      /kong.yml service a routes \/a, but its manifest's route is \/other/);
  });
});
