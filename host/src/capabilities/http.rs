//! `wasi:http` hooks: a component serves HTTP but may not send it. Outgoing requests are denied,
//! so a component reaches nothing but what the host gives it.

use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// Refuses every outgoing request with `HTTP-request-denied`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DenyOutgoing;

type Sending = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for DenyOutgoing {
    fn send_request(
        &mut self,
        _request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Sending {
        Box::new(async { Err(Error::HttpRequestDenied) })
    }
}
