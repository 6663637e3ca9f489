//! What the `host` command does besides serving: ask a running host whether it is alive or
//! ready ([`probe`]), check a manifest and its components offline ([`check`]), and operate a
//! running host through its admin API ([`admin`]).

pub mod admin;
pub mod check;
pub mod client;
pub mod probe;
