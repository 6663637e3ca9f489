//! Swagger UI for every component at `<route>/docs`, pointing at the component's own
//! `<route>/openapi.json`. The assets are built into the host binary (no download, no network
//! at run time) and shared by all components; a component carries only its document.
//!
//! A component that does not answer `GET /openapi.json` with a JSON document has no docs page:
//! `<route>/docs` is a 404 for it. Only the page and its initializer ask the component; the
//! static assets (script, styles, icons) are served without running it. Links are relative
//! (`docs/` → `../openapi.json`), so the page works under whatever prefix a gateway serves it.
//! Swagger UI's online validator badge is off: it would send the document's URL to a third
//! party from every visitor's browser.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;

use crate::problem;

/// Where, under a component's route, the host serves its docs page.
pub const PATH: &str = "/docs";

/// The component path the page loads its document from.
pub const DOCUMENT: &str = "/openapi.json";

/// Starts Swagger UI on the component's document, relative to the page at `<route>/docs/`.
const INITIALIZER: &str = r##"window.onload = function () {
  window.ui = SwaggerUIBundle({
    "dom_id": "#swagger-ui",
    "url": "../openapi.json",
    "deepLinking": true,
    "tryItOutEnabled": true,
    "displayRequestDuration": true,
    "validatorUrl": "none",
    "layout": "StandaloneLayout",
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
  });
};
"##;

/// A file of the page: its name, media type and bytes.
type Asset = (&'static str, &'static str, &'static [u8]);

/// Swagger UI's own files, as `build.rs` took them out of its release.
macro_rules! asset {
    ($name:literal, $media:literal) => {
        (
            $name,
            $media,
            include_bytes!(concat!(env!("OUT_DIR"), "/swagger-ui/", $name)),
        )
    };
}

/// Every file the page loads.
const ASSETS: [Asset; 8] = [
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("index.css", "text/css"),
    asset!("swagger-ui.css", "text/css"),
    asset!("swagger-ui-bundle.js", "text/javascript"),
    asset!("swagger-ui-standalone-preset.js", "text/javascript"),
    asset!("favicon-32x32.png", "image/png"),
    asset!("favicon-16x16.png", "image/png"),
    (
        "swagger-initializer.js",
        "text/javascript",
        INITIALIZER.as_bytes(),
    ),
];

/// Whether `path` (under a component's route) is the docs page or one of its assets.
pub fn is_docs(path: &str) -> bool {
    path == PATH
        || path
            .strip_prefix(PATH)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The request that asks a component for its document, to learn whether it has one.
pub fn document_request(prefix: HeaderValue) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(Bytes::new()));
    *request.method_mut() = Method::GET;
    *request.uri_mut() = http::Uri::from_static(DOCUMENT);
    let headers = request.headers_mut();
    headers.insert(header::HOST, HeaderValue::from_static("localhost"));
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    headers.insert(super::FORWARDED_PREFIX, prefix);
    request
}

/// What the component's answer to [`document_request`] says of its document.
pub enum Document {
    /// It has one: the page can be served.
    Served,
    /// It has none: no page.
    Absent,
    /// It could not say (busy, failing): its answer is the page's answer.
    Unknown(Response<Full<Bytes>>),
}

impl Document {
    pub fn of(answer: Response<Full<Bytes>>) -> Self {
        let json = answer
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
        match answer.status() {
            StatusCode::OK if json => Self::Served,
            status if status.is_success() || status.is_client_error() => Self::Absent,
            _ => Self::Unknown(answer),
        }
    }
}

/// A 405 for any method but `GET` and `HEAD`, before anything else is done.
pub fn refuse(method: &Method) -> Option<Response<Full<Bytes>>> {
    if method == Method::GET || method == Method::HEAD {
        return None;
    }
    let mut refused = problem::response(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed here; allowed: GET, HEAD"),
    );
    refused
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    Some(refused)
}

/// Whether serving `path` depends on the component having a document: the page and its
/// initializer do; the assets they load are the same for every component.
pub fn needs_document(path: &str) -> bool {
    matches!(
        file_of(path),
        None | Some("" | "index.html" | "swagger-initializer.js")
    )
}

/// The file `path` names in the page's folder; `None` for the bare `<route>/docs`.
fn file_of(path: &str) -> Option<&str> {
    path.strip_prefix(PATH)
        .and_then(|rest| rest.strip_prefix('/'))
}

/// The page or asset at `path` (under the component's route).
pub fn serve(path: &str, component: &str) -> Response<Full<Bytes>> {
    let Some(file) = file_of(path) else {
        // `<route>/docs` → `<route>/docs/`, relative so that a gateway's prefix stays.
        let mut moved = Response::new(Full::new(Bytes::new()));
        *moved.status_mut() = StatusCode::PERMANENT_REDIRECT;
        moved
            .headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("docs/"));
        return moved;
    };
    let file = if file.is_empty() { "index.html" } else { file };
    let Some((_, media, bytes)) = ASSETS.iter().find(|(name, _, _)| *name == file) else {
        return problem::response(
            StatusCode::NOT_FOUND,
            format!("the {component} docs page has no {file}"),
        );
    };
    let mut response = Response::new(Full::new(Bytes::from_static(bytes)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    // The assets change only with the host binary.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The answer for a component without a document.
pub fn none(component: &str) -> Response<Full<Bytes>> {
    problem::response(
        StatusCode::NOT_FOUND,
        format!("the {component} component serves no {DOCUMENT}, so it has no docs page"),
    )
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[test]
    fn the_docs_paths_are_the_page_and_its_assets_only() {
        assert!(is_docs("/docs"));
        assert!(is_docs("/docs/"));
        assert!(is_docs("/docs/swagger-ui.css"));
        assert!(!is_docs("/docsx"));
        assert!(!is_docs("/orders/docs"));
    }

    #[test]
    fn only_the_page_and_its_initializer_need_the_components_document() {
        for path in [
            "/docs",
            "/docs/",
            "/docs/index.html",
            "/docs/swagger-initializer.js",
        ] {
            assert!(needs_document(path), "{path}");
        }
        for path in [
            "/docs/swagger-ui-bundle.js",
            "/docs/swagger-ui.css",
            "/docs/favicon-32x32.png",
        ] {
            assert!(!needs_document(path), "{path}");
        }
        assert!(refuse(&Method::HEAD).is_none());
        assert_eq!(
            refuse(&Method::POST).map(|r| r.status()),
            Some(StatusCode::METHOD_NOT_ALLOWED)
        );
    }

    #[tokio::test]
    async fn the_page_redirects_to_its_folder_and_points_at_the_components_document() {
        let moved = serve("/docs", "orders");
        assert_eq!(moved.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(moved.headers()[header::LOCATION], "docs/");
        let page = serve("/docs/", "orders");
        assert_eq!(page.status(), StatusCode::OK);
        assert!(
            page.headers()[header::CONTENT_TYPE]
                .to_str()
                .expect("text")
                .starts_with("text/html")
        );
        let initializer = serve("/docs/swagger-initializer.js", "orders");
        let body = initializer
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("\"url\": \"../openapi.json\""), "{body}");
        // No call from the visitor's browser to Swagger's online validator.
        assert!(body.contains("\"validatorUrl\": \"none\""), "{body}");
        assert_eq!(
            serve("/docs/nothing.js", "orders").status(),
            StatusCode::NOT_FOUND
        );
    }
}
