//! The least-privilege check on a component's database role, made once per component at host
//! start, before its migrations run.
//!
//! A component's SQL runs as the role in its database URL. A superuser, or a member of
//! PostgreSQL's file and program roles, could read the server's files (`pg_read_file`), run
//! programs (`COPY ... TO PROGRAM`), reach other services' data or signal their sessions; a
//! member of any other role could act as it. Such a role is refused unless the manifest says
//! `allow_privileged_role = true` (development only; logged loudly).

use anyhow::bail;

use crate::config::ComponentConfig;

/// Predefined roles that reach beyond the component's own database: files, programs, other
/// databases' data, other sessions' queries, or signals to them.
const PRIVILEGED_ROLES: &[&str] = &[
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_execute_server_program",
    "pg_read_all_data",
    "pg_write_all_data",
    "pg_signal_backend",
    "pg_read_all_stats",
    "pg_monitor",
    "pg_create_subscription",
];

/// Refuses a role that could escape the component's database, with how to make one that cannot.
pub async fn check_least_privilege(
    client: &tokio_postgres::Client,
    component: &ComponentConfig,
) -> anyhow::Result<()> {
    let role = client
        .query_one(
            "SELECT current_user::text, rolsuper, rolcreaterole, rolcreatedb, rolreplication, \
             rolbypassrls FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?;
    let name: String = role.get(0);
    let mut too_much: Vec<String> = [
        (1, "SUPERUSER"),
        (2, "CREATEROLE"),
        (3, "CREATEDB"),
        (4, "REPLICATION"),
        (5, "BYPASSRLS"),
    ]
    .into_iter()
    .filter(|(column, _)| role.get::<_, bool>(*column))
    .map(|(_, attribute)| attribute.to_owned())
    .collect();
    let memberships = client
        .query(
            "SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1) \
             AND pg_has_role(current_user, oid, 'MEMBER') ORDER BY rolname",
            &[&PRIVILEGED_ROLES],
        )
        .await?;
    too_much.extend(
        memberships
            .iter()
            .map(|row| format!("member of {}", row.get::<_, String>(0))),
    );
    // Any other role it belongs to, it could act as (`SET LOCAL ROLE`).
    let granted = client
        .query(
            "SELECT r.rolname::text FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid \
             WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = current_user) \
             AND r.rolname <> ALL($1) ORDER BY 1",
            &[&PRIVILEGED_ROLES],
        )
        .await?;
    too_much.extend(
        granted
            .iter()
            .map(|row| format!("member of {}", row.get::<_, String>(0))),
    );
    if too_much.is_empty() {
        return Ok(());
    }
    let database = component.database.url.database_name();
    if component.database.allow_privileged_role {
        tracing::warn!(
            component = %component.name,
            role = %name,
            privileges = %too_much.join(", "),
            "PRIVILEGED DATABASE ROLE ALLOWED (allow_privileged_role = true): this component's SQL \
             can escape its database; never run like this outside development"
        );
        return Ok(());
    }
    let component_role = component.name.replace('-', "_");
    let env = component.name.to_ascii_uppercase().replace('-', "_");
    bail!(
        "component `{}` would run its SQL as role `{name}` ({}), which can read server files, \
         run programs or reach other databases. Give it a role of its own that owns only its \
         database: `CREATE ROLE {component_role} LOGIN PASSWORD '...'; ALTER DATABASE \
         {database} OWNER TO {component_role};` and put that role in its database_url (or \
         {env}_DATABASE_URL); for development only, set allow_privileged_role = true on the \
         component",
        component.name,
        too_much.join(", "),
    );
}
