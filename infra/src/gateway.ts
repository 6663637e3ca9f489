// The public entry: an ALB in the public subnets in front of Kong (DB-less, on Fargate in the
// private subnets), which routes each component's path to its hosts as kong/kong.yml says.
import * as fs from "fs";
import * as path from "path";
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { KongSettings, OtlpSettings } from "./config";
import { ContainerDefinition, Platform, awslogs, executionRole, logGroup, serviceBasics, taskDefinition } from "./ecs";
import { Component, repositoryRoot } from "./components";
import { KONG_OTLP_AUTHORIZATION_ENV, kongDeclarativeConfig } from "./kong-config";
import { PORTS, SecurityGroups } from "./security";
import { Secrets, StoredSecret, secretRef } from "./secrets";

const ALB_IDLE_TIMEOUT = 60;

export interface LoadBalancer {
  alb: aws.lb.LoadBalancer;
  targetGroup: aws.lb.TargetGroup;
  listeners: aws.lb.Listener[];
  scheme: "http" | "https";
}

export function createLoadBalancer(args: {
  vpcId: pulumi.Input<string>;
  subnets: pulumi.Input<string>[];
  groups: SecurityGroups;
  certificateArn?: string;
  sslPolicy: string;
}): LoadBalancer {
  const alb = new aws.lb.LoadBalancer("gateway", {
    loadBalancerType: "application",
    internal: false,
    subnets: args.subnets,
    securityGroups: [args.groups.alb.id],
    idleTimeout: ALB_IDLE_TIMEOUT,
    // Requests with malformed headers never reach Kong.
    dropInvalidHeaderFields: true,
    // The ALB appends the client's address to X-Forwarded-For, which Kong reads for rate limits.
    xffHeaderProcessingMode: "append",
  });
  const targetGroup = new aws.lb.TargetGroup("kong", {
    vpcId: args.vpcId,
    targetType: "ip",
    protocol: "HTTP",
    port: PORTS.kongProxy,
    // Kong's own grace: in-flight requests get this long after a task is taken out.
    deregistrationDelay: 30,
    healthCheck: {
      protocol: "HTTP",
      port: String(PORTS.kongStatus),
      path: "/status/ready",
      matcher: "200",
      interval: 15,
      timeout: 5,
      healthyThreshold: 2,
      unhealthyThreshold: 3,
    },
  });
  const forward = [{ type: "forward", targetGroupArn: targetGroup.arn }];
  if (!args.certificateArn) {
    const http = new aws.lb.Listener("http", { loadBalancerArn: alb.arn, port: PORTS.http, protocol: "HTTP", defaultActions: forward });
    return { alb, targetGroup, listeners: [http], scheme: "http" };
  }
  const https = new aws.lb.Listener("https", {
    loadBalancerArn: alb.arn,
    port: PORTS.https,
    protocol: "HTTPS",
    certificateArn: args.certificateArn,
    sslPolicy: args.sslPolicy,
    defaultActions: forward,
  });
  const http = new aws.lb.Listener("http", {
    loadBalancerArn: alb.arn,
    port: PORTS.http,
    protocol: "HTTP",
    defaultActions: [{ type: "redirect", redirect: { protocol: "HTTPS", port: String(PORTS.https), statusCode: "HTTP_301" } }],
  });
  return { alb, targetGroup, listeners: [https, http], scheme: "https" };
}

