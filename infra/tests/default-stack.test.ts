// The stack with the defaults: a new VPC, HTTP only, no admin access, traces sent to an OTLP
// collector with an Authorization header.
import { strict as assert } from "node:assert";
import { before, describe, it } from "node:test";
import * as fs from "node:fs";
import * as yaml from "js-yaml";
import {
  ACCOUNT, PASSWORD_MARK, REGION, Run, arnOf, containers, env, ofType, one, resolveSecrets, runContainer, runProgram,
  secretEnv, securityRules, withFakeApi,
} from "./harness";
import { findKongYaml } from "../src/kong-config";

const T = {
  service: "aws:ecs/service:Service",
  secret: "aws:secretsmanager/secret:Secret",
  secretVersion: "aws:secretsmanager/secretVersion:SecretVersion",
  rolePolicy: "aws:iam/rolePolicy:RolePolicy",
  listener: "aws:lb/listener:Listener",
  targetGroup: "aws:lb/targetGroup:TargetGroup",
  policy: "aws:appautoscaling/policy:Policy",
  target: "aws:appautoscaling/target:Target",
};

const OTLP_HEADERS = "Authorization=Basic%20dXNlcjpzZWNyZXQ=";
const REPOSITORY = `${ACCOUNT}.dkr.ecr.${REGION}.amazonaws.com/wasm-platform-test/host`;
const PRIVATE = ["private-0-id", "private-1-id"];
const MASTER_SECRET = `arn:aws:secretsmanager:${REGION}:${ACCOUNT}:secret:rds!db-1234-MaStEr`;

let run: Run;
const secretArn = (name: string) => arnOf(run, T.secret, name);

before(async () => {
  run = await runProgram(
    { imageTag: "v1.2.3", otlpEndpoint: "https://otlp.example.com/", otlpHeaders: OTLP_HEADERS },
    ["otlpHeaders"],
  );
});

describe("host services", () => {
  it("run the same image, one component each", () => {
    for (const component of ["orders", "invoices"]) {
      const [container] = containers(run, `${component}`);
      assert.equal(container.image, `${REPOSITORY}:v1.2.3`);
      assert.equal(env(container).HOST_CONFIG, `/app/manifests/${component}.toml`);
      assert.equal(env(container).HOST_LOG_JSON, "1");
      assert.equal(env(container).OTEL_EXPORTER_OTLP_ENDPOINT, "https://otlp.example.com");
      // Liveness: a database outage restarts no task (readiness is Kong's, below).
      assert.deepEqual(container.healthCheck.command, ["CMD", "/app/host", "probe", "--live"]);
      assert.equal(env(container).HOST_HTTP__DRAIN_DELAY_MS, "15000");
      assert.equal(container.stopTimeout, 45);
      assert.equal(container.healthCheck.timeout, 5);
      assert.deepEqual(container.portMappings.map((p: { containerPort: number }) => p.containerPort), [8000, 9000]);
    }
  });

  it("get only their own database secret and their own broker user, never the broker admin", () => {
    for (const [component, other] of [["orders", "invoices"], ["invoices", "orders"]]) {
      const [container] = containers(run, component);
      const NAME = component.toUpperCase();
      assert.deepEqual(secretEnv(container), {
        [`${NAME}_DATABASE_URL`]: `${secretArn(`${component}-database`)}:url::`,
        [`${NAME}_AMQP_URL`]: `${secretArn(`${component}-amqp`)}:url::`,
        AMQP_URL: `${secretArn(`${component}-amqp`)}:url::`,
        HOST_ADMIN_TOKEN: secretArn("host-admin-token"),
        OTEL_EXPORTER_OTLP_HEADERS: `${secretArn("otlp-headers")}:headers::`,
      });
      const text = JSON.stringify(container);
      for (const foreign of [`${other}-database`, `${other}-amqp`]) assert.ok(!text.includes(foreign), `${component}: ${foreign}`);
      assert.ok(!text.includes(secretArn("amqp")), `${component}: the broker admin's secret`);
      assert.ok(!text.includes(`${other.toUpperCase()}_`), `${component}: a variable of ${other}`);
    }
  });

  it("receive URLs whose broker user is the component itself", () => {
    for (const component of ["orders", "invoices"]) {
      const [container] = containers(run, component);
      const values = resolveSecrets(run, container);
      const url = new URL(values[`${component.toUpperCase()}_AMQP_URL`]);
      assert.equal(url.protocol, "amqps:");
      assert.equal(url.username, component);
      assert.equal(values.AMQP_URL, values[`${component.toUpperCase()}_AMQP_URL`]);
    }
  });

  it("are sized and deployed as configured by default", () => {
    for (const component of ["orders", "invoices"]) {
      const task = one(run, "aws:ecs/taskDefinition:TaskDefinition", component).inputs;
      assert.equal(task.family, `wasm-platform-test-${component}`);
      assert.deepEqual([task.cpu, task.memory, task.networkMode], ["256", "512", "awsvpc"]);
      assert.deepEqual(task.requiresCompatibilities, ["FARGATE"]);
      const service = one(run, T.service, component).inputs;
      assert.equal(service.desiredCount, 2);
      assert.equal(service.launchType, "FARGATE");
      assert.deepEqual(service.deploymentCircuitBreaker, { enable: true, rollback: true });
      const [container] = containers(run, component);
      assert.equal(container.logConfiguration.logDriver, "awslogs");
      assert.equal(container.logConfiguration.options["awslogs-group"], `/ecs/wasm-platform-test/${component}`);
      assert.equal(container.logConfiguration.options["awslogs-region"], REGION);
    }
    for (const group of ofType(run, "aws:cloudwatch/logGroup:LogGroup")) assert.equal(group.inputs.retentionInDays, 30);
    assert.equal(ofType(run, "aws:cloudwatch/logGroup:LogGroup").length, 5);
  });
});

