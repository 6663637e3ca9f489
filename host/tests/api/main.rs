//! Integration tests: the real host, the real Orders component, a real PostgreSQL database of
//! each test's own. Run the README's test command (it builds the components first).

mod broker;
mod cli;
mod collector;
mod containment;
mod control;
mod dashboards;
mod dead_letters;
mod files;
mod hardening;
mod helpers;
mod messaging;
mod openapi;
mod orders_api;
mod orders_consistency;
mod otlp;
mod outages;
mod platform;
mod probe;
mod process;
mod system;
mod tcp_proxy;
mod telemetry;
mod tls;
