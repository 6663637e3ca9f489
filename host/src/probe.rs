//! `host probe`: one plain-HTTP GET to a host on this machine, for container health checks
//! (the runtime image has no shell and no curl).

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The status `GET url` answers with; `url` is `http://host:port/path`.
pub async fn status_of(url: &str) -> anyhow::Result<u16> {
    let uri: Uri = url.parse().with_context(|| format!("{url:?} is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        bail!("{url:?}: only http:// URLs can be probed");
    }
    let authority = uri.authority().context("the URL names no host")?.clone();
    let port = authority.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((authority.host(), port)).await.context("cannot connect")?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let path = uri.path_and_query().map_or("/", |path| path.as_str()).to_owned();
    let request = Request::get(path).header(header::HOST, authority.as_str()).body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    Ok(response.status().as_u16())
}