describe("placement", () => {
  it("puts every service in the private subnets without public addresses", () => {
    const services = ofType(run, T.service);
    assert.deepEqual(services.map((s) => s.name).sort(), ["invoices", "kong", "orders"]);
    for (const service of services) {
      assert.deepEqual(service.inputs.networkConfiguration.subnets, PRIVATE, service.name);
      assert.equal(service.inputs.networkConfiguration.assignPublicIp, false, service.name);
    }
    assert.deepEqual(one(run, T.service, "orders").inputs.networkConfiguration.securityGroups, ["hosts-id"]);
    assert.deepEqual(one(run, T.service, "kong").inputs.networkConfiguration.securityGroups, ["kong-id"]);
  });

  it("builds a VPC with two public and two private subnets and one NAT gateway", () => {
    assert.equal(one(run, "aws:ec2/vpc:Vpc", "vpc").inputs.cidrBlock, "10.0.0.0/16");
    const subnets = ofType(run, "aws:ec2/subnet:Subnet").map((s) => [s.name, s.inputs.cidrBlock, s.inputs.availabilityZone]);
    assert.deepEqual(subnets.sort(), [
      ["private-0", "10.0.128.0/20", "us-east-1a"], ["private-1", "10.0.144.0/20", "us-east-1b"],
      ["public-0", "10.0.0.0/20", "us-east-1a"], ["public-1", "10.0.16.0/20", "us-east-1b"],
    ]);
    const nats = ofType(run, "aws:ec2/natGateway:NatGateway");
    assert.equal(nats.length, 1);
    assert.equal(nats[0].inputs.subnetId, "public-0-id");
    const routes = Object.fromEntries(ofType(run, "aws:ec2/route:Route").map((r) => [r.name, r.inputs]));
    assert.equal(routes["public-default"].gatewayId, "igw-id");
    assert.equal(routes["private-default"].natGatewayId, "nat-id");
    const associations = ofType(run, "aws:ec2/routeTableAssociation:RouteTableAssociation")
      .map((a) => `${a.inputs.subnetId}->${a.inputs.routeTableId}`).sort();
    assert.deepEqual(associations, ["private-0-id->private-id", "private-1-id->private-id", "public-0-id->public-id", "public-1-id->public-id"]);
  });
});

