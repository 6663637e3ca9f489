//! Exports: where the host calls into a component. [`http`] serves
//! `wasi:http/incoming-handler`; [`messaging`] delivers events to `message-handler`.

pub mod http;
pub mod messaging;
