//! `host probe`: one GET to a host on this machine, for container health checks (the runtime
//! image has no shell and no curl).
//!
//! - `host probe` asks readiness, `GET /health`: every component's database answers. For what
//!   routes traffic to the host (a gateway's or load balancer's health check).
//! - `host probe --live` asks liveness, `GET /health/live`: the process serves, whatever its
//!   dependencies do. For what restarts the container: a database outage must not restart every
//!   host, and a host that restarts cannot start while its database is down.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};

use super::client;

/// What is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// `GET /health`.
    Ready,
    /// `GET /health/live`.
    Live,
}

impl Check {
    fn path(self) -> &'static str {
        match self {
            Check::Ready => "/health",
            Check::Live => "/health/live",
        }
    }
}

/// Where the host listening on `listen` answers `check`: on loopback when it listens on every
/// address, at its address otherwise.
pub fn url(listen: SocketAddr, check: Check) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!(
        "http://{}{}",
        SocketAddr::new(ip, listen.port()),
        check.path()
    )
}

/// `Ok` when `GET url` answers 200 within `timeout`; otherwise why not, in one line.
pub async fn probe(url: &str, timeout: Duration) -> Result<(), String> {
    let asked = client::send(Method::GET, url, &[], Bytes::new());
    match tokio::time::timeout(timeout, asked).await {
        Ok(Ok(answer)) if answer.status == StatusCode::OK => Ok(()),
        Ok(Ok(answer)) => Err(format!("{url} answered {}", answer.status.as_u16())),
        Ok(Err(err)) => Err(format!("{url}: {err:#}")),
        Err(_) => Err(format!("{url} did not answer within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_on_every_address_is_asked_on_loopback_and_one_on_an_address_there() {
        let url = |listen: &str, check| url(listen.parse().expect("address"), check);
        assert_eq!(
            url("0.0.0.0:8000", Check::Ready),
            "http://127.0.0.1:8000/health"
        );
        assert_eq!(
            url("[::]:8000", Check::Live),
            "http://[::1]:8000/health/live"
        );
        assert_eq!(
            url("10.0.0.7:8080", Check::Ready),
            "http://10.0.0.7:8080/health"
        );
    }

    #[tokio::test]
    async fn nothing_listening_is_not_ready_and_says_where_it_asked() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bound");
        let port = listener.local_addr().expect("address").port();
        drop(listener);
        let url = format!("http://127.0.0.1:{port}/health");
        let why = probe(&url, Duration::from_secs(2))
            .await
            .expect_err("not ready");
        assert!(why.starts_with(&url), "{why}");
    }
}