describe("secrets", () => {
  it("reach containers only as Secrets Manager ARNs in `secrets`", () => {
    const known = new Set([...ofType(run, T.secret).map((s) => s.state.arn as string), MASTER_SECRET]);
    const used = new Set<string>();
    for (const task of ofType(run, "aws:ecs/taskDefinition:TaskDefinition")) {
      for (const container of containers(run, task.name)) {
        for (const { name, valueFrom } of container.secrets) {
          const m = /^(arn:aws:secretsmanager:[a-z0-9-]+:\d{12}:secret:[^:]+)(:[a-z]+::)?$/.exec(valueFrom);
          assert.ok(m, `${task.name}/${name}: ${valueFrom}`);
          assert.ok(known.has(m[1]), `${task.name}/${name} names an unknown secret ${m[1]}`);
          used.add(m[1]);
        }
        for (const { name } of container.environment) {
          assert.ok(!/PASSWORD|TOKEN|_URL$|HEADERS|AUTHORIZATION/.test(name) || name === "SETUP_SQL",
            `${task.name}: ${name} looks like a secret but is plain environment`);
        }
      }
    }
    assert.deepEqual([...known].sort(), [...used].sort(), "every secret is used by some task");
  });

  it("stay out of every command and plain environment value (no password, no URL with credentials)", () => {
    for (const task of ofType(run, "aws:ecs/taskDefinition:TaskDefinition")) {
      for (const container of containers(run, task.name)) {
        const plain = [...(container.entryPoint ?? []), ...(container.command ?? []),
          ...container.environment.map((e) => e.value)];
        for (const value of plain) {
          assert.ok(!value.includes(PASSWORD_MARK), `${task.name}: a generated password in ${value.slice(0, 60)}`);
          assert.ok(!/[a-z]+:\/\/[^/\s:@]+:[^/\s@]+@/.test(value), `${task.name}: a URL with credentials in ${value.slice(0, 60)}`);
        }
      }
    }
  });

  it("never puts a generated password anywhere but a secret version and the broker user", () => {
    const passwords = ofType(run, "random:index/randomPassword:RandomPassword");
    assert.deepEqual(passwords.map((p) => p.name).sort(),
      ["broker", "host-admin-token", "invoices-broker", "invoices-database", "orders-broker", "orders-database"]);
    for (const p of passwords) {
      assert.equal(p.inputs.special, false);
      assert.ok(p.state.result.startsWith(PASSWORD_MARK));
    }
    const holders = run.resources.filter((r) => JSON.stringify(r.inputs).includes(PASSWORD_MARK)).map((r) => `${r.type} ${r.name}`);
    assert.deepEqual(holders.sort(), [
      "aws:mq/broker:Broker events",
      `${T.secretVersion} amqp`, `${T.secretVersion} host-admin-token`,
      `${T.secretVersion} invoices-amqp`, `${T.secretVersion} invoices-database`,
      `${T.secretVersion} orders-amqp`, `${T.secretVersion} orders-database`,
    ]);
    assert.ok(!JSON.stringify(run.outputs).includes(PASSWORD_MARK));
    // ... and there they are marked secret, so the engine encrypts them in the state.
    for (const version of ofType(run, T.secretVersion)) assert.deepEqual(version.secretPaths, ["secretString"], version.name);
    assert.deepEqual(one(run, "aws:mq/broker:Broker", "events").secretPaths, ["users"]);
    // The OTLP credentials from the stack config likewise.
    const otlpHolders = run.resources.filter((r) => JSON.stringify(r.inputs).includes("dXNlcjpzZWNyZXQ="));
    assert.deepEqual(otlpHolders.map((r) => `${r.type} ${r.name}`), [`${T.secretVersion} otlp-headers`]);
  });

  it("hold the URLs the hosts expect", () => {
    const value = (name: string) => JSON.parse(one(run, T.secretVersion, name).inputs.secretString);
    const orders = value("orders-database");
    assert.equal(orders.url, `postgres://orders:${orders.password}@database.cmocked.${REGION}.rds.amazonaws.com:5432/orders`
      + "?sslmode=verify-full&sslrootcert=/app/certs/rds-global-bundle.pem");
    assert.match(orders.password, new RegExp(`^${PASSWORD_MARK}`));
    const amqp = value("amqp");
    assert.equal(amqp.username, "platform");
    assert.equal(amqp.url, `amqps://platform:${amqp.password}@b-1234.mq.${REGION}.on.aws:5671/%2f`);
    const passwords = new Set([amqp.password]);
    for (const component of ["orders", "invoices"]) {
      const broker = value(`${component}-amqp`);
      assert.deepEqual(Object.keys(broker).sort(), ["password", "url", "username"]);
      assert.equal(broker.username, component);
      assert.match(broker.password, new RegExp(`^${PASSWORD_MARK}[A-Za-z0-9]+$`));
      assert.equal(broker.url, `amqps://${component}:${broker.password}@b-1234.mq.${REGION}.on.aws:5671/%2f`);
      passwords.add(broker.password);
    }
    assert.equal(passwords.size, 3, "each broker user has a password of its own");
    assert.deepEqual(value("otlp-headers"), { headers: OTLP_HEADERS, authorization: "Basic dXNlcjpzZWNyZXQ=" });
    assert.match(one(run, T.secretVersion, "host-admin-token").inputs.secretString, new RegExp(`^${PASSWORD_MARK}`));
  });

  it("are readable by each execution role exactly as needed", () => {
    const resources = (name: string) => {
      const policy = JSON.parse(one(run, T.rolePolicy, `${name}-secrets`).inputs.policy);
      assert.equal(policy.Statement.length, 1);
      assert.equal(policy.Statement[0].Action, "secretsmanager:GetSecretValue");
      return [...policy.Statement[0].Resource].sort();
    };
    const common = [secretArn("host-admin-token"), secretArn("otlp-headers")];
    assert.deepEqual(resources("orders"), [...common, secretArn("orders-database"), secretArn("orders-amqp")].sort());
    assert.deepEqual(resources("invoices"), [...common, secretArn("invoices-database"), secretArn("invoices-amqp")].sort());
    assert.deepEqual(resources("kong"), [secretArn("otlp-headers")]);
    assert.deepEqual(resources("db-setup"), [MASTER_SECRET, secretArn("orders-database"), secretArn("invoices-database")].sort());
    assert.deepEqual(resources("broker-setup"), [secretArn("amqp"), secretArn("orders-amqp"), secretArn("invoices-amqp")].sort());
    assert.equal(ofType(run, "aws:iam/rolePolicyAttachment:RolePolicyAttachment").length, 5);
    // Each task definition is started by its own role.
    for (const family of ["orders", "invoices", "kong", "db-setup", "broker-setup"]) {
      const task = one(run, "aws:ecs/taskDefinition:TaskDefinition", family).inputs;
      assert.equal(task.executionRoleArn, one(run, "aws:iam/role:Role", `${family}-execution`).state.arn, family);
    }
  });
});

