// One security group per tier, each rule a resource of its own, so the flows between tiers are
// exactly the ones listed here (a group with no rule in a direction allows nothing that way).
//
//   internet --80/443--> ALB --8000 (proxy), 8100 (status)--> Kong --8000--> hosts
//   hosts --5432--> RDS, --5671--> Amazon MQ; db-setup --5432--> RDS
//   broker-setup --443--> Amazon MQ (the RabbitMQ management API)
//   Kong, hosts, db-setup, broker-setup --443--> anywhere (image pulls, Secrets Manager, CloudWatch, OTLP)
//   adminCidrs --9000--> hosts, --443--> the RabbitMQ console, only when configured
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";

export const PORTS = {
  http: 80,
  https: 443,
  kongProxy: 8000,
  kongStatus: 8100,
  host: 8000,
  hostAdmin: 9000,
  postgres: 5432,
  amqps: 5671,
} as const;

export interface SecurityGroups {
  alb: aws.ec2.SecurityGroup;
  kong: aws.ec2.SecurityGroup;
  hosts: aws.ec2.SecurityGroup;
  dbSetup: aws.ec2.SecurityGroup;
  brokerSetup: aws.ec2.SecurityGroup;
  database: aws.ec2.SecurityGroup;
  broker: aws.ec2.SecurityGroup;
}

type Peer = { group: aws.ec2.SecurityGroup } | { cidr: string };

function peerArgs(peer: Peer): { referencedSecurityGroupId?: pulumi.Input<string>; cidrIpv4?: string; cidrIpv6?: string } {
  if ("group" in peer) return { referencedSecurityGroupId: peer.group.id };
  return peer.cidr.includes(":") ? { cidrIpv6: peer.cidr } : { cidrIpv4: peer.cidr };
}

function ingress(name: string, group: aws.ec2.SecurityGroup, port: number, from: Peer, description: string) {
  return new aws.vpc.SecurityGroupIngressRule(name, {
    securityGroupId: group.id,
    ipProtocol: "tcp",
    fromPort: port,
    toPort: port,
    description,
    ...peerArgs(from),
  });
}

function egress(name: string, group: aws.ec2.SecurityGroup, port: number, to: Peer, description: string) {
  return new aws.vpc.SecurityGroupEgressRule(name, {
    securityGroupId: group.id,
    ipProtocol: "tcp",
    fromPort: port,
    toPort: port,
    description,
    ...peerArgs(to),
  });
}

const ANYWHERE = { cidr: "0.0.0.0/0" };

export function createSecurityGroups(
  prefix: string,
  vpcId: pulumi.Input<string>,
  options: { https: boolean; adminCidrs: string[] },
): SecurityGroups {
  // Descriptions are fixed: changing one replaces the group.
  const group = (name: string, description: string) =>
    new aws.ec2.SecurityGroup(name, { vpcId, description, tags: { Name: `${prefix}-${name}` } });
  const groups: SecurityGroups = {
    alb: group("alb", "Public load balancer in front of Kong"),
    kong: group("kong", "Kong gateway tasks"),
    hosts: group("hosts", "Orders and Invoices host tasks"),
    dbSetup: group("db-setup", "One-off task creating the service databases"),
    brokerSetup: group("broker-setup", "One-off task creating the service broker users"),
    database: group("database", "PostgreSQL"),
    broker: group("broker", "Amazon MQ for RabbitMQ"),
  };
  const { alb, kong, hosts, dbSetup, brokerSetup, database, broker } = groups;

  ingress("alb-in-http", alb, PORTS.http, ANYWHERE, "HTTP from the internet");
  if (options.https) ingress("alb-in-https", alb, PORTS.https, ANYWHERE, "HTTPS from the internet");
  egress("alb-out-kong-proxy", alb, PORTS.kongProxy, { group: kong }, "Requests to Kong");
  egress("alb-out-kong-status", alb, PORTS.kongStatus, { group: kong }, "Health checks of Kong");

  ingress("kong-in-proxy", kong, PORTS.kongProxy, { group: alb }, "Requests from the ALB");
  ingress("kong-in-status", kong, PORTS.kongStatus, { group: alb }, "Health checks from the ALB");
  egress("kong-out-hosts", kong, PORTS.host, { group: hosts }, "Requests to the hosts");
  egress("kong-out-https", kong, PORTS.https, ANYWHERE, "Image pull, Secrets Manager, logs, OTLP");

  ingress("hosts-in-kong", hosts, PORTS.host, { group: kong }, "Requests from Kong");
  options.adminCidrs.forEach((cidr, i) =>
    ingress(`hosts-in-admin-${i}`, hosts, PORTS.hostAdmin, { cidr }, `Admin API from ${cidr}`));
  egress("hosts-out-database", hosts, PORTS.postgres, { group: database }, "PostgreSQL");
  egress("hosts-out-broker", hosts, PORTS.amqps, { group: broker }, "RabbitMQ over TLS");
  egress("hosts-out-https", hosts, PORTS.https, ANYWHERE, "ECR, Secrets Manager, logs, OTLP");

  egress("db-setup-out-database", dbSetup, PORTS.postgres, { group: database }, "PostgreSQL");
  egress("db-setup-out-https", dbSetup, PORTS.https, ANYWHERE, "Image pull, Secrets Manager, logs");

  // Anywhere on 443 includes the broker's management API; the broker admits it below.
  egress("broker-setup-out-https", brokerSetup, PORTS.https, ANYWHERE, "Image pull, Secrets Manager, logs, RabbitMQ management API");

  ingress("database-in-hosts", database, PORTS.postgres, { group: hosts }, "PostgreSQL from the hosts");
  ingress("database-in-db-setup", database, PORTS.postgres, { group: dbSetup }, "PostgreSQL from db-setup");

  ingress("broker-in-hosts", broker, PORTS.amqps, { group: hosts }, "AMQPS from the hosts");
  ingress("broker-in-broker-setup", broker, PORTS.https, { group: brokerSetup }, "RabbitMQ management API from broker-setup");
  // The operators' networks also reach the RabbitMQ management console (the broker's HTTPS).
  options.adminCidrs.forEach((cidr, i) =>
    ingress(`broker-in-console-${i}`, broker, PORTS.https, { cidr }, `RabbitMQ console from ${cidr}`));

  return groups;
}
