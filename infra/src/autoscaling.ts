// Task counts follow load: CPU for every host, and for a component that consumes events also the
// backlog of its queues per running task, since a slow consumer shows up there before it shows
// up in CPU.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { VHOST } from "./broker-setup";
import { ServiceSizing } from "./config";

export interface Scaling {
  target: aws.appautoscaling.Target;
  policies: aws.appautoscaling.Policy[];
}

function scalableTarget(name: string, cluster: aws.ecs.Cluster, service: aws.ecs.Service, sizing: ServiceSizing) {
  return new aws.appautoscaling.Target(name, {
    serviceNamespace: "ecs",
    scalableDimension: "ecs:service:DesiredCount",
    resourceId: pulumi.interpolate`service/${cluster.name}/${service.name}`,
    minCapacity: sizing.minCount,
    maxCapacity: sizing.maxCount,
  });
}

function cpuPolicy(name: string, target: aws.appautoscaling.Target, percent: number) {
  return new aws.appautoscaling.Policy(`${name}-cpu`, {
    policyType: "TargetTrackingScaling",
    serviceNamespace: target.serviceNamespace,
    scalableDimension: target.scalableDimension,
    resourceId: target.resourceId,
    targetTrackingScalingPolicyConfiguration: {
      predefinedMetricSpecification: { predefinedMetricType: "ECSServiceAverageCPUUtilization" },
      targetValue: percent,
      scaleOutCooldown: 60,
      scaleInCooldown: 300,
    },
  });
}

export function cpuScaling(name: string, cluster: aws.ecs.Cluster, service: aws.ecs.Service, sizing: ServiceSizing): Scaling {
  const target = scalableTarget(name, cluster, service, sizing);
  return { target, policies: [cpuPolicy(name, target, sizing.cpuTarget)] };
}

/** The names CloudWatch knows a service's tasks by (Container Insights' dimensions). */
export interface ServiceNames {
  cluster: pulumi.Input<string>;
  service: pulumi.Input<string>;
}

/**
 * Adds tasks while each running task has more than `perTask` messages waiting for it: the
 * backlog per task, AWS's guidance for scaling a queue's consumers. The metric is metric math,
 * the messages waiting in the queues (Amazon MQ's per-queue `MessageReadyCount`: not the
 * messages consumers hold unacknowledged, up to their prefetch, which busy hosts always have)
 * over the service's running tasks (Container Insights' `RunningTaskCount`, which is why the
 * cluster has Container Insights on). `perTask` is the backlog a task may have: the latency
 * acceptable for a message over the time a task takes per message.
 *
 * Per task rather than the queue's depth alone: a backlog that does not drain (a failing
 * database, where no task makes progress) keeps a raw depth where it is however many tasks are
 * added, so target tracking would multiply the tasks each cooldown up to the maximum. Divided by
 * the running tasks, the metric falls as tasks are added, and the service settles at backlog ÷
 * `perTask` tasks (within minCount and maxCount); only a backlog that keeps growing asks for more.
 *
 * With two target-tracking policies on one target, the one asking for more tasks wins, so this
 * only ever adds to what CPU asks for; scaling in stays with the CPU policy.
 */
export function backlogPolicy(name: string, scaling: Scaling, args: {
  brokerName: pulumi.Input<string>;
  queues: readonly string[];
  names: ServiceNames;
  perTask: number;
}) {
  if (args.queues.length === 0) throw new Error(`${name}: a backlog policy needs a queue`);
  const waiting = args.queues.map((queue, i) => ({
    id: `ready${i}`,
    label: `Messages ready in ${queue}`,
    metricStat: {
      metric: {
        namespace: "AWS/AmazonMQ",
        metricName: "MessageReadyCount",
        dimensions: [
          { name: "Broker", value: args.brokerName },
          { name: "VirtualHost", value: VHOST },
          { name: "Queue", value: queue },
        ],
      },
      stat: "Average",
    },
    returnData: false,
  }));
  const tasks = {
    id: "tasks",
    label: "Running tasks",
    metricStat: {
      metric: {
        namespace: "ECS/ContainerInsights",
        metricName: "RunningTaskCount",
        dimensions: [
          { name: "ClusterName", value: args.names.cluster },
          { name: "ServiceName", value: args.names.service },
        ],
      },
      stat: "Average",
    },
    returnData: false,
  };
  const backlog = {
    id: "backlog",
    label: "Messages ready per running task",
    expression: `(${waiting.map((m) => m.id).join(" + ")}) / tasks`,
    returnData: true,
  };
  const policy = new aws.appautoscaling.Policy(`${name}-backlog`, {
    policyType: "TargetTrackingScaling",
    serviceNamespace: scaling.target.serviceNamespace,
    scalableDimension: scaling.target.scalableDimension,
    resourceId: scaling.target.resourceId,
    targetTrackingScalingPolicyConfiguration: {
      customizedMetricSpecification: { metrics: [...waiting, tasks, backlog] },
      targetValue: args.perTask,
      disableScaleIn: true,
      scaleOutCooldown: 60,
    },
  });
  scaling.policies.push(policy);
  return policy;
}