describe("security groups", () => {
  it("allow exactly the flows between the tiers", () => {
    assert.deepEqual(securityRules(run), [
      "alb in tcp/80 0.0.0.0/0",
      "alb out tcp/8000 kong",
      "alb out tcp/8100 kong",
      "broker in tcp/443 broker-setup",
      "broker in tcp/5671 hosts",
      "broker-setup out tcp/443 0.0.0.0/0",
      "database in tcp/5432 db-setup",
      "database in tcp/5432 hosts",
      "db-setup out tcp/443 0.0.0.0/0",
      "db-setup out tcp/5432 database",
      "hosts in tcp/8000 kong",
      "hosts out tcp/443 0.0.0.0/0",
      "hosts out tcp/5432 database",
      "hosts out tcp/5671 broker",
      "kong in tcp/8000 alb",
      "kong in tcp/8100 alb",
      "kong out tcp/443 0.0.0.0/0",
      "kong out tcp/8000 hosts",
    ]);
    for (const group of ofType(run, "aws:ec2/securityGroup:SecurityGroup")) {
      assert.equal(group.inputs.ingress, undefined, group.name);
      assert.equal(group.inputs.egress, undefined, group.name);
      assert.equal(group.inputs.vpcId, "vpc-id");
    }
    assert.equal(ofType(run, "aws:ec2/securityGroupRule:SecurityGroupRule").length, 0);
  });
});

describe("gateway", () => {
  it("forwards HTTP from the ALB to Kong's target group", () => {
    const alb = one(run, "aws:lb/loadBalancer:LoadBalancer", "gateway").inputs;
    assert.equal(alb.internal, false);
    assert.deepEqual(alb.subnets, ["public-0-id", "public-1-id"]);
    assert.deepEqual(alb.securityGroups, ["alb-id"]);
    const listeners = ofType(run, T.listener);
    assert.deepEqual(listeners.map((l) => l.name), ["http"]);
    const tg = one(run, T.targetGroup, "kong");
    assert.deepEqual(listeners[0].inputs.defaultActions, [{ type: "forward", targetGroupArn: tg.state.arn }]);
    assert.equal(listeners[0].inputs.port, 80);
    assert.deepEqual([tg.inputs.targetType, tg.inputs.port, tg.inputs.protocol], ["ip", 8000, "HTTP"]);
    assert.equal(tg.inputs.healthCheck.path, "/status/ready");
    assert.equal(tg.inputs.healthCheck.port, "8100");
    assert.deepEqual(one(run, T.service, "kong").inputs.loadBalancers,
      [{ targetGroupArn: tg.state.arn, containerName: "kong", containerPort: 8000 }]);
  });

  it("runs Kong DB-less with kong.yml pointed at the service-discovery names", () => {
    const [kong] = containers(run, "kong");
    const e = env(kong);
    assert.equal(kong.image, "kong:3.9.1");
    assert.equal(e.KONG_DATABASE, "off");
    assert.equal(e.KONG_PROXY_LISTEN, "0.0.0.0:8000");
    assert.equal(e.KONG_STATUS_LISTEN, "0.0.0.0:8100");
    assert.equal(e.KONG_ADMIN_LISTEN, "off");
    assert.equal(e.KONG_TRUSTED_IPS, "0.0.0.0/0,::/0");
    assert.equal(e.KONG_REAL_IP_HEADER, "X-Forwarded-For");
    assert.equal(e.KONG_TRACING_INSTRUMENTATIONS, "all");
    const idle = one(run, "aws:lb/loadBalancer:LoadBalancer", "gateway").inputs.idleTimeout;
    assert.ok(parseInt(e.KONG_NGINX_HTTP_KEEPALIVE_TIMEOUT, 10) > idle, "Kong keeps connections open longer than the ALB");
    assert.deepEqual(secretEnv(kong), { KONG_OTLP_AUTHORIZATION: `${secretArn("otlp-headers")}:authorization::` });

    const config = JSON.parse(e.KONG_DECLARATIVE_CONFIG_STRING);
    const source = yaml.load(fs.readFileSync(findKongYaml(), "utf8")) as any;
    const byName = (list: any[], pick: (entity: any) => unknown) => Object.fromEntries(list.map((e) => [e.name, pick(e)]));
    assert.deepEqual(byName(config.services, (s) => s.url), {
      orders: "http://orders.upstream:8000/orders",
      invoices: "http://invoices.upstream:8000/invoices",
    });
    assert.deepEqual(byName(config.upstreams, (u) => u.targets), {
      "orders.upstream": [{ target: "orders.platform.internal:8000", weight: 100 }],
      "invoices.upstream": [{ target: "invoices.platform.internal:8000", weight: 100 }],
    });
    assert.deepEqual(config.services.map((s: any) => s.routes), source.services.map((s: any) => s.routes));
    assert.equal(config._format_version, source._format_version);
    assert.deepEqual(config.plugins.map((p: any) => p.name), source.plugins.map((p: any) => p.name));
    for (const [i, plugin] of config.plugins.entries()) {
      if (plugin.name !== "opentelemetry") assert.deepEqual(plugin, source.plugins[i]);
    }
    const otel = config.plugins.find((p: any) => p.name === "opentelemetry").config;
    const sourceOtel = source.plugins.find((p: any) => p.name === "opentelemetry").config;
    assert.deepEqual(otel, {
      ...sourceOtel,
      traces_endpoint: "https://otlp.example.com/v1/traces",
      headers: { Authorization: "{vault://env/kong-otlp-authorization}" },
    });
  });

  it("sends requests only to ready hosts: Kong checks each task's /health, and drops a draining one in time", () => {
    const config = JSON.parse(env(containers(run, "kong")[0]).KONG_DECLARATIVE_CONFIG_STRING);
    for (const upstream of config.upstreams) {
      const { active, passive } = upstream.healthchecks;
      assert.deepEqual([active.type, active.http_path], ["http", "/health"], upstream.name);
      assert.deepEqual(active.healthy.http_statuses, [200]);
      assert.ok(active.unhealthy.http_statuses.includes(503), "the host's not-ready answer counts as a failure");
      for (const interval of [active.healthy.interval, active.unhealthy.interval]) assert.ok(interval >= 1 && interval <= 5, `${interval} s`);
      for (const threshold of [active.healthy.successes, active.unhealthy.http_failures, active.unhealthy.tcp_failures,
        active.unhealthy.timeouts]) {
        assert.ok(threshold >= 1 && threshold <= 3, `${upstream.name}: threshold ${threshold}`);
      }
      // A check outlasts the host's own 2 s bound on its database ping.
      assert.ok(active.timeout > 2);
      // Passive: connection failures and timeouts count, a component's HTTP answers do not.
      assert.equal(passive.type, "http");
      assert.equal(passive.unhealthy.http_failures, 0);
      assert.ok(passive.unhealthy.tcp_failures > 0 && passive.unhealthy.timeouts > 0);
    }
    // A stopping host answers 503 at once and goes on serving for its drain delay: Kong's checks
    // see it out before then.
    for (const component of ["orders", "invoices"]) {
      const drain = Number(env(containers(run, component)[0]).HOST_HTTP__DRAIN_DELAY_MS) / 1000;
      const { active } = config.upstreams.find((u: any) => u.name === `${component}.upstream`).healthchecks;
      assert.ok(active.unhealthy.http_failures * (active.healthy.interval + active.timeout) < drain, component);
    }
  });

  it("registers the hosts in a private namespace", () => {
    const namespace = one(run, "aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace", "services");
    assert.equal(namespace.inputs.name, "platform.internal");
    assert.equal(namespace.inputs.vpc, "vpc-id");
    for (const component of ["orders", "invoices"]) {
      const registry = one(run, "aws:servicediscovery/service:Service", component);
      assert.equal(registry.inputs.name, component);
      assert.equal(registry.inputs.dnsConfig.namespaceId, "services-id");
      assert.deepEqual(registry.inputs.dnsConfig.dnsRecords, [{ type: "A", ttl: 10 }]);
      assert.deepEqual(registry.inputs.healthCheckCustomConfig, { failureThreshold: 1 });
      assert.deepEqual(one(run, T.service, component).inputs.serviceRegistries, { registryArn: registry.state.arn });
    }
    assert.deepEqual(run.outputs.serviceHostnames, { orders: "orders.platform.internal", invoices: "invoices.platform.internal" });
  });
});

