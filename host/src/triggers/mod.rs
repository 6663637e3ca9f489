//! Exports: where the host calls into a component. [`http`] serves `wasi:http/incoming-handler`.

pub mod http;
