//! A minimal HTTP/1.1 responder for `/metrics` and `/healthz`: one request per connection,
//! GET and HEAD only, `Connection: close`. Enough for Prometheus and a liveness probe, and no
//! HTTP stack to depend on.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Longest request head accepted; the two endpoints need no more.
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

/// Parses the request line of a complete request head.
pub fn parse_head(head: &[u8]) -> Option<Request> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || !version.starts_with("HTTP/1.")
        || method.is_empty()
        || !target.starts_with('/')
    {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target);
    Some(Request { method: method.to_owned(), path: path.to_owned() })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// The bytes of a response; for HEAD the headers only (Content-Length still that of the body).
pub fn encode(response: &Response, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    if response.status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(response.body.as_bytes());
    }
    bytes
}

async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(buf));
        }
        if buf.len() >= MAX_HEAD {
            return Ok(None);
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Answers connections on `listener` with `handler` until `shutdown`.
pub async fn serve<H, F>(listener: TcpListener, shutdown: CancellationToken, handler: H)
where
    H: Fn(Request) -> F + Clone + Send + 'static,
    F: Future<Output = Response> + Send,
{
    loop {
        let (mut stream, peer) = tokio::select! {
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
            let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
                Ok(Ok(Some(head))) => head,
                _ => return,
            };
            let (response, head_only) = match parse_head(&head) {
                None => (Response::text(400, "bad request\n"), false),
                Some(r) if r.method != "GET" && r.method != "HEAD" => {
                    (Response::text(405, "only GET and HEAD\n"), false)
                }
                Some(r) => {
                    let head_only = r.method == "HEAD";
                    (handler(r).await, head_only)
                }
            };
            if let Err(e) = stream.write_all(&encode(&response, head_only)).await {
                debug!(error = %e, %peer, "writing an HTTP response failed");
            }
            let _ = stream.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_lines() {
        let r = parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/metrics"));
        assert_eq!(parse_head(b"HEAD /healthz?verbose=1 HTTP/1.0\n\n").unwrap().path, "/healthz");
        for bad in [
            &b""[..],
            b"GET\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET / SPDY/3\r\n\r\n",
            b"GET / HTTP/1.1 x\r\n\r\n",
        ] {
            assert_eq!(parse_head(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn encodes_responses() {
        let ok = String::from_utf8(encode(&Response::text(200, "up\n"), false)).unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("\r\nContent-Length: 3\r\n") && ok.ends_with("\r\n\r\nup\n"), "{ok}");
        let head = String::from_utf8(encode(&Response::text(503, "stopping\n"), true)).unwrap();
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        assert!(head.contains("Content-Length: 9"), "HEAD reports the length of the body it omits");
        let not_allowed = String::from_utf8(encode(&Response::text(405, ""), false)).unwrap();
        assert!(not_allowed.contains("Allow: GET, HEAD\r\n"));
    }

    #[tokio::test]
    async fn serves_over_tcp() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, stop.clone(), |r: Request| async move {
            Response::text(200, format!("you asked for {}\n", r.path))
        }));
        let ask = |request: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(request.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let got = ask("GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert!(
            got.starts_with("HTTP/1.1 200 OK") && got.ends_with("you asked for /metrics\n"),
            "{got}"
        );
        assert!(ask("POST /metrics HTTP/1.1\r\n\r\n").await.starts_with("HTTP/1.1 405"));
        assert!(ask("nonsense\r\n\r\n").await.starts_with("HTTP/1.1 400"));
        stop.cancel();
    }
}