describe("autoscaling", () => {
  it("tracks CPU for both hosts and, as both consume events, the backlog per task of their queues", () => {
    for (const component of ["orders", "invoices"]) {
      const target = one(run, T.target, component).inputs;
      assert.equal(target.resourceId, `service/wasm-platform-test/${component}`);
      assert.deepEqual([target.serviceNamespace, target.scalableDimension], ["ecs", "ecs:service:DesiredCount"]);
      assert.deepEqual([target.minCapacity, target.maxCapacity], [2, 6]);
      const cpu = one(run, T.policy, `${component}-cpu`).inputs;
      assert.equal(cpu.resourceId, target.resourceId);
      assert.equal(cpu.targetTrackingScalingPolicyConfiguration.predefinedMetricSpecification.predefinedMetricType,
        "ECSServiceAverageCPUUtilization");
      assert.equal(cpu.targetTrackingScalingPolicyConfiguration.targetValue, 60);
    }
    assert.deepEqual(ofType(run, T.policy).map((p) => p.name).sort(), ["invoices-backlog", "invoices-cpu", "orders-backlog", "orders-cpu"]);
    // Each consumes one topic (its manifest's subscriptions), so one queue each.
    for (const [component, queue] of [["invoices", "platform.events.invoices.orders.created"],
      ["orders", "platform.events.orders.invoices.issued"]]) {
      const backlog = one(run, T.policy, `${component}-backlog`).inputs;
      assert.equal(backlog.resourceId, `service/wasm-platform-test/${component}`);
      const tracking = backlog.targetTrackingScalingPolicyConfiguration;
      assert.deepEqual([tracking.targetValue, tracking.disableScaleIn], [50, true]);
      const metrics = tracking.customizedMetricSpecification.metrics;
      assert.equal(tracking.customizedMetricSpecification.metricName, undefined, "metric math, not a single metric");
      const stat = (id: string) => metrics.find((m: any) => m.id === id).metricStat;
      assert.deepEqual(stat("ready0"), {
        metric: {
          namespace: "AWS/AmazonMQ",
          metricName: "MessageReadyCount",
          dimensions: [
            { name: "Broker", value: one(run, "aws:mq/broker:Broker", "events").state.brokerName },
            { name: "VirtualHost", value: "/" },
            { name: "Queue", value: queue },
          ],
        },
        stat: "Average",
      });
      assert.deepEqual(stat("tasks"), {
        metric: {
          namespace: "ECS/ContainerInsights",
          metricName: "RunningTaskCount",
          dimensions: [{ name: "ClusterName", value: "wasm-platform-test" }, { name: "ServiceName", value: component }],
        },
        stat: "Average",
      });
      // Only the quotient is the policy's metric.
      assert.deepEqual(metrics.filter((m: any) => m.returnData).map((m: any) => [m.id, m.expression]), [["backlog", "(ready0) / tasks"]]);
    }
    // Which Container Insights must publish.
    assert.deepEqual(one(run, "aws:ecs/cluster:Cluster", "platform").inputs.settings, [{ name: "containerInsights", value: "enabled" }]);
  });

  it("settles at backlog ÷ target tasks against a backlog that does not drain, rather than the maximum", () => {
    const tracking = one(run, T.policy, "invoices-backlog").inputs.targetTrackingScalingPolicyConfiguration;
    const { expression } = tracking.customizedMetricSpecification.metrics.find((m: any) => m.returnData);
    const { minCapacity, maxCapacity } = one(run, T.target, "invoices").inputs;
    // Target tracking's step: tasks in proportion to the metric over its target.
    const next = (tasks: number, metric: number) =>
      Math.min(maxCapacity, Math.max(tasks, Math.ceil((tasks * metric) / tracking.targetValue)));
    const perTask = (ready: number, tasks: number) =>
      Number(new Function("ready0", "tasks", `return ${expression};`)(ready, tasks));
    // 200 messages waiting and no task making progress (its database is away).
    let tasks = minCapacity;
    for (let cooldown = 0; cooldown < 10; cooldown += 1) tasks = next(tasks, perTask(200, tasks));
    assert.equal(tasks, 200 / tracking.targetValue);
    // The queue's depth alone would have grown the service to its maximum.
    let raw = minCapacity;
    for (let cooldown = 0; cooldown < 10; cooldown += 1) raw = next(raw, 200);
    assert.equal(raw, maxCapacity);
  });
});

