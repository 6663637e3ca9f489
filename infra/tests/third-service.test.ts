// The program over a stand-in repository with a third service, shipping: its manifest beside the
// real two in deploy/manifests, its service and route in kong/kong.yml. Everything per component
// follows the manifests, so shipping gets what Orders and Invoices get, and nothing of theirs.
import { strict as assert } from "node:assert";
import { after, before, describe, it } from "node:test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as yaml from "js-yaml";
import {
  PASSWORD_MARK, Run, arnOf, containers, env, ofType, one, resolveSecrets, runContainer, runProgram, secretEnv, withFakeApi,
} from "./harness";
import { brokerPermissions } from "../src/broker-setup";
import { REPOSITORY_ENV, repositoryRoot } from "../src/components";

const SHIPPING = `# Shipping, a third service.
[http]
listen = "0.0.0.0:8000"

[admin]
listen = "0.0.0.0:9000"

[messaging]
url = "amqp://shipping@rabbitmq:5672/%2f"
exchange = "platform.events"

[[components]]
name = "shipping"
wasm = "/app/components/shipping.wasm"
route = "/shipping"
database_url = "postgres://shipping@postgres:5432/shipping"
migrations = "/app/migrations/shipping"
publishes = ["shipments.sent"]
subscriptions = ["orders.created"]
`;

const T = {
  secret: "aws:secretsmanager/secret:Secret",
  secretVersion: "aws:secretsmanager/secretVersion:SecretVersion",
  taskDefinition: "aws:ecs/taskDefinition:TaskDefinition",
};

let root: string;
let run: Run;
const secretArn = (name: string) => arnOf(run, T.secret, name);

before(async () => {
  const real = repositoryRoot();
  root = fs.mkdtempSync(path.join(os.tmpdir(), "third-service-"));
  const manifests = path.join(root, "deploy", "manifests");
  fs.mkdirSync(manifests, { recursive: true });
  for (const name of ["orders", "invoices"]) {
    fs.copyFileSync(path.join(real, "deploy", "manifests", `${name}.toml`), path.join(manifests, `${name}.toml`));
  }
  fs.writeFileSync(path.join(manifests, "shipping.toml"), SHIPPING);
  const kong = yaml.load(fs.readFileSync(path.join(real, "kong", "kong.yml"), "utf8")) as { services: unknown[] };
  kong.services.push({
    name: "shipping",
    url: "http://shipping:8000/shipping",
    routes: [{ name: "shipping", paths: ["/shipping"], strip_path: true }],
  });
  fs.mkdirSync(path.join(root, "kong"));
  fs.writeFileSync(path.join(root, "kong", "kong.yml"), yaml.dump(kong));

  process.env[REPOSITORY_ENV] = root;
  run = await runProgram({ imageTag: "v1", shipping: { maxCount: 3 } });
});

after(() => {
  delete process.env[REPOSITORY_ENV];
  fs.rmSync(root, { recursive: true, force: true });
});

