// PostgreSQL on RDS and RabbitMQ on Amazon MQ, both in the private subnets, neither public.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { BrokerSettings, DatabaseSettings } from "./config";

export interface Database {
  instance: aws.rds.Instance;
  address: pulumi.Output<string>;
  masterUsername: string;
  /** The RDS-managed secret holding the master password (JSON: username, password). */
  masterSecretArn: pulumi.Output<string>;
}

export interface Broker {
  broker: aws.mq.Broker;
  name: pulumi.Output<string>;
  /** `amqps://b-....mq.<region>.amazonaws.com:5671` */
  endpoint: pulumi.Output<string>;
  consoleUrl: pulumi.Output<string>;
}

export const MASTER_USERNAME = "postgres";

/** temp_file_limit, in kB: 1 GiB of temporary files per session. */
export const TEMP_FILE_LIMIT_KB = 1048576;

export function createDatabase(
  prefix: string,
  settings: DatabaseSettings,
  subnetIds: pulumi.Input<string>[],
  securityGroupId: pulumi.Input<string>,
): Database {
  const subnets = new aws.rds.SubnetGroup("database", {
    subnetIds,
    description: `${prefix} PostgreSQL, private subnets`,
  });
  // rds.force_ssl: the server refuses any connection without TLS, whatever a client asks for.
  // temp_file_limit: a session's temporary files (sorts and hashes spilled to disk) may not
  // exceed this, so one query cannot fill the storage; only a superuser may change it, which the
  // components' roles are not. The description is fixed: changing it replaces the group.
  const parameters = new aws.rds.ParameterGroup("postgres17", {
    family: "postgres17",
    description: `${prefix} PostgreSQL 17, TLS required`,
    parameters: [
      { name: "rds.force_ssl", value: "1", applyMethod: "immediate" },
      { name: "temp_file_limit", value: String(TEMP_FILE_LIMIT_KB), applyMethod: "immediate" },
    ],
  });
  const instance = new aws.rds.Instance("database", {
    engine: "postgres",
    engineVersion: "17",
    // Minor versions only; RDS picks the newest 17.x at creation.
    autoMinorVersionUpgrade: true,
    // Past standard support RDS would bill extended support instead of upgrading.
    engineLifecycleSupport: "open-source-rds-extended-support-disabled",
    instanceClass: settings.instanceClass,
    storageType: "gp3",
    allocatedStorage: settings.allocatedStorage,
    maxAllocatedStorage: settings.maxAllocatedStorage,
    storageEncrypted: true,
    multiAz: settings.multiAz,
    dbSubnetGroupName: subnets.name,
    vpcSecurityGroupIds: [securityGroupId],
    parameterGroupName: parameters.name,
    publiclyAccessible: false,
    username: MASTER_USERNAME,
    // The master password is made, kept and rotatable by RDS in Secrets Manager: it is never in
    // this program, its state or a task definition (db-setup reads it by the secret's ARN).
    manageMasterUserPassword: true,
    backupRetentionPeriod: settings.backupRetentionDays,
    copyTagsToSnapshot: true,
    deletionProtection: settings.deletionProtection,
    skipFinalSnapshot: settings.skipFinalSnapshot,
    finalSnapshotIdentifier: settings.skipFinalSnapshot ? undefined : `${prefix}-final`,
  });
  return {
    instance,
    address: instance.address,
    masterUsername: MASTER_USERNAME,
    masterSecretArn: instance.masterUserSecrets.apply((secrets) => {
      const arn = secrets?.[0]?.secretArn;
      if (!arn) throw new Error("RDS reported no managed master user secret");
      return arn;
    }),
  };
}

export const BROKER_USERNAME = "platform";

export function createBroker(
  settings: BrokerSettings,
  subnetIds: pulumi.Input<string>[],
  securityGroupId: pulumi.Input<string>,
  password: pulumi.Input<string>,
): Broker {
  const broker = new aws.mq.Broker("events", {
    engineType: "RabbitMQ",
    engineVersion: settings.engineVersion,
    // Amazon MQ requires it from RabbitMQ 3.13 on: only minor versions move.
    autoMinorVersionUpgrade: true,
    hostInstanceType: settings.instanceType,
    deploymentMode: settings.deploymentMode,
    // A single-instance broker lives in one subnet; a cluster spreads over all of them.
    subnetIds: settings.deploymentMode === "SINGLE_INSTANCE" ? [subnetIds[0]] : subnetIds,
    securityGroups: [securityGroupId],
    publiclyAccessible: false,
    // RabbitMQ brokers take one user at creation: the admin, for the console and broker-setup,
    // which creates the components' own users through the management API. No host uses it.
    users: [{ username: BROKER_USERNAME, password: pulumi.secret(password) }],
  });
  const first = broker.instances.apply((instances) => {
    if (!instances?.[0]) throw new Error("Amazon MQ reported no broker instance");
    return instances[0];
  });
  return {
    broker,
    name: broker.brokerName,
    endpoint: first.apply((i) => {
      const amqps = i.endpoints.find((e) => e.startsWith("amqps://"));
      if (!amqps) throw new Error(`the broker has no amqps endpoint (${i.endpoints.join(", ")})`);
      return amqps;
    }),
    consoleUrl: first.apply((i) => i.consoleUrl),
  };
}