export function kongContainer(args: {
  settings: KongSettings;
  declarativeConfig: string;
  otlp?: OtlpSettings;
  otlpSecret?: StoredSecret;
  logConfiguration: ContainerDefinition["logConfiguration"];
}): ContainerDefinition {
  const environment: ContainerDefinition["environment"] = [
    { name: "KONG_DATABASE", value: "off" },
    { name: "KONG_DECLARATIVE_CONFIG_STRING", value: args.declarativeConfig },
    { name: "KONG_PROXY_LISTEN", value: `0.0.0.0:${PORTS.kongProxy}` },
    // /status/ready for the ALB's health checks; the Admin API and Manager are not served.
    { name: "KONG_STATUS_LISTEN", value: `0.0.0.0:${PORTS.kongStatus}` },
    { name: "KONG_ADMIN_LISTEN", value: "off" },
    { name: "KONG_ADMIN_GUI_LISTEN", value: "off" },
    { name: "KONG_PROXY_ACCESS_LOG", value: "/dev/stdout" },
    { name: "KONG_PROXY_ERROR_LOG", value: "/dev/stderr" },
    { name: "KONG_ADMIN_ERROR_LOG", value: "/dev/stderr" },
    // The client's address is the last one in X-Forwarded-For, the one the ALB appended; trusting
    // every peer is safe because only the ALB can reach Kong, and without recursion an address a
    // client wrote into the header itself is never taken.
    { name: "KONG_TRUSTED_IPS", value: "0.0.0.0/0,::/0" },
    { name: "KONG_REAL_IP_HEADER", value: "X-Forwarded-For" },
    { name: "KONG_REAL_IP_RECURSIVE", value: "off" },
    // Longer than the ALB's idle timeout, so the ALB closes idle connections first and never
    // sends a request down one Kong is closing (which the client would see as a 502).
    { name: "KONG_NGINX_HTTP_KEEPALIVE_TIMEOUT", value: `${ALB_IDLE_TIMEOUT + 15}s` },
  ];
  const secrets: ContainerDefinition["secrets"] = [];
  if (args.otlp) {
    environment.push(
      { name: "KONG_TRACING_INSTRUMENTATIONS", value: "all" },
      { name: "KONG_TRACING_SAMPLING_RATE", value: String(args.settings.tracingSamplingRate) },
    );
    if (args.otlpSecret) secrets.push(secretRef(KONG_OTLP_AUTHORIZATION_ENV, args.otlpSecret.arn, "authorization"));
  }
  return {
    name: "kong",
    image: args.settings.image,
    essential: true,
    portMappings: [
      { containerPort: PORTS.kongProxy, protocol: "tcp", name: "proxy" },
      { containerPort: PORTS.kongStatus, protocol: "tcp", name: "status" },
    ],
    environment,
    secrets,
    healthCheck: { command: ["CMD", "kong", "health"], interval: 10, timeout: 5, retries: 3, startPeriod: 30 },
    stopTimeout: 30,
    logConfiguration: args.logConfiguration,
  };
}

export function createKong(args: {
  platform: Platform;
  settings: KongSettings;
  /** kong.yml's services must be these, at their routes. */
  components: readonly Component[];
  /** Service-discovery names of the hosts, per kong.yml service, before stack overrides. */
  upstreams: Record<string, string>;
  cpuArchitecture: string;
  subnets: pulumi.Input<string>[];
  groups: SecurityGroups;
  loadBalancer: LoadBalancer;
  secrets: Secrets;
  otlp?: OtlpSettings;
}): { service: aws.ecs.Service; taskDefinition: aws.ecs.TaskDefinition; executionRole: aws.iam.Role } {
  const { platform, settings, otlp, secrets } = args;
  const declarative = kongDeclarativeConfig(fs.readFileSync(path.join(repositoryRoot(), "kong", "kong.yml"), "utf8"), {
    upstreams: { ...args.upstreams, ...settings.upstreams },
    routes: Object.fromEntries(args.components.map((c) => [c.name, c.route])),
    tracesEndpoint: otlp ? `${otlp.endpoint}/v1/traces` : undefined,
    authorization: Boolean(otlp && secrets.otlp),
  });
  const role = executionRole("kong", otlp && secrets.otlp ? [secrets.otlp.arn] : []);
  const logs = logGroup(platform, "kong");
  const task = taskDefinition(platform, {
    family: "kong",
    cpu: settings.cpu,
    memory: settings.memory,
    cpuArchitecture: args.cpuArchitecture,
    executionRole: role,
    containers: [kongContainer({
      settings,
      declarativeConfig: JSON.stringify(declarative),
      otlp,
      otlpSecret: secrets.otlp,
      logConfiguration: awslogs(platform, logs),
    })],
  });
  const service = new aws.ecs.Service("kong", {
    ...serviceBasics(platform, args.subnets, args.groups.kong),
    name: "kong",
    taskDefinition: task.arn,
    desiredCount: settings.desiredCount,
    loadBalancers: [{ targetGroupArn: args.loadBalancer.targetGroup.arn, containerName: "kong", containerPort: PORTS.kongProxy }],
    // Kong loads its configuration in seconds; this covers a slow image pull on a new node.
    healthCheckGracePeriodSeconds: 60,
  }, {
    // A target group must be attached to a listener before a service can use it.
    dependsOn: [...args.loadBalancer.listeners, ...(secrets.otlp ? [secrets.otlp.version] : [])],
  });
  return { service, taskDefinition: task, executionRole: role };
}