describe("data stores", () => {
  it("RDS is private, encrypted, TLS-only, with an RDS-managed master password", () => {
    const db = one(run, "aws:rds/instance:Instance", "database").inputs;
    assert.equal(db.publiclyAccessible, false);
    assert.equal(db.manageMasterUserPassword, true);
    assert.equal(db.password, undefined);
    assert.equal(db.storageEncrypted, true);
    assert.deepEqual([db.engine, db.engineVersion, db.instanceClass, db.storageType, db.allocatedStorage],
      ["postgres", "17", "db.t4g.micro", "gp3", 20]);
    assert.equal(db.deletionProtection, true);
    assert.equal(db.finalSnapshotIdentifier, "wasm-platform-test-final");
    assert.ok(db.backupRetentionPeriod >= 1);
    assert.deepEqual(db.vpcSecurityGroupIds, ["database-id"]);
    const params = one(run, "aws:rds/parameterGroup:ParameterGroup", "postgres17");
    assert.equal(db.parameterGroupName, params.state.name);
    assert.equal(params.inputs.family, "postgres17");
    // TLS only; at most 1 GiB of temporary files per session, which no component role can raise.
    assert.deepEqual(params.inputs.parameters.map((p: any) => [p.name, p.value, p.applyMethod]),
      [["rds.force_ssl", "1", "immediate"], ["temp_file_limit", "1048576", "immediate"]]);
    assert.equal(params.inputs.description, "wasm-platform-test PostgreSQL 17, TLS required");
    const subnets = one(run, "aws:rds/subnetGroup:SubnetGroup", "database");
    assert.equal(db.dbSubnetGroupName, subnets.state.name);
    assert.deepEqual(subnets.inputs.subnetIds, PRIVATE);
  });

  it("Amazon MQ is a private single-instance RabbitMQ broker", () => {
    const mq = one(run, "aws:mq/broker:Broker", "events").inputs;
    assert.equal(mq.publiclyAccessible, false);
    assert.deepEqual([mq.engineType, mq.engineVersion, mq.autoMinorVersionUpgrade], ["RabbitMQ", "3.13", true]);
    assert.deepEqual([mq.hostInstanceType, mq.deploymentMode], ["mq.t3.micro", "SINGLE_INSTANCE"]);
    assert.deepEqual(mq.subnetIds, ["private-0-id"]);
    assert.deepEqual(mq.securityGroups, ["broker-id"]);
    assert.equal(mq.users.length, 1);
    assert.equal(mq.users[0].username, "platform");
  });

  it("the image repository scans on push, keeps tags immutable and prunes old images", () => {
    const repo = one(run, "aws:ecr/repository:Repository", "host").inputs;
    assert.equal(repo.imageTagMutability, "IMMUTABLE");
    assert.deepEqual(repo.imageScanningConfiguration, { scanOnPush: true });
    const rules = JSON.parse(one(run, "aws:ecr/lifecyclePolicy:LifecyclePolicy", "host").inputs.policy).rules;
    assert.deepEqual(rules[0].selection, { tagStatus: "untagged", countType: "imageCountMoreThan", countNumber: 20 });
  });
});

