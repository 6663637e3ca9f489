// The host services, one per component (components.ts): the same image, one component each
// (HOST_CONFIG names its manifest), each with its own database and broker secrets, registered in
// Cloud Map as <component>.<namespace> so Kong reaches them by name.
//
// Two health questions, two askers. Liveness (`GET /health/live`, through `/app/host probe
// --live`) is the container health check: ECS replaces a task that fails it, Cloud Map drops it
// from the name's answers, and a deployment admits a new task once it passes. It checks no
// dependency, so a database outage restarts no task and a new task can start during one.
// Readiness (`GET /health`, which asks the component's database) decides where requests go, and
// that is Kong's upstream health checks (kong-config.ts).
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { OtlpSettings, ServiceSizing } from "./config";
import { ContainerDefinition, Platform, awslogs, executionRole, logGroup, serviceBasics, taskDefinition } from "./ecs";
import { PORTS } from "./security";
import { Component, envName } from "./components";
import { PerComponent, Secrets, secretRef } from "./secrets";

/** How long a stopping host keeps serving while it answers not ready (see the task's environment). */
export const DRAIN_DELAY_MS = 15000;

/** The container health check: `GET /health/live` on the data port, 0 on 200. */
export const LIVENESS_PROBE = ["CMD", "/app/host", "probe", "--live"];

export interface ServiceDiscovery {
  namespace: aws.servicediscovery.PrivateDnsNamespace;
  services: PerComponent<aws.servicediscovery.Service>;
  /** `<component>.<namespace>` */
  hostnames: PerComponent<string>;
}

export function createServiceDiscovery(
  namespaceName: string,
  vpcId: pulumi.Input<string>,
  components: readonly Component[],
): ServiceDiscovery {
  const namespace = new aws.servicediscovery.PrivateDnsNamespace("services", {
    name: namespaceName,
    vpc: vpcId,
    description: "The host services, for Kong",
  });
  const service = (name: string) => new aws.servicediscovery.Service(name, {
    name,
    dnsConfig: {
      namespaceId: namespace.id,
      // One A record per running task; a short TTL so Kong stops using a stopped task quickly.
      dnsRecords: [{ type: "A", ttl: 10 }],
      routingPolicy: "MULTIVALUE",
    },
    // ECS reports the container health check (liveness): a task that fails it drops out of the
    // answers. The provider keeps this block only with a threshold; without one the next update
    // would replace the service (and fail on its name).
    healthCheckCustomConfig: { failureThreshold: 1 },
  });
  return {
    namespace,
    services: Object.fromEntries(components.map(({ name }) => [name, service(name)])),
    hostnames: Object.fromEntries(components.map(({ name }) => [name, `${name}.${namespaceName}`])),
  };
}

export interface HostService {
  component: string;
  service: aws.ecs.Service;
  taskDefinition: aws.ecs.TaskDefinition;
  executionRole: aws.iam.Role;
}

export function hostContainer(args: {
  component: string;
  image: pulumi.Input<string>;
  secrets: Secrets;
  otlp?: OtlpSettings;
  logConfiguration: ContainerDefinition["logConfiguration"];
}): ContainerDefinition {
  const { component, secrets, otlp } = args;
  const environment: ContainerDefinition["environment"] = [
    { name: "HOST_CONFIG", value: `/app/manifests/${component}.toml` },
    { name: "HOST_LOG_JSON", value: "1" },
    // On a stop, readiness answers 503 and requests are still served for this long: Kong's
    // health checks take the task out within 12 s and Kong holds the service's DNS answer for
    // its TTL (10 s), so it may send to a stopping task that long.
    { name: "HOST_HTTP__DRAIN_DELAY_MS", value: String(DRAIN_DELAY_MS) },
  ];
  const NAME = envName(component);
  const secretEnv = [
    // Only this component's database and broker user: the other components' credentials, and
    // the broker's admin login, never reach this task.
    secretRef(`${NAME}_DATABASE_URL`, secrets.database[component].arn, "url"),
    // The host reads <NAME>_AMQP_URL first and falls back to AMQP_URL: both are this component's.
    secretRef(`${NAME}_AMQP_URL`, secrets.broker[component].arn, "url"),
    secretRef("AMQP_URL", secrets.broker[component].arn, "url"),
    secretRef("HOST_ADMIN_TOKEN", secrets.adminToken.arn),
  ];
  if (otlp) {
    environment.push({ name: "OTEL_EXPORTER_OTLP_ENDPOINT", value: otlp.endpoint });
    if (secrets.otlp) secretEnv.push(secretRef("OTEL_EXPORTER_OTLP_HEADERS", secrets.otlp.arn, "headers"));
  }
  return {
    name: component,
    image: args.image,
    essential: true,
    portMappings: [
      { containerPort: PORTS.host, protocol: "tcp", name: "http" },
      { containerPort: PORTS.hostAdmin, protocol: "tcp", name: "admin" },
    ],
    environment,
    secrets: secretEnv,
    // Liveness only: a task whose database is away is not restarted (it answers not ready, and
    // Kong sends it nothing). The probe waits up to 3 s; the process start is on top of that.
    healthCheck: { command: LIVENESS_PROBE, interval: 10, timeout: 5, retries: 3, startPeriod: 60 },
    // Longer than the drain delay and the host's own shutdown grace (20 s) together, so
    // requests in flight finish.
    stopTimeout: 45,
    logConfiguration: args.logConfiguration,
  };
}

/** The secrets a host's tasks are given, for its execution role. */
export function hostSecretArns(component: string, secrets: Secrets): pulumi.Output<string>[] {
  return [secrets.database[component].arn, secrets.broker[component].arn, secrets.adminToken.arn,
    ...(secrets.otlp ? [secrets.otlp.arn] : [])];
}

export function createHostService(args: {
  platform: Platform;
  component: string;
  image: pulumi.Input<string>;
  sizing: ServiceSizing;
  cpuArchitecture: string;
  subnets: pulumi.Input<string>[];
  securityGroup: aws.ec2.SecurityGroup;
  registry: aws.servicediscovery.Service;
  secrets: Secrets;
  otlp?: OtlpSettings;
}): HostService {
  const { platform, component, secrets } = args;
  const role = executionRole(component, hostSecretArns(component, secrets));
  const logs = logGroup(platform, component);
  const task = taskDefinition(platform, {
    family: component,
    cpu: args.sizing.cpu,
    memory: args.sizing.memory,
    cpuArchitecture: args.cpuArchitecture,
    executionRole: role,
    containers: [hostContainer({ component, image: args.image, secrets, otlp: args.otlp, logConfiguration: awslogs(platform, logs) })],
  });
  const service = new aws.ecs.Service(component, {
    ...serviceBasics(platform, args.subnets, args.securityGroup),
    name: component,
    taskDefinition: task.arn,
    desiredCount: args.sizing.desiredCount,
    serviceRegistries: { registryArn: args.registry.arn },
  }, {
    // Tasks read the secrets' current versions when they start.
    dependsOn: [secrets.database[component].version, secrets.broker[component].version, secrets.adminToken.version,
      ...(secrets.otlp ? [secrets.otlp.version] : [])],
    // Autoscaling owns the count once the service runs.
    ignoreChanges: ["desiredCount"],
  });
  return { component, service, taskDefinition: task, executionRole: role };
}
