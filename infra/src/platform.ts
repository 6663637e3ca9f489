// The whole deployment, assembled from the modules beside this file: the shared parts once, and
// per component (the manifests in deploy/manifests, read by config.ts) a host service, its
// secrets, Cloud Map name, Kong upstream, scaling, database and broker user.
import * as pulumi from "@pulumi/pulumi";
import { backlogPolicy, cpuScaling } from "./autoscaling";
import { queueName } from "./components";
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
  /** Swagger UI of each component, by name. */
  docsUrls: pulumi.Output<Record<string, string>>;
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
  const { prefix, components } = settings;
  const registry = createRegistry(prefix, {
    image: settings.image, imageTag: settings.imageTag, keep: settings.imageRetentionCount,
  });

  const network = createNetwork(prefix, settings.network);
  const groups = createSecurityGroups(prefix, network.vpcId, {
    https: Boolean(settings.certificateArn),
    adminCidrs: settings.adminCidrs,
  });

  const passwords = createPasswords(components);
  const database = createDatabase(prefix, settings.db, network.privateSubnetIds, groups.database.id);
  const broker = createBroker(settings.mq, network.privateSubnetIds, groups.broker.id, passwords.brokerAdmin.result);
  const secrets = createSecrets({
    prefix,
    components,
    passwords,
    databaseAddress: database.address,
    brokerEndpoint: broker.endpoint,
    brokerUsername: BROKER_USERNAME,
    otlpHeaders: settings.otlp?.headers,
  });

  const platform = createCluster(prefix, settings.containerInsights, settings.logRetentionDays);
  const discovery = createServiceDiscovery(settings.serviceNamespace, network.vpcId, components);
  const hostArgs = {
    platform,
    image: registry.image,
    cpuArchitecture: settings.cpuArchitecture,
    subnets: network.privateSubnetIds,
    securityGroup: groups.hosts,
    secrets,
    otlp: settings.otlp,
  };
  for (const component of components) {
    const { name } = component;
    const sizing = settings.hosts[name];
    const host = createHostService({ ...hostArgs, component: name, sizing, registry: discovery.services[name] });
    const scaling = cpuScaling(name, platform.cluster, host.service, sizing);
    if (component.subscriptions.length > 0) {
      backlogPolicy(name, scaling, {
        brokerName: broker.name,
        queues: component.subscriptions.map((topic) => queueName(name, topic)),
        names: { cluster: platform.cluster.name, service: host.service.name },
        perTask: sizing.backlogPerTask,
      });
    }
  }

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
    components,
    upstreams: Object.fromEntries(components.map(({ name }) => [name, `${discovery.hostnames[name]}:${PORTS.host}`])),
    cpuArchitecture: settings.cpuArchitecture,
    subnets: network.privateSubnetIds,
    groups,
    loadBalancer,
    secrets,
    otlp: settings.otlp,
  });

  const dbSetup = createDbSetup({
    platform, components, database, secrets, subnets: network.privateSubnetIds, securityGroup: groups.dbSetup,
  });
  const brokerSetup = createBrokerSetup({
    platform, components, broker, secrets, subnets: network.privateSubnetIds, securityGroup: groups.brokerSetup,
  });

  const host = settings.publicHostname ? pulumi.output(settings.publicHostname) : loadBalancer.alb.dnsName;
  const gatewayUrl = pulumi.interpolate`${loadBalancer.scheme}://${host}`;
  return {
    gatewayUrl,
    docsUrls: gatewayUrl.apply((url) => Object.fromEntries(components.map(({ name, route }) => [name, `${url}${route}/docs/`]))),
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
