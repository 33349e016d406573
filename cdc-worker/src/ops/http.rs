//! The HTTP/1.1 listener for `/metrics` and `/healthz` (hyper): GET and HEAD only, one request
//! per connection (`Connection: close`), the request head read within a timeout.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Longest request head accepted (hyper's smallest buffer); the two endpoints need no more.
const MAX_HEAD: usize = 8192;
/// A client that has not sent its request head by then is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Path without the query string.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response { status, content_type: "text/plain; charset=utf-8", body: body.into() }
    }
}

/// The hyper response: for HEAD hyper sends the headers only, Content-Length still that of
/// the body.
fn encode(response: Response) -> hyper::Response<Full<Bytes>> {
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut out = hyper::Response::new(Full::new(Bytes::from(response.body)));
    *out.status_mut() = status;
    let headers = out.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(response.content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    out
}

/// Answers connections on `listener` with `handler` until `shutdown`.
pub async fn serve<H, F>(listener: TcpListener, shutdown: CancellationToken, handler: H)
where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<Incoming>| {
                let handler = handler.clone();
                async move {
                    let method = request.method();
                    let response = if method == Method::GET || method == Method::HEAD {
                        let path = request.uri().path().to_owned();
                        handler(Request { method: method.to_string(), path }).await
                    } else {
                        Response::text(405, "only GET and HEAD\n")
                    };
                    Ok::<_, Infallible>(encode(response))
                }
            });
            let connection = http1::Builder::new()
                .keep_alive(false)
                .timer(TokioTimer::new())
                .header_read_timeout(READ_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                debug!(error = %e, %peer, "serving an HTTP connection failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    #[tokio::test]
    async fn serves_over_tcp() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, stop.clone(), |r: Request| async move {
            match r.path.as_str() {
                "/down" => Response::text(503, "stopping\n"),
                path => Response::text(200, format!("you asked for {path}\n")),
            }
        }));
        let ask = |request: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(request.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out.to_ascii_lowercase()
        };
        let got = ask("GET /metrics?x=1 HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert!(
            got.starts_with("http/1.1 200 ok")
                && got.contains("\r\ncontent-length: 23\r\n")
                && got.ends_with("\r\n\r\nyou asked for /metrics\n"),
            "{got}"
        );
        let head = ask("HEAD /down HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert!(
            head.starts_with("http/1.1 503 service unavailable") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        assert!(head.contains("content-length: 9"), "HEAD reports the length of the body it omits");
        let not_allowed = ask("POST /metrics HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert!(
            not_allowed.starts_with("http/1.1 405") && not_allowed.contains("allow: get, head\r\n"),
            "{not_allowed}"
        );
        assert!(ask("nonsense\r\n\r\n").await.starts_with("http/1.1 400"));
        stop.cancel();
    }
}
