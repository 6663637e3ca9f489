// The one-off task that gives each component its login role and database on RDS. Pulumi cannot
// reach a private database, so this runs inside the VPC, as psql in the PostgreSQL image, started
// with the `aws ecs run-task` command the stack outputs. Running it again is harmless: it creates
// what is missing and sets the passwords (to the ones in Secrets Manager) and the role defaults.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { Database } from "./data";
import { Platform, awslogs, executionRole, logGroup, runTaskCommand, taskDefinition } from "./ecs";
import { PORTS } from "./security";
import { Component, envName } from "./components";
import { Secrets, secretRef } from "./secrets";

export const DB_SETUP_IMAGE = "postgres:17-bookworm";

/** Each component role's session defaults (`ALTER ROLE ... SET`). */
export const ROLE_DEFAULTS: readonly (readonly [string, string])[] = [
  ["statement_timeout", "30s"],
  ["idle_in_transaction_session_timeout", "30s"],
];

function passwordEnv(component: Component): string {
  return `${envName(component.name)}_PASSWORD`;
}

/**
 * The SQL, for psql. Passwords come from the environment through `\getenv` into psql variables
 * and reach the server as quoted literals (`:'var'`): no shell ever sees them and they are not on
 * any command line. `\gexec` runs the CREATE statements only when the object is missing.
 */
export function setupSql(components: readonly Component[]): string {
  const lines = ["\\set ON_ERROR_STOP on"];
  // Roles and databases are written unquoted: components.ts admits only lower-case letters,
  // digits and '_' in them.
  for (const component of components) {
    const { role, database } = component;
    lines.push(
      "",
      `-- ${component.name}: a login role with no privilege beyond its own database (the host refuses more).`,
      `\\getenv ${role}_password ${passwordEnv(component)}`,
      `SELECT 'CREATE ROLE ${role} LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${role}')`,
      "\\gexec",
      `ALTER ROLE ${role} WITH LOGIN NOCREATEDB NOCREATEROLE PASSWORD :'${role}_password';`,
      // PostgreSQL 16 on: a database can be given only to a role one may SET ROLE to.
      `GRANT ${role} TO CURRENT_USER;`,
      `SELECT 'CREATE DATABASE ${database} OWNER ${role}' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '${database}')`,
      "\\gexec",
      `ALTER DATABASE ${database} OWNER TO ${role};`,
      "-- Only its owner connects: the other services' roles cannot reach it at all.",
      `REVOKE ALL ON DATABASE ${database} FROM PUBLIC;`,
      "-- Session defaults, behind the host's own per-transaction timeouts. The role could change",
      "-- them for itself; temp_file_limit, in the parameter group, it cannot.",
      ...ROLE_DEFAULTS.map(([parameter, value]) => `ALTER ROLE ${role} SET ${parameter} = '${value}';`),
    );
  }
  return lines.join("\n") + "\n";
}

export interface DbSetup {
  taskDefinition: aws.ecs.TaskDefinition;
  executionRole: aws.iam.Role;
  /** `aws ecs run-task ...`, to run once after the database exists. */
  command: pulumi.Output<string>;
}

export function createDbSetup(args: {
  platform: Platform;
  components: readonly Component[];
  database: Database;
  secrets: Secrets;
  subnets: pulumi.Input<string>[];
  securityGroup: aws.ec2.SecurityGroup;
}): DbSetup {
  const { platform, database, secrets, components } = args;
  const role = executionRole("db-setup", [database.masterSecretArn, ...components.map((c) => secrets.database[c.name].arn)]);
  const logs = logGroup(platform, "db-setup");
  const task = taskDefinition(platform, {
    family: "db-setup",
    cpu: 256,
    memory: 512,
    // The official image is multi-arch; X86_64 keeps this independent of the hosts' setting.
    cpuArchitecture: "X86_64",
    executionRole: role,
    containers: [{
      name: "db-setup",
      image: DB_SETUP_IMAGE,
      essential: true,
      // The SQL is an environment value, passed to psql on its standard input unchanged.
      entryPoint: ["sh", "-c"],
      command: ['printf "%s" "$SETUP_SQL" | psql --no-psqlrc -f -'],
      environment: [
        { name: "PGHOST", value: database.address },
        { name: "PGPORT", value: String(PORTS.postgres) },
        { name: "PGUSER", value: database.masterUsername },
        { name: "PGDATABASE", value: "postgres" },
        // TLS, as rds.force_ssl demands; this image carries no RDS CA bundle to verify against.
        { name: "PGSSLMODE", value: "require" },
        { name: "PGCONNECT_TIMEOUT", value: "15" },
        { name: "SETUP_SQL", value: setupSql(components) },
      ],
      secrets: [
        secretRef("PGPASSWORD", database.masterSecretArn, "password"),
        ...components.map((c) => secretRef(passwordEnv(c), secrets.database[c.name].arn, "password")),
      ],
      logConfiguration: awslogs(platform, logs),
    }],
  });
  const command = runTaskCommand(platform, task, args.securityGroup, args.subnets);
  return { taskDefinition: task, executionRole: role, command };
}