describe("a third service in deploy/manifests", () => {
  it("gets a host service running its manifest, with liveness as its health check", () => {
    assert.deepEqual(ofType(run, "aws:ecs/service:Service").map((s) => s.name).sort(), ["invoices", "kong", "orders", "shipping"]);
    const [container] = containers(run, "shipping");
    assert.equal(env(container).HOST_CONFIG, "/app/manifests/shipping.toml");
    assert.deepEqual(container.healthCheck.command, ["CMD", "/app/host", "probe", "--live"]);
    const registry = one(run, "aws:servicediscovery/service:Service", "shipping");
    assert.deepEqual(one(run, "aws:ecs/service:Service", "shipping").inputs.serviceRegistries, { registryArn: registry.state.arn });
    assert.equal((run.outputs.serviceHostnames as Record<string, string>).shipping, "shipping.platform.internal");
  });

  it("gets its own database and broker secrets, and only those", () => {
    const [container] = containers(run, "shipping");
    assert.deepEqual(secretEnv(container), {
      SHIPPING_DATABASE_URL: `${secretArn("shipping-database")}:url::`,
      SHIPPING_AMQP_URL: `${secretArn("shipping-amqp")}:url::`,
      AMQP_URL: `${secretArn("shipping-amqp")}:url::`,
      HOST_ADMIN_TOKEN: secretArn("host-admin-token"),
    });
    const values = resolveSecrets(run, container);
    assert.equal(new URL(values.SHIPPING_AMQP_URL).username, "shipping");
    const database = new URL(values.SHIPPING_DATABASE_URL);
    assert.deepEqual([database.username, database.pathname], ["shipping", "/shipping"]);
    const policy = JSON.parse(one(run, "aws:iam/rolePolicy:RolePolicy", "shipping-secrets").inputs.policy);
    assert.deepEqual([...policy.Statement[0].Resource].sort(),
      [secretArn("host-admin-token"), secretArn("shipping-amqp"), secretArn("shipping-database")].sort());
    // The other hosts are given nothing of shipping's.
    for (const other of ["orders", "invoices"]) assert.ok(!JSON.stringify(containers(run, other)).includes("shipping"), other);
    const passwords = ofType(run, "random:index/randomPassword:RandomPassword").map((p) => p.name);
    assert.ok(passwords.includes("shipping-database") && passwords.includes("shipping-broker"));
  });

  it("gets its role and database from db-setup", () => {
    const [task] = containers(run, "db-setup");
    const sql = env(task).SETUP_SQL;
    assert.match(sql, /^SELECT 'CREATE ROLE shipping LOGIN' WHERE NOT EXISTS/m);
    assert.match(sql, /^SELECT 'CREATE DATABASE shipping OWNER shipping' WHERE NOT EXISTS/m);
    assert.match(sql, /^REVOKE ALL ON DATABASE shipping FROM PUBLIC;$/m);
    assert.equal(secretEnv(task).SHIPPING_PASSWORD, `${secretArn("shipping-database")}:password::`);
  });

  it("gets its broker user from broker-setup, with permissions on its own queues", async () => {
    const [task] = containers(run, "broker-setup");
    const users = JSON.parse(env(task).BROKER_USERS);
    assert.deepEqual(users.map((u: { name: string }) => u.name), ["invoices", "orders", "shipping"]);
    assert.deepEqual(users[2], { name: "shipping", vhost: "/", passwordEnv: "SHIPPING_PASSWORD", permissions: brokerPermissions("shipping") });
    assert.equal(secretEnv(task).SHIPPING_PASSWORD, `${secretArn("shipping-amqp")}:password::`);
    const answer = (request: { url: string }) => ({ status: request.url.startsWith("/api/users/") ? 201 : 204 });
    await withFakeApi(answer, async (base, requests) => {
      const exit = await runContainer(run, task, { RABBITMQ_API: `${base}/api` });
      assert.equal(exit.code, 0, exit.stderr);
      const shipping = requests.filter((r) => r.url.endsWith("/shipping"));
      assert.deepEqual(shipping.map((r) => `${r.method} ${r.url}`), ["PUT /api/users/shipping", "PUT /api/permissions/%2F/shipping"]);
      const password = JSON.parse(one(run, T.secretVersion, "shipping-amqp").inputs.secretString).password;
      assert.deepEqual(JSON.parse(shipping[0].body), { password, tags: "" });
      assert.ok(!exit.stdout.includes(PASSWORD_MARK));
    });
  });

  it("gets a Kong service pointed at its own upstream, checked for readiness", () => {
    const config = JSON.parse(env(containers(run, "kong")[0]).KONG_DECLARATIVE_CONFIG_STRING);
    const service = config.services.find((s: { name: string }) => s.name === "shipping");
    assert.equal(service.url, "http://shipping.upstream:8000/shipping");
    assert.deepEqual(service.routes[0].paths, ["/shipping"]);
    const upstream = config.upstreams.find((u: { name: string }) => u.name === "shipping.upstream");
    assert.deepEqual(upstream.targets, [{ target: "shipping.platform.internal:8000", weight: 100 }]);
    assert.equal(upstream.healthchecks.active.http_path, "/health");
  });

  it("is sized by the setting named after it, and scales on its queue's backlog per task", () => {
    const target = one(run, "aws:appautoscaling/target:Target", "shipping").inputs;
    assert.deepEqual([target.minCapacity, target.maxCapacity], [2, 3]);
    const backlog = one(run, "aws:appautoscaling/policy:Policy", "shipping-backlog").inputs.targetTrackingScalingPolicyConfiguration;
    const queues = backlog.customizedMetricSpecification.metrics
      .filter((m: any) => m.metricStat?.metric.metricName === "MessageReadyCount")
      .map((m: any) => m.metricStat.metric.dimensions.find((d: any) => d.name === "Queue").value);
    assert.deepEqual(queues, ["platform.events.shipping.orders.created"]);
  });

  it("has its docs in the outputs", () => {
    const gateway = run.outputs.gatewayUrl as string;
    assert.deepEqual(run.outputs.docsUrls, {
      invoices: `${gateway}/invoices/docs/`,
      orders: `${gateway}/orders/docs/`,
      shipping: `${gateway}/shipping/docs/`,
    });
  });
});
