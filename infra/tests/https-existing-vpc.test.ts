// The stack with most settings changed: an existing VPC, HTTPS with a certificate, admin access
// from two networks, one Kong upstream overridden, other sizes, enhanced Container Insights, no
// tracing.
import { strict as assert } from "node:assert";
import { before, describe, it } from "node:test";
import { Run, arnOf, containers, env, ofType, one, runProgram, secretEnv, securityRules } from "./harness";

const CERT = "arn:aws:acm:us-east-1:123456789012:certificate/0f5c6a0e-example";
const PRIVATE = ["subnet-priv-a", "subnet-priv-b"];
const PUBLIC = ["subnet-pub-a", "subnet-pub-b"];

let run: Run;

before(async () => {
  run = await runProgram({
    image: "registry.example.com/platform/host@sha256:0123abcd",
    certificateArn: CERT,
    publicHostname: "api.example.com",
    adminCidrs: ["10.20.0.0/16", "fd00:10::/64"],
    vpcId: "vpc-existing",
    publicSubnetIds: PUBLIC,
    privateSubnetIds: PRIVATE,
    serviceNamespace: "svc.example.internal",
    kongUpstreams: { orders: "orders-canary.svc.example.internal" },
    orders: { cpu: 512, memory: 1024, desiredCount: 3, minCount: 3, maxCount: 10 },
    invoices: { maxCount: 4, backlogPerTask: 25 },
    containerInsights: "enhanced",
    kong: { image: "kong:3.9.0", desiredCount: 3 },
    logRetentionDays: 7,
    db: { deletionProtection: false, skipFinalSnapshot: true },
    mq: { deploymentMode: "CLUSTER_MULTI_AZ", instanceType: "mq.m5.large" },
  });
});

describe("with an existing VPC", () => {
  it("creates no network of its own and places everything in the given subnets", () => {
    for (const type of ["aws:ec2/vpc:Vpc", "aws:ec2/subnet:Subnet", "aws:ec2/natGateway:NatGateway",
      "aws:ec2/eip:Eip", "aws:ec2/internetGateway:InternetGateway", "aws:ec2/routeTable:RouteTable"]) {
      assert.equal(ofType(run, type).length, 0, type);
    }
    for (const service of ofType(run, "aws:ecs/service:Service")) {
      assert.deepEqual(service.inputs.networkConfiguration.subnets, PRIVATE, service.name);
      assert.equal(service.inputs.networkConfiguration.assignPublicIp, false, service.name);
    }
    assert.deepEqual(one(run, "aws:lb/loadBalancer:LoadBalancer", "gateway").inputs.subnets, PUBLIC);
    for (const group of ofType(run, "aws:ec2/securityGroup:SecurityGroup")) assert.equal(group.inputs.vpcId, "vpc-existing");
    assert.equal(one(run, "aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace", "services").inputs.vpc, "vpc-existing");
    assert.deepEqual(one(run, "aws:rds/subnetGroup:SubnetGroup", "database").inputs.subnetIds, PRIVATE);
    assert.deepEqual(one(run, "aws:mq/broker:Broker", "events").inputs.subnetIds, PRIVATE);
    for (const command of [run.outputs.dbSetupCommand, run.outputs.brokerSetupCommand]) {
      assert.ok(String(command).includes("subnets=[subnet-priv-a,subnet-priv-b]"), String(command));
    }
  });
});

describe("with a certificate", () => {
  it("serves HTTPS with a modern policy and redirects HTTP", () => {
    const tg = arnOf(run, "aws:lb/targetGroup:TargetGroup", "kong");
    const listeners = Object.fromEntries(ofType(run, "aws:lb/listener:Listener").map((l) => [l.name, l.inputs]));
    assert.deepEqual(Object.keys(listeners).sort(), ["http", "https"]);
    assert.deepEqual([listeners.https.port, listeners.https.protocol, listeners.https.certificateArn], [443, "HTTPS", CERT]);
    assert.match(listeners.https.sslPolicy, /^ELBSecurityPolicy-TLS13-/);
    assert.deepEqual(listeners.https.defaultActions, [{ type: "forward", targetGroupArn: tg }]);
    assert.equal(listeners.http.port, 80);
    assert.deepEqual(listeners.http.defaultActions, [
      { type: "redirect", redirect: { protocol: "HTTPS", port: "443", statusCode: "HTTP_301" } },
    ]);
  });

  it("outputs https URLs on the public hostname", () => {
    assert.equal(run.outputs.gatewayUrl, "https://api.example.com");
    assert.deepEqual(run.outputs.docsUrls, {
      orders: "https://api.example.com/orders/docs/",
      invoices: "https://api.example.com/invoices/docs/",
    });
  });
});

