// The VPC: two public subnets (the ALB, the NAT gateway) and two private ones (every task, the
// database, the broker) in two Availability Zones, or an existing VPC named in the stack config.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { NetworkSettings } from "./config";

export interface Network {
  vpcId: pulumi.Input<string>;
  publicSubnetIds: pulumi.Input<string>[];
  privateSubnetIds: pulumi.Input<string>[];
}

/** The i-th /20 of a /16 (10.0.0.0/16, 2 -> 10.0.32.0/20). */
export function subnetCidr(vpcCidr: string, index: number): string {
  const [a, b] = vpcCidr.split(".");
  return `${a}.${b}.${index * 16}.0/20`;
}

export function createNetwork(prefix: string, settings: NetworkSettings): Network {
  if (settings.vpcId && settings.publicSubnetIds && settings.privateSubnetIds) {
    return {
      vpcId: settings.vpcId,
      publicSubnetIds: settings.publicSubnetIds,
      privateSubnetIds: settings.privateSubnetIds,
    };
  }

  const zones = aws.getAvailabilityZonesOutput({ state: "available" }).names.apply((names) => {
    if (names.length < 2) throw new Error("the region offers fewer than two Availability Zones");
    return names.slice(0, 2);
  });

  // DNS hostnames and resolution: the private Cloud Map namespace and the RDS and Amazon MQ
  // endpoints are names that only resolve inside the VPC with both on.
  const vpc = new aws.ec2.Vpc("vpc", {
    cidrBlock: settings.vpcCidr,
    enableDnsHostnames: true,
    enableDnsSupport: true,
    tags: { Name: prefix },
  });
  const igw = new aws.ec2.InternetGateway("igw", { vpcId: vpc.id, tags: { Name: prefix } });

  const publicSubnets = [0, 1].map((i) => new aws.ec2.Subnet(`public-${i}`, {
    vpcId: vpc.id,
    cidrBlock: subnetCidr(settings.vpcCidr, i),
    availabilityZone: zones[i],
    // Only the ALB and the NAT gateway live here, and both get their addresses explicitly.
    mapPublicIpOnLaunch: false,
    tags: { Name: `${prefix}-public-${i}` },
  }));
  const privateSubnets = [0, 1].map((i) => new aws.ec2.Subnet(`private-${i}`, {
    vpcId: vpc.id,
    cidrBlock: subnetCidr(settings.vpcCidr, 8 + i),
    availabilityZone: zones[i],
    mapPublicIpOnLaunch: false,
    tags: { Name: `${prefix}-private-${i}` },
  }));

  const publicRoutes = new aws.ec2.RouteTable("public", { vpcId: vpc.id, tags: { Name: `${prefix}-public` } });
  new aws.ec2.Route("public-default", {
    routeTableId: publicRoutes.id,
    destinationCidrBlock: "0.0.0.0/0",
    gatewayId: igw.id,
  });
  publicSubnets.forEach((subnet, i) => new aws.ec2.RouteTableAssociation(`public-${i}`, {
    subnetId: subnet.id,
    routeTableId: publicRoutes.id,
  }));

  // One NAT gateway for both private subnets: half the fixed cost of one per zone, at the price
  // of private egress (image pulls, Secrets Manager, logs, OTLP) depending on one zone.
  const natAddress = new aws.ec2.Eip("nat", { domain: "vpc", tags: { Name: `${prefix}-nat` } });
  const nat = new aws.ec2.NatGateway("nat", {
    allocationId: natAddress.id,
    subnetId: publicSubnets[0].id,
    tags: { Name: prefix },
  }, { dependsOn: [igw] });

  const privateRoutes = new aws.ec2.RouteTable("private", { vpcId: vpc.id, tags: { Name: `${prefix}-private` } });
  new aws.ec2.Route("private-default", {
    routeTableId: privateRoutes.id,
    destinationCidrBlock: "0.0.0.0/0",
    natGatewayId: nat.id,
  });
  privateSubnets.forEach((subnet, i) => new aws.ec2.RouteTableAssociation(`private-${i}`, {
    subnetId: subnet.id,
    routeTableId: privateRoutes.id,
  }));

  return {
    vpcId: vpc.id,
    publicSubnetIds: publicSubnets.map((s) => s.id),
    privateSubnetIds: privateSubnets.map((s) => s.id),
  };
}
