// What every task here shares: the cluster, a log group per task family, an execution role that
// may read exactly the secrets its tasks are given, and the shape of a container definition.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { ContainerInsights } from "./config";

/** The part of an ECS container definition this program writes. */
export interface ContainerDefinition {
  name: string;
  image: pulumi.Input<string>;
  essential: boolean;
  entryPoint?: string[];
  command?: string[];
  portMappings?: { containerPort: number; protocol: "tcp"; name: string }[];
  environment: { name: string; value: pulumi.Input<string> }[];
  secrets: { name: string; valueFrom: pulumi.Input<string> }[];
  healthCheck?: { command: string[]; interval: number; timeout: number; retries: number; startPeriod: number };
  stopTimeout?: number;
  logConfiguration: { logDriver: "awslogs"; options: Record<string, pulumi.Input<string>> };
}

export interface Platform {
  cluster: aws.ecs.Cluster;
  region: pulumi.Output<string>;
  logRetentionDays: number;
  prefix: string;
}

export function createCluster(prefix: string, containerInsights: ContainerInsights, logRetentionDays: number): Platform {
  const cluster = new aws.ecs.Cluster("platform", {
    name: prefix,
    // Always on: the backlog scaling policy reads the services' running task counts from it.
    settings: [{ name: "containerInsights", value: containerInsights }],
  });
  return { cluster, region: aws.getRegionOutput().region, logRetentionDays, prefix };
}

export function logGroup(platform: Platform, family: string): aws.cloudwatch.LogGroup {
  return new aws.cloudwatch.LogGroup(family, {
    name: `/ecs/${platform.prefix}/${family}`,
    retentionInDays: platform.logRetentionDays,
  });
}

export function awslogs(platform: Platform, group: aws.cloudwatch.LogGroup): ContainerDefinition["logConfiguration"] {
  return {
    logDriver: "awslogs",
    options: {
      "awslogs-group": group.name,
      "awslogs-region": platform.region,
      "awslogs-stream-prefix": "ecs",
    },
  };
}

export const EXECUTION_POLICY_ARN = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy";

/**
 * The role ECS uses to start a family's tasks: pull the image, write its logs, and read the
 * secrets named (by ARN, no wildcard) — one role per family, so no task can be handed another's.
 */
export function executionRole(family: string, secretArns: pulumi.Input<string>[]): aws.iam.Role {
  const role = new aws.iam.Role(`${family}-execution`, {
    description: `Starts the ${family} tasks`,
    assumeRolePolicy: JSON.stringify({
      Version: "2012-10-17",
      Statement: [{ Effect: "Allow", Principal: { Service: "ecs-tasks.amazonaws.com" }, Action: "sts:AssumeRole" }],
    }),
  });
  new aws.iam.RolePolicyAttachment(`${family}-execution`, { role: role.name, policyArn: EXECUTION_POLICY_ARN });
  if (secretArns.length > 0) {
    new aws.iam.RolePolicy(`${family}-secrets`, {
      role: role.name,
      policy: pulumi.jsonStringify({
        Version: "2012-10-17",
        Statement: [{ Effect: "Allow", Action: "secretsmanager:GetSecretValue", Resource: secretArns }],
      }),
    });
  }
  return role;
}

export function containerDefinitions(defs: ContainerDefinition[]): pulumi.Output<string> {
  return pulumi.jsonStringify(defs);
}

export interface FargateTask {
  family: string;
  cpu: number;
  memory: number;
  cpuArchitecture: string;
  executionRole: aws.iam.Role;
  containers: ContainerDefinition[];
}

export function taskDefinition(platform: Platform, task: FargateTask): aws.ecs.TaskDefinition {
  return new aws.ecs.TaskDefinition(task.family, {
    family: `${platform.prefix}-${task.family}`,
    requiresCompatibilities: ["FARGATE"],
    networkMode: "awsvpc",
    cpu: String(task.cpu),
    memory: String(task.memory),
    runtimePlatform: { operatingSystemFamily: "LINUX", cpuArchitecture: task.cpuArchitecture },
    executionRoleArn: task.executionRole.arn,
    containerDefinitions: containerDefinitions(task.containers),
  });
}

/** The settings every long-running service here shares. */
export function serviceBasics(platform: Platform, subnets: pulumi.Input<string>[], securityGroup: aws.ec2.SecurityGroup) {
  return {
    cluster: platform.cluster.arn,
    launchType: "FARGATE",
    // Tasks have no public address; they reach out through the NAT gateway.
    networkConfiguration: { subnets, securityGroups: [securityGroup.id], assignPublicIp: false },
    // A rolling deployment that stops and returns to the last working task definition when the
    // new tasks keep failing their health checks.
    deploymentCircuitBreaker: { enable: true, rollback: true },
    deploymentMinimumHealthyPercent: 100,
    deploymentMaximumPercent: 200,
    propagateTags: "SERVICE",
  };
}

/** `aws ecs run-task ...` for a one-off task (the setup tasks), in the given subnets and group. */
export function runTaskCommand(
  platform: Platform,
  task: aws.ecs.TaskDefinition,
  securityGroup: aws.ec2.SecurityGroup,
  subnets: pulumi.Input<string>[],
): pulumi.Output<string> {
  return pulumi.all([platform.region, platform.cluster.name, task.family, securityGroup.id, ...subnets])
    .apply(([region, cluster, family, group, ...ids]) => [
      "aws ecs run-task",
      `--region ${region}`,
      `--cluster ${cluster}`,
      `--task-definition ${family}`,
      "--launch-type FARGATE",
      "--count 1",
      `--network-configuration 'awsvpcConfiguration={subnets=[${ids.join(",")}],securityGroups=[${group}],assignPublicIp=DISABLED}'`,
    ].join(" "));
}