describe("with adminCidrs", () => {
  it("opens 443 on the ALB, and the admin port and the broker console to exactly those networks", () => {
    assert.deepEqual(securityRules(run), [
      "alb in tcp/443 0.0.0.0/0",
      "alb in tcp/80 0.0.0.0/0",
      "alb out tcp/8000 kong",
      "alb out tcp/8100 kong",
      "broker in tcp/443 10.20.0.0/16",
      "broker in tcp/443 broker-setup",
      "broker in tcp/443 fd00:10::/64",
      "broker in tcp/5671 hosts",
      "broker-setup out tcp/443 0.0.0.0/0",
      "database in tcp/5432 db-setup",
      "database in tcp/5432 hosts",
      "db-setup out tcp/443 0.0.0.0/0",
      "db-setup out tcp/5432 database",
      "hosts in tcp/8000 kong",
      "hosts in tcp/9000 10.20.0.0/16",
      "hosts in tcp/9000 fd00:10::/64",
      "hosts out tcp/443 0.0.0.0/0",
      "hosts out tcp/5432 database",
      "hosts out tcp/5671 broker",
      "kong in tcp/8000 alb",
      "kong in tcp/8100 alb",
      "kong out tcp/443 0.0.0.0/0",
      "kong out tcp/8000 hosts",
    ]);
    const v6 = ofType(run, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule").filter((r) => r.inputs.cidrIpv6);
    assert.equal(v6.length, 2);
    for (const rule of v6) assert.equal(rule.inputs.cidrIpv4, undefined);
  });
});

describe("without tracing", () => {
  it("drops Kong's opentelemetry plugin and every tracing setting and secret", () => {
    const [kong] = containers(run, "kong");
    const config = JSON.parse(env(kong).KONG_DECLARATIVE_CONFIG_STRING);
    assert.deepEqual(config.plugins.map((p: { name: string }) => p.name),
      ["cors", "correlation-id", "rate-limiting", "request-size-limiting"]);
    assert.equal(env(kong).KONG_TRACING_INSTRUMENTATIONS, undefined);
    assert.deepEqual(kong.secrets, []);
    assert.equal(ofType(run, "aws:iam/rolePolicy:RolePolicy").find((p) => p.name === "kong-secrets"), undefined);
    assert.deepEqual(ofType(run, "aws:secretsmanager/secret:Secret").map((s) => s.name).sort(),
      ["amqp", "host-admin-token", "invoices-amqp", "invoices-database", "orders-amqp", "orders-database"]);
    for (const component of ["orders", "invoices"]) {
      const [host] = containers(run, component);
      assert.ok(!host.environment.some((e) => e.name.startsWith("OTEL_")), component);
      const secret = (name: string, key: string) => `${arnOf(run, "aws:secretsmanager/secret:Secret", name)}:${key}::`;
      assert.deepEqual(secretEnv(host), {
        [`${component.toUpperCase()}_DATABASE_URL`]: secret(`${component}-database`, "url"),
        [`${component.toUpperCase()}_AMQP_URL`]: secret(`${component}-amqp`, "url"),
        AMQP_URL: secret(`${component}-amqp`, "url"),
        HOST_ADMIN_TOKEN: arnOf(run, "aws:secretsmanager/secret:Secret", "host-admin-token"),
      });
    }
  });
});

describe("overrides", () => {
  it("points Kong at the configured upstream and the configured namespace", () => {
    const config = JSON.parse(env(containers(run, "kong")[0]).KONG_DECLARATIVE_CONFIG_STRING);
    const targets = Object.fromEntries(config.upstreams.map((u: { name: string; targets: { target: string }[] }) =>
      [u.name, u.targets.map((t) => t.target)]));
    assert.deepEqual(targets, {
      "orders.upstream": ["orders-canary.svc.example.internal:8000"],
      "invoices.upstream": ["invoices.svc.example.internal:8000"],
    });
    assert.equal(one(run, "aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace", "services").inputs.name,
      "svc.example.internal");
  });

  it("uses the configured image, sizes, counts and retention", () => {
    for (const component of ["orders", "invoices"]) {
      assert.equal(containers(run, component)[0].image, "registry.example.com/platform/host@sha256:0123abcd");
    }
    const orders = one(run, "aws:ecs/taskDefinition:TaskDefinition", "orders").inputs;
    assert.deepEqual([orders.cpu, orders.memory], ["512", "1024"]);
    assert.equal(one(run, "aws:ecs/service:Service", "orders").inputs.desiredCount, 3);
    const target = (name: string) => one(run, "aws:appautoscaling/target:Target", name).inputs;
    assert.deepEqual([target("orders").minCapacity, target("orders").maxCapacity], [3, 10]);
    assert.deepEqual([target("invoices").minCapacity, target("invoices").maxCapacity], [2, 4]);
    const backlog = one(run, "aws:appautoscaling/policy:Policy", "invoices-backlog").inputs;
    assert.equal(backlog.targetTrackingScalingPolicyConfiguration.targetValue, 25);
    assert.deepEqual(one(run, "aws:ecs/cluster:Cluster", "platform").inputs.settings, [{ name: "containerInsights", value: "enhanced" }]);
    assert.equal(containers(run, "kong")[0].image, "kong:3.9.0");
    assert.equal(one(run, "aws:ecs/service:Service", "kong").inputs.desiredCount, 3);
    for (const group of ofType(run, "aws:cloudwatch/logGroup:LogGroup")) assert.equal(group.inputs.retentionInDays, 7);
    const db = one(run, "aws:rds/instance:Instance", "database").inputs;
    assert.deepEqual([db.deletionProtection, db.skipFinalSnapshot, db.finalSnapshotIdentifier], [false, true, undefined]);
    const mq = one(run, "aws:mq/broker:Broker", "events").inputs;
    assert.deepEqual([mq.deploymentMode, mq.hostInstanceType, mq.publiclyAccessible], ["CLUSTER_MULTI_AZ", "mq.m5.large", false]);
  });

  it("still creates the image repository, which the image does not come from", () => {
    assert.equal(ofType(run, "aws:ecr/repository:Repository").length, 1);
    assert.equal(run.outputs.image, "registry.example.com/platform/host@sha256:0123abcd");
  });
});
