//! Backend messages as frames (tag and body), read whole or paced, and the errors of the
//! replication connection.

use std::fmt;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest backend message accepted; a corrupt length must not make us allocate gigabytes.
pub(super) const MAX_MESSAGE: usize = 1 << 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (SQLSTATE {})", self.severity, self.message, self.code)?;
        if let Some(d) = &self.detail {
            write!(f, " DETAIL: {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ServerError {}

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("replication connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("replication connection: server error: {0}")]
    Server(ServerError),
    #[error("replication connection: protocol violation: {0}")]
    Protocol(String),
    #[error("replication connection: {0}")]
    Auth(String),
    #[error("replication connection: {0}")]
    Tls(String),
    #[error("replication connection: server closed the connection")]
    Closed,
}

pub(super) type Result<T, E = ReplicationError> = std::result::Result<T, E>;

/// One backend message: its tag and body (without the length word).
pub(super) struct Frame {
    pub(super) tag: u8,
    pub(super) body: Bytes,
}

pub(super) struct FrameReader<R> {
    pub(super) io: R,
    pub(super) buf: BytesMut,
}

/// Room for one read when pacing: several milliseconds of a fast walsender's output.
const PACED_READ: usize = 256 << 10;

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(super) async fn next(&mut self) -> Result<Frame> {
        self.next_paced(None).await
    }

    /// The next frame; with `pace`, a read from the socket is preceded by a sleep of that
    /// long that blocks the thread (see [`ReplicationStream::next`]).
    pub(super) async fn next_paced(&mut self, pace: Option<Duration>) -> Result<Frame> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                if len < 4 || len as usize > MAX_MESSAGE {
                    return Err(ReplicationError::Protocol(format!(
                        "invalid message length {len}"
                    )));
                }
                let total = 1 + len as usize;
                if self.buf.len() >= total {
                    let mut frame = self.buf.split_to(total).freeze();
                    let tag = frame[0];
                    frame.advance(5);
                    return Ok(Frame { tag, body: frame });
                }
                self.buf.reserve(total - self.buf.len());
            }
            if let Some(pace) = pace {
                std::thread::sleep(pace);
                self.buf.reserve(PACED_READ);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(ReplicationError::Closed);
            }
        }
    }
}

pub(super) fn cstrings(mut body: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let nul = body.iter().position(|&b| b == 0)?;
        if nul == 0 {
            return None;
        }
        let s = &body[..nul];
        body = &body[nul + 1..];
        Some(s)
    })
}

pub(super) fn parse_error(body: &[u8]) -> ServerError {
    let mut e = ServerError {
        severity: "ERROR".into(),
        code: "XX000".into(),
        message: String::new(),
        detail: None,
    };
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let nul = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        let value = String::from_utf8_lossy(&tail[..nul]).into_owned();
        match kind {
            b'V' => e.severity = value,
            b'C' => e.code = value,
            b'M' => e.message = value,
            b'D' => e.detail = Some(value),
            _ => {}
        }
        rest = tail.get(nul + 1..).unwrap_or(&[]);
    }
    e
}

pub(super) fn parse_data_row(body: &[u8]) -> Result<Vec<Option<String>>> {
    let bad = || ReplicationError::Protocol("malformed DataRow".into());
    let mut b = body;
    if b.len() < 2 {
        return Err(bad());
    }
    let n = b.get_i16();
    let mut row = Vec::new();
    for _ in 0..n {
        if b.len() < 4 {
            return Err(bad());
        }
        let len = b.get_i32();
        if len < 0 {
            row.push(None);
            continue;
        }
        let len = len as usize;
        if b.len() < len {
            return Err(bad());
        }
        row.push(Some(String::from_utf8_lossy(&b[..len]).into_owned()));
        b.advance(len);
    }
    Ok(row)
}
