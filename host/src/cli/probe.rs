//! `host probe`: one plain-HTTP GET to a host on this machine, for container health checks
//! (the runtime image has no shell and no curl).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where the host listening on `listen` answers its readiness: on loopback when it listens on
/// every address, at its address otherwise.
pub fn health_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/health", SocketAddr::new(ip, listen.port()))
}

/// The status `GET url` answers with; `url` is `http://host:port/path`.
pub async fn status_of(url: &str) -> anyhow::Result<u16> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("{url:?} is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        bail!("{url:?}: only http:// URLs can be probed");
    }
    let authority = uri.authority().context("the URL names no host")?.clone();
    let port = authority.port_u16().unwrap_or(80);
    // `[::1]` in a URL is `::1` to connect to.
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let stream = TcpStream::connect((host, port))
        .await
        .context("cannot connect")?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let path = uri
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .to_owned();
    let request = Request::get(path)
        .header(header::HOST, authority.as_str())
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    Ok(response.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_on_every_address_is_asked_on_loopback_and_one_on_an_address_there() {
        let url = |listen: &str| health_url(listen.parse().expect("address"));
        assert_eq!(url("0.0.0.0:8000"), "http://127.0.0.1:8000/health");
        assert_eq!(url("[::]:8000"), "http://[::1]:8000/health");
        assert_eq!(url("10.0.0.7:8080"), "http://10.0.0.7:8080/health");
    }

    #[tokio::test]
    async fn an_ipv6_url_connects_without_its_brackets() {
        let Ok(listener) = tokio::net::TcpListener::bind("[::1]:0").await else {
            return;
        };
        let port = listener.local_addr().expect("address").port();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accepted");
            let mut request = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut request).await;
            let answer = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n";
            let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, answer).await;
        });
        assert_eq!(
            status_of(&format!("http://[::1]:{port}/health"))
                .await
                .expect("answered"),
            204
        );
    }
}