describe("db-setup", () => {
  it("is a psql task with the master and service passwords as secrets", () => {
    const [task] = containers(run, "db-setup");
    assert.equal(task.image, "postgres:17-bookworm");
    const e = env(task);
    assert.equal(e.PGHOST, `database.cmocked.${REGION}.rds.amazonaws.com`);
    assert.equal(e.PGSSLMODE, "require");
    assert.equal(e.PGUSER, "postgres");
    assert.deepEqual(secretEnv(task), {
      PGPASSWORD: `${MASTER_SECRET}:password::`,
      ORDERS_PASSWORD: `${secretArn("orders-database")}:password::`,
      INVOICES_PASSWORD: `${secretArn("invoices-database")}:password::`,
    });
    for (const name of ["orders", "invoices"]) {
      assert.ok(e.SETUP_SQL.includes(`\\getenv ${name}_password ${name.toUpperCase()}_PASSWORD`));
      assert.ok(e.SETUP_SQL.includes(`PASSWORD :'${name}_password'`));
      assert.ok(e.SETUP_SQL.includes(`REVOKE ALL ON DATABASE ${name} FROM PUBLIC;`));
      assert.ok(e.SETUP_SQL.includes(`ALTER ROLE ${name} SET statement_timeout = '30s';`));
      assert.ok(e.SETUP_SQL.includes(`ALTER ROLE ${name} SET idle_in_transaction_session_timeout = '30s';`));
    }
    assert.equal(e.SETUP_SQL.match(/\\gexec/g)?.length, 4);
    assert.ok(!task.command.join(" ").includes("PASSWORD"));
  });
});

