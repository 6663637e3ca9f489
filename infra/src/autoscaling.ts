// Task counts follow load: CPU for both hosts, and for Invoices also the backlog of the queue it
// consumes, since a slow or failing downstream shows up there before it shows up in CPU.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { ServiceSizing } from "./config";

/** The queue the Invoices host consumes: `<exchange>.<consumer>.<topic>`, on the vhost `/`. */
export const INVOICES_QUEUE = "platform.events.invoices.orders.created";

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

/**
 * Adds tasks while messages wait in the queue (Amazon MQ's per-queue `MessageReadyCount`: not
 * the messages consumers hold unacknowledged, up to their prefetch, which busy hosts always
 * have). With two
 * target-tracking policies on one target, the one asking for more tasks wins, so this only ever
 * adds to what CPU asks for; scaling in stays with the CPU policy.
 */
export function queueDepthPolicy(name: string, scaling: Scaling, brokerName: pulumi.Input<string>, queue: string, messages: number) {
  const policy = new aws.appautoscaling.Policy(`${name}-queue-depth`, {
    policyType: "TargetTrackingScaling",
    serviceNamespace: scaling.target.serviceNamespace,
    scalableDimension: scaling.target.scalableDimension,
    resourceId: scaling.target.resourceId,
    targetTrackingScalingPolicyConfiguration: {
      customizedMetricSpecification: {
        namespace: "AWS/AmazonMQ",
        metricName: "MessageReadyCount",
        statistic: "Average",
        dimensions: [
          { name: "Broker", value: brokerName },
          { name: "VirtualHost", value: "/" },
          { name: "Queue", value: queue },
        ],
      },
      targetValue: messages,
      disableScaleIn: true,
      scaleOutCooldown: 60,
    },
  });
  scaling.policies.push(policy);
  return policy;
}
