//! The sockets a replication connection runs over: TCP, a unix socket, or TLS over TCP, and
//! how one moves from the runtime it was opened on to the stream reader's (see `Streaming`).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;

use super::frames::{ReplicationError, Result};

pub trait Socket: AsyncRead + AsyncWrite + Unpin + Send {
    /// The socket taken off the runtime it was registered with (see [`Streaming`]).
    fn into_std(self: Box<Self>) -> std::io::Result<StdSocket>;
}

impl Socket for TcpStream {
    fn into_std(self: Box<Self>) -> std::io::Result<StdSocket> {
        Ok(StdSocket::Tcp((*self).into_std()?))
    }
}

impl Socket for UnixStream {
    fn into_std(self: Box<Self>) -> std::io::Result<StdSocket> {
        Ok(StdSocket::Unix((*self).into_std()?))
    }
}

impl Socket for TlsStream<Movable> {
    fn into_std(mut self: Box<Self>) -> std::io::Result<StdSocket> {
        self.get_mut().0.detach()?;
        Ok(StdSocket::Tls(self))
    }
}

/// A connected socket registered with no runtime. A TLS session keeps its state (and any
/// bytes it has decrypted but not handed out) and only its TCP socket changes runtime.
pub enum StdSocket {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
    Tls(Box<TlsStream<Movable>>),
}

impl fmt::Debug for StdSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StdSocket::Tcp(s) => f.debug_tuple("Tcp").field(s).finish(),
            StdSocket::Unix(s) => f.debug_tuple("Unix").field(s).finish(),
            StdSocket::Tls(_) => f.write_str("Tls"),
        }
    }
}

impl StdSocket {
    /// Registers the socket with the runtime of the calling task.
    pub(super) fn register(self) -> std::io::Result<Box<dyn Socket>> {
        Ok(match self {
            StdSocket::Tcp(s) => Box::new(TcpStream::from_std(s)?),
            StdSocket::Unix(s) => Box::new(UnixStream::from_std(s)?),
            StdSocket::Tls(mut s) => {
                s.get_mut().0.attach()?;
                s
            }
        })
    }
}

/// The TCP socket under a TLS session, which can leave the runtime it is registered with and
/// join another (tokio-rustls cannot rebuild a session around a new socket).
#[derive(Debug)]
pub enum Movable {
    Attached(TcpStream),
    Detached(std::net::TcpStream),
    /// Only while changing between the two.
    Moving,
}

impl Movable {
    pub(super) fn detach(&mut self) -> std::io::Result<()> {
        if let Movable::Attached(s) = std::mem::replace(self, Movable::Moving) {
            *self = Movable::Detached(s.into_std()?);
        }
        Ok(())
    }

    pub(super) fn attach(&mut self) -> std::io::Result<()> {
        if let Movable::Detached(s) = std::mem::replace(self, Movable::Moving) {
            *self = Movable::Attached(TcpStream::from_std(s)?);
        }
        Ok(())
    }

    fn attached(&mut self) -> std::io::Result<Pin<&mut TcpStream>> {
        match self {
            Movable::Attached(s) => Ok(Pin::new(s)),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "socket not registered with a runtime",
            )),
        }
    }
}

impl AsyncRead for Movable {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut().attached() {
            Ok(s) => s.poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Movable {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut().attached() {
            Ok(s) => s.poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut().attached() {
            Ok(s) => s.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut().attached() {
            Ok(s) => s.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// SSLRequest on a fresh TCP connection, then the TLS handshake when the server agrees; plain
/// when it does not and TLS is only preferred.
pub(super) async fn negotiate_tls(
    mut socket: TcpStream,
    host: &str,
    config: Arc<rustls::ClientConfig>,
    settings: &crate::pg::tls::TlsSettings,
) -> Result<Box<dyn Socket>> {
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    socket.write_all(&request).await?;
    let mut answer = [0u8; 1];
    socket.read_exact(&mut answer).await?;
    match answer[0] {
        b'S' => {
            let name = crate::pg::tls::server_name(host).map_err(ReplicationError::Tls)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, Movable::Attached(socket))
                .await
                .map_err(|e| {
                    ReplicationError::Tls(format!(
                        "TLS handshake with {host} (sslmode={}): {e}",
                        settings.mode.as_str()
                    ))
                })?;
            Ok(Box::new(tls))
        }
        b'N' if !settings.required() => Ok(Box::new(socket)),
        b'N' => Err(ReplicationError::Tls(format!(
            "the server at {host} does not support TLS (sslmode={})",
            settings.mode.as_str()
        ))),
        other => Err(ReplicationError::Protocol(format!(
            "unexpected answer {:?} to SSLRequest",
            other as char
        ))),
    }
}
