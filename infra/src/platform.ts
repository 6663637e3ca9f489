// The whole deployment, assembled from the modules beside this file.
import * as pulumi from "@pulumi/pulumi";
import { INVOICES_QUEUE, backlogPolicy, cpuScaling } from "./autoscaling";
import { Settings } from "./config";
import { BROKER_USERNAME, createBroker, createDatabase } from "./data";
import { createBrokerSetup } from "./broker-setup";
import { createDbSetup } from "./db-setup";
import { createCluster } from "./ecs";
import { createKong, createLoadBalancer } from "./gateway";
import { createHostService, createServiceDiscovery } from "./hosts";
import { createNetwork } from "./network";
import { createRegistry } from "./registry";
import { createPasswords, createSecrets } from "./secrets";
import { PORTS, createSecurityGroups } from "./security";

export interface Outputs {
  gatewayUrl: pulumi.Output<string>;
  ordersDocsUrl: pulumi.Output<string>;
  invoicesDocsUrl: pulumi.Output<string>;
  rabbitmqConsoleUrl: pulumi.Output<string>;
  imageRepositoryUrl: pulumi.Output<string>;
  image: pulumi.Output<string>;
  dbSetupCommand: pulumi.Output<string>;
  brokerSetupCommand: pulumi.Output<string>;
  clusterName: pulumi.Output<string>;
  databaseAddress: pulumi.Output<string>;
  serviceHostnames: Record<string, string>;
}

export function createPlatform(settings: Settings): Outputs {
  const { prefix } = settings;
  const registry = createRegistry(prefix, {
    image: settings.image, imageTag: settings.imageTag, keep: settings.imageRetentionCount,
  });

  const network = createNetwork(prefix, settings.network);
  const groups = createSecurityGroups(prefix, network.vpcId, {
    https: Boolean(settings.certificateArn),
    adminCidrs: settings.adminCidrs,
  });

  const passwords = createPasswords();
  const database = createDatabase(prefix, settings.db, network.privateSubnetIds, groups.database.id);
  const broker = createBroker(settings.mq, network.privateSubnetIds, groups.broker.id, passwords.brokerAdmin.result);
  const secrets = createSecrets({
    prefix,
    passwords,
    databaseAddress: database.address,
    brokerEndpoint: broker.endpoint,
    brokerUsername: BROKER_USERNAME,
    otlpHeaders: settings.otlp?.headers,
  });

  const platform = createCluster(prefix, settings.containerInsights, settings.logRetentionDays);
  const discovery = createServiceDiscovery(settings.serviceNamespace, network.vpcId);
  const hostArgs = {
    platform,
    image: registry.image,
    cpuArchitecture: settings.cpuArchitecture,
    subnets: network.privateSubnetIds,
    securityGroup: groups.hosts,
    secrets,
    otlp: settings.otlp,
  };
  const orders = createHostService({ ...hostArgs, component: "orders", sizing: settings.orders, registry: discovery.services.orders });
  const invoices = createHostService({ ...hostArgs, component: "invoices", sizing: settings.invoices, registry: discovery.services.invoices });

  cpuScaling("orders", platform.cluster, orders.service, settings.orders);
  const invoicesScaling = cpuScaling("invoices", platform.cluster, invoices.service, settings.invoices);
  backlogPolicy("invoices", invoicesScaling, {
    brokerName: broker.name,
    queues: [INVOICES_QUEUE],
    names: { cluster: platform.cluster.name, service: invoices.service.name },
    perTask: settings.invoices.backlogPerTask,
  });

  const loadBalancer = createLoadBalancer({
    vpcId: network.vpcId,
    subnets: network.publicSubnetIds,
    groups,
    certificateArn: settings.certificateArn,
    sslPolicy: settings.sslPolicy,
  });
  createKong({
    platform,
    settings: settings.kong,
    upstreams: {
      orders: `${discovery.hostnames.orders}:${PORTS.host}`,
      invoices: `${discovery.hostnames.invoices}:${PORTS.host}`,
    },
    cpuArchitecture: settings.cpuArchitecture,
    subnets: network.privateSubnetIds,
    groups,
    loadBalancer,
    secrets,
    otlp: settings.otlp,
  });

  const dbSetup = createDbSetup({ platform, database, secrets, subnets: network.privateSubnetIds, securityGroup: groups.dbSetup });
  const brokerSetup = createBrokerSetup({
    platform, broker, secrets, subnets: network.privateSubnetIds, securityGroup: groups.brokerSetup,
  });

  const host = settings.publicHostname ? pulumi.output(settings.publicHostname) : loadBalancer.alb.dnsName;
  const gatewayUrl = pulumi.interpolate`${loadBalancer.scheme}://${host}`;
  return {
    gatewayUrl,
    ordersDocsUrl: pulumi.interpolate`${gatewayUrl}/orders/docs/`,
    invoicesDocsUrl: pulumi.interpolate`${gatewayUrl}/invoices/docs/`,
    rabbitmqConsoleUrl: broker.consoleUrl,
    imageRepositoryUrl: registry.repository.repositoryUrl,
    image: registry.image,
    dbSetupCommand: dbSetup.command,
    brokerSetupCommand: brokerSetup.command,
    clusterName: platform.cluster.name,
    databaseAddress: database.address,
    serviceHostnames: discovery.hostnames,
  };
}
