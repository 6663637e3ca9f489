//! One plain-HTTP/1.1 request to a host, for the subcommands that talk to a running host
//! (`host probe`, `host admin`). The runtime image has no curl, and the admin listener speaks
//! plain HTTP on loopback or a private network, so a client of a few lines on hyper (which the
//! host serves with) is all they need.

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Largest answer read: a page of dead letters at the admin API's largest limit fits.
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// What a host answered.
#[derive(Debug)]
pub struct Answer {
    /// The response's status code.
    pub status: StatusCode,
    /// The response's headers, as the host sent them.
    pub headers: HeaderMap,
    /// The whole body, read into memory (at most 64 MiB).
    pub body: Bytes,
}

impl Answer {
    /// Whether the body is JSON (`application/json` or `application/problem+json`).
    pub fn is_json(&self) -> bool {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                let essence = value.split(';').next().unwrap_or("").trim();
                essence == "application/json" || essence.ends_with("+json")
            })
    }
}

/// Sends `method url` with `headers` and `body`; `url` is `http://host:port/path?query`.
pub async fn send(
    method: Method,
    url: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
) -> anyhow::Result<Answer> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("{url:?} is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        bail!("{url:?}: only http:// URLs are supported");
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
        .with_context(|| format!("cannot connect to {authority}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let path = uri
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .to_owned();
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, authority.as_str());
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = sender.send_request(request.body(Full::new(body))?).await?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|err| anyhow::anyhow!("reading the answer: {err}"))?
        .to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_ipv6_url_connects_without_its_brackets_and_the_body_is_read() {
        let Ok(listener) = tokio::net::TcpListener::bind("[::1]:0").await else {
            return;
        };
        let port = listener.local_addr().expect("address").port();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accepted");
            let mut request = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut request).await;
            let answer =
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
            let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, answer).await;
        });
        let answer = send(
            Method::GET,
            &format!("http://[::1]:{port}/health"),
            &[],
            Bytes::new(),
        )
        .await
        .expect("answered");
        assert_eq!(answer.status, StatusCode::OK);
        assert!(answer.is_json());
        assert_eq!(&answer.body[..], b"{}");
    }

    #[tokio::test]
    async fn only_plain_http_is_sent() {
        let error = send(Method::GET, "https://127.0.0.1:1/", &[], Bytes::new())
            .await
            .expect_err("refused");
        assert!(error.to_string().contains("only http://"), "{error}");
    }
}