describe("broker-setup", () => {
  // What each component's user may do on the vhost `/`, written out rather than computed.
  const PERMISSIONS = {
    orders: {
      configure: String.raw`^platform\.events(\.orders\..*)?$`,
      write: String.raw`^(platform\.events|platform\.events\.orders\..*|amq\.default)$`,
      read: String.raw`^(platform\.events|platform\.events\.orders\..*)$`,
    },
    invoices: {
      configure: String.raw`^platform\.events(\.invoices\..*)?$`,
      write: String.raw`^(platform\.events|platform\.events\.invoices\..*|amq\.default)$`,
      read: String.raw`^(platform\.events|platform\.events\.invoices\..*)$`,
    },
  };
  const secretValue = (name: string) => JSON.parse(one(run, T.secretVersion, name).inputs.secretString);
  const answer = (request: { url: string }) => ({ status: request.url.startsWith("/api/users/") ? 201 : 204 });

  it("is a Node.js task with the admin login and the components' broker passwords as secrets", () => {
    const [task] = containers(run, "broker-setup");
    assert.equal(task.image, "node:22-alpine");
    assert.deepEqual(task.entryPoint, ["sh", "-c"]);
    assert.deepEqual(task.command, ['printf "%s" "$SETUP_SCRIPT" | node -']);
    const e = env(task);
    assert.deepEqual(Object.keys(e).sort(), ["BROKER_USERS", "RABBITMQ_API", "SETUP_SCRIPT"]);
    assert.equal(e.RABBITMQ_API, `https://b-1234.mq.${REGION}.on.aws/api`);
    assert.deepEqual(secretEnv(task), {
      ADMIN_USERNAME: `${secretArn("amqp")}:username::`,
      ADMIN_PASSWORD: `${secretArn("amqp")}:password::`,
      ORDERS_PASSWORD: `${secretArn("orders-amqp")}:password::`,
      INVOICES_PASSWORD: `${secretArn("invoices-amqp")}:password::`,
    });
    // No database secret, and the task's own family, log group and security group.
    assert.ok(!JSON.stringify(task).includes("-database"));
    assert.equal(task.logConfiguration.options["awslogs-group"], "/ecs/wasm-platform-test/broker-setup");
    const group = one(run, "aws:ec2/securityGroup:SecurityGroup", "broker-setup");
    assert.equal(group.inputs.vpcId, "vpc-id");
  });

  it("names exactly the two component users, without tags, with exactly their permissions", () => {
    const users = JSON.parse(env(containers(run, "broker-setup")[0]).BROKER_USERS);
    // In the manifests' order: by name.
    assert.deepEqual(users, [
      { name: "invoices", vhost: "/", passwordEnv: "INVOICES_PASSWORD", permissions: PERMISSIONS.invoices },
      { name: "orders", vhost: "/", passwordEnv: "ORDERS_PASSWORD", permissions: PERMISSIONS.orders },
    ]);
  });

  it("run against the management API, creates the two users and their permissions as the admin", async () => {
    const [task] = containers(run, "broker-setup");
    const admin = secretValue("amqp");
    const expected = (requests: { method: string; url: string; authorization?: string; contentType?: string; body: string }[]) => {
      assert.deepEqual(requests.map((r) => `${r.method} ${r.url}`), [
        "PUT /api/users/invoices", "PUT /api/permissions/%2F/invoices",
        "PUT /api/users/orders", "PUT /api/permissions/%2F/orders",
      ]);
      for (const request of requests) {
        assert.equal(request.authorization, `Basic ${Buffer.from(`platform:${admin.password}`).toString("base64")}`);
        assert.equal(request.contentType, "application/json");
      }
      const body = (i: number) => JSON.parse(requests[i].body);
      assert.deepEqual(body(0), { password: secretValue("invoices-amqp").password, tags: "" });
      assert.deepEqual(body(1), PERMISSIONS.invoices);
      assert.deepEqual(body(2), { password: secretValue("orders-amqp").password, tags: "" });
      assert.deepEqual(body(3), PERMISSIONS.orders);
    };
    await withFakeApi(answer, async (base, requests) => {
      const first = await runContainer(run, task, { RABBITMQ_API: `${base}/api` });
      assert.equal(first.code, 0, first.stderr);
      expected(requests);
      // Again, as after a first run: the same requests, the same outcome.
      requests.length = 0;
      const second = await runContainer(run, task, { RABBITMQ_API: `${base}/api` });
      assert.equal(second.code, 0, second.stderr);
      expected(requests);
      for (const output of [first.stdout, first.stderr, second.stdout, second.stderr]) {
        assert.ok(!output.includes(PASSWORD_MARK), output);
      }
      assert.match(first.stdout, /^orders: user set \(no tags\)/m);
    });
  });

  it("fails on an error answer, without printing a password", async () => {
    const [task] = containers(run, "broker-setup");
    // An answer that echoes the request, password included.
    await withFakeApi((request) => ({ status: 400, body: request.body }), async (base, requests) => {
      const exit = await runContainer(run, task, { RABBITMQ_API: `${base}/api` });
      assert.equal(exit.code, 1);
      assert.equal(requests.length, 1, "stops at the first failure");
      assert.match(exit.stderr, /PUT \/users\/invoices: HTTP 400/);
      assert.ok(!exit.stderr.includes(PASSWORD_MARK) && !exit.stdout.includes(PASSWORD_MARK), exit.stderr);
    });
    await withFakeApi(() => ({ status: 401 }), async (base) => {
      assert.equal((await runContainer(run, task, { RABBITMQ_API: `${base}/api` })).code, 1);
    });
    // A missing password ends it before any request.
    await withFakeApi(answer, async (base, requests) => {
      const exit = await runContainer(run, task, { RABBITMQ_API: `${base}/api`, INVOICES_PASSWORD: "" });
      assert.equal(exit.code, 1);
      assert.match(exit.stderr, /INVOICES_PASSWORD is not set/);
      assert.equal(requests.length, 0);
    });
  });
});

describe("outputs", () => {
  it("name the gateway, the docs, the console, the repository and the setup commands", () => {
    const gateway = `http://gateway-1.${REGION}.elb.amazonaws.com`;
    assert.equal(run.outputs.gatewayUrl, gateway);
    assert.deepEqual(run.outputs.docsUrls, { orders: `${gateway}/orders/docs/`, invoices: `${gateway}/invoices/docs/` });
    assert.equal(run.outputs.rabbitmqConsoleUrl, `https://b-1234.mq.${REGION}.on.aws`);
    assert.equal(run.outputs.imageRepositoryUrl, REPOSITORY);
    assert.equal(run.outputs.image, `${REPOSITORY}:v1.2.3`);
    assert.equal(run.outputs.clusterName, "wasm-platform-test");
    assert.equal(run.outputs.dbSetupCommand, `aws ecs run-task --region ${REGION} --cluster wasm-platform-test`
      + " --task-definition wasm-platform-test-db-setup --launch-type FARGATE --count 1 --network-configuration"
      + " 'awsvpcConfiguration={subnets=[private-0-id,private-1-id],securityGroups=[db-setup-id],assignPublicIp=DISABLED}'");
    assert.equal(run.outputs.brokerSetupCommand, `aws ecs run-task --region ${REGION} --cluster wasm-platform-test`
      + " --task-definition wasm-platform-test-broker-setup --launch-type FARGATE --count 1 --network-configuration"
      + " 'awsvpcConfiguration={subnets=[private-0-id,private-1-id],securityGroups=[broker-setup-id],assignPublicIp=DISABLED}'");
  });
});
