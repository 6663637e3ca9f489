-- Compose's PostgreSQL, first start only (an empty data volume): one login role per service,
-- owning a database of the same name and nothing else. The host refuses a superuser, and
-- migrations run as the role, so the tables are its own. The passwords are local defaults,
-- repeated in compose.yaml's <NAME>_DATABASE_URL; `docker compose down -v` starts afresh.
--
-- Each role also gets settings of its own, in force in every session it opens: at most 1 GB of
-- temporary files per session (temp_file_limit, which only a superuser may change), and, as
-- defaults, no statement and no idle open transaction longer than 30 s (statement_timeout,
-- idle_in_transaction_session_timeout; migrations run as the role, so they too).

CREATE ROLE orders LOGIN PASSWORD 'orders-dev'
  NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
ALTER ROLE orders SET temp_file_limit = '1GB';
ALTER ROLE orders SET statement_timeout = '30s';
ALTER ROLE orders SET idle_in_transaction_session_timeout = '30s';
CREATE DATABASE orders OWNER orders;
-- Only its owner connects: the other service's role cannot reach it at all.
REVOKE ALL ON DATABASE orders FROM PUBLIC;

CREATE ROLE invoices LOGIN PASSWORD 'invoices-dev'
  NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
ALTER ROLE invoices SET temp_file_limit = '1GB';
ALTER ROLE invoices SET statement_timeout = '30s';
ALTER ROLE invoices SET idle_in_transaction_session_timeout = '30s';
CREATE DATABASE invoices OWNER invoices;
REVOKE ALL ON DATABASE invoices FROM PUBLIC;
