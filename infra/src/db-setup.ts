// The one-off task that gives each component its login role and database on RDS. Pulumi cannot
// reach a private database, so this runs inside the VPC, as psql in the PostgreSQL image, started
// with the `aws ecs run-task` command the stack outputs. Running it again is harmless: it creates
// what is missing and sets the passwords (to the ones in Secrets Manager) and the role defaults.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { Database } from "./data";
import { Platform, awslogs, executionRole, logGroup, runTaskCommand, taskDefinition } from "./ecs";
import { PORTS } from "./security";
import { COMPONENTS, Component, Secrets, secretRef } from "./secrets";

export const DB_SETUP_IMAGE = "postgres:17-bookworm";

/** Each component role's session defaults (`ALTER ROLE ... SET`). */
export const ROLE_DEFAULTS: readonly (readonly [string, string])[] = [
  ["statement_timeout", "30s"],
  ["idle_in_transaction_session_timeout", "30s"],
];

function passwordEnv(component: Component): string {
  return `${component.toUpperCase()}_PASSWORD`;
}

/**
 * The SQL, for psql. Passwords come from the environment through `\getenv` into psql variables
 * and reach the server as quoted literals (`:'var'`): no shell ever sees them and they are not on
 * any command line. `\gexec` runs the CREATE statements only when the object is missing.
 */
export function setupSql(components: readonly Component[] = COMPONENTS): string {
  const lines = ["\\set ON_ERROR_STOP on"];
  for (const name of components) {
    lines.push(
      "",
      `-- ${name}: a login role with no privilege beyond its own database (the host refuses more).`,
      `\\getenv ${name}_password ${passwordEnv(name)}`,
      `SELECT 'CREATE ROLE ${name} LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${name}')`,
      "\\gexec",
      `ALTER ROLE ${name} WITH LOGIN NOCREATEDB NOCREATEROLE PASSWORD :'${name}_password';`,
      // PostgreSQL 16 on: a database can be given only to a role one may SET ROLE to.
      `GRANT ${name} TO CURRENT_USER;`,
      `SELECT 'CREATE DATABASE ${name} OWNER ${name}' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '${name}')`,
      "\\gexec",
      `ALTER DATABASE ${name} OWNER TO ${name};`,
      "-- Only its owner connects: the other service's role cannot reach it at all.",
      `REVOKE ALL ON DATABASE ${name} FROM PUBLIC;`,
      "-- Session defaults, behind the host's own per-transaction timeouts. The role could change",
      "-- them for itself; temp_file_limit, in the parameter group, it cannot.",
      ...ROLE_DEFAULTS.map(([parameter, value]) => `ALTER ROLE ${name} SET ${parameter} = '${value}';`),
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
  database: Database;
  secrets: Secrets;
  subnets: pulumi.Input<string>[];
  securityGroup: aws.ec2.SecurityGroup;
}): DbSetup {
  const { platform, database, secrets } = args;
  const role = executionRole("db-setup", [database.masterSecretArn, ...COMPONENTS.map((c) => secrets.database[c].arn)]);
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
        { name: "SETUP_SQL", value: setupSql() },
      ],
      secrets: [
        secretRef("PGPASSWORD", database.masterSecretArn, "password"),
        ...COMPONENTS.map((c) => secretRef(passwordEnv(c), secrets.database[c].arn, "password")),
      ],
      logConfiguration: awslogs(platform, logs),
    }],
  });
  const command = runTaskCommand(platform, task, args.securityGroup, args.subnets);
  return { taskDefinition: task, executionRole: role, command };
}
