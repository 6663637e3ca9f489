-- Compose's PostgreSQL, first start only (an empty data volume): one login role per service,
-- owning a database of the same name and nothing else. The host refuses a superuser, and
-- migrations run as the role, so the tables are its own. The passwords are local defaults,
-- repeated in compose.yaml's <NAME>_DATABASE_URL; `docker compose down -v` starts afresh.

CREATE ROLE orders LOGIN PASSWORD 'orders-dev'
  NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
CREATE DATABASE orders OWNER orders;
-- Only its owner connects: the other service's role cannot reach it at all.
REVOKE ALL ON DATABASE orders FROM PUBLIC;

CREATE ROLE invoices LOGIN PASSWORD 'invoices-dev'
  NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
CREATE DATABASE invoices OWNER invoices;
REVOKE ALL ON DATABASE invoices FROM PUBLIC;
