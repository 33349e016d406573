//! A PostgreSQL replication-protocol connection (`replication=database`) spoken directly over
//! `postgres-protocol` message builders and tokio sockets: startup, authentication (trust,
//! cleartext, md5, SCRAM-SHA-256), simple queries, and the CopyBoth stream of
//! `START_REPLICATION`. Over TCP, TLS as configured (see `tls.rs`): an SSLRequest, then rustls.
//!
//! Over 500 lines with its tests (about 100): the protocol conversation (startup, auth, the
//! commands, CopyBoth) reads in order; sockets and frames are in `socket.rs` and `frames.rs`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::escape::escape_identifier;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::config::Host;

use crate::model::Lsn;
use crate::pg::connect::Endpoint;

mod frames;
mod socket;

pub use frames::ReplicationError;
use frames::{cstrings, parse_data_row, parse_error, FrameReader, Result};
use socket::{negotiate_tls, Socket, StdSocket};

/// Quotes a string for the replication grammar, whose scanner knows only standard strings:
/// `postgres_protocol::escape::escape_literal` turns a backslash into an `E'...'` string, which
/// it rejects.
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Seconds from the Unix epoch to 2000-01-01, the replication protocol's epoch.
const PG_EPOCH: u64 = 946_684_800;

/// Microseconds since 2000-01-01, the replication protocol's clock.
fn pg_now() -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    now.as_micros() as i64 - (PG_EPOCH as i64 * 1_000_000)
}

/// A protocol timestamp (microseconds since 2000-01-01) as a point in time.
pub fn pg_time(micros: i64) -> SystemTime {
    let epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH);
    if micros >= 0 {
        epoch + Duration::from_micros(micros as u64)
    } else {
        epoch - Duration::from_micros(micros.unsigned_abs())
    }
}

pub struct ReplicationConnection {
    reader: FrameReader<Box<dyn Socket>>,
    out: BytesMut,
}

#[derive(Debug, Clone)]
pub struct SystemIdentity {
    pub system_id: String,
    pub timeline: String,
    pub xlogpos: Lsn,
    pub dbname: Option<String>,
}

impl ReplicationConnection {
    pub async fn connect(endpoint: &Endpoint) -> Result<Self> {
        let config = &endpoint.pg;
        let tls = endpoint.tls.client_config().map_err(ReplicationError::Tls)?;
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let hosts: Vec<Host> = if config.get_hosts().is_empty() {
            vec![Host::Unix("/var/run/postgresql".into())]
        } else {
            config.get_hosts().to_vec()
        };
        let timeout = config.get_connect_timeout().copied().unwrap_or(Duration::from_secs(10));
        let mut last_err = None;
        for (i, host) in hosts.iter().enumerate() {
            let port = config.get_ports().get(i).copied().unwrap_or(port);
            enum Plain {
                Tcp(TcpStream, String),
                Unix(UnixStream),
            }
            let socket: std::io::Result<Plain> = match tokio::time::timeout(timeout, async {
                Ok::<Plain, std::io::Error>(match host {
                    Host::Tcp(h) => {
                        let s = TcpStream::connect((h.as_str(), port)).await?;
                        s.set_nodelay(true)?;
                        Plain::Tcp(s, h.clone())
                    }
                    Host::Unix(dir) => Plain::Unix(
                        UnixStream::connect(dir.join(format!(".s.PGSQL.{port}"))).await?,
                    ),
                })
            })
            .await
            {
                Ok(r) => r,
                Err(_) => {
                    Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))
                }
            };
            let socket: std::io::Result<Box<dyn Socket>> = match (socket, &tls) {
                (Ok(Plain::Tcp(s, h)), Some(c)) => {
                    let negotiated = tokio::time::timeout(
                        timeout,
                        negotiate_tls(s, &h, c.clone(), &endpoint.tls),
                    )
                    .await;
                    match negotiated {
                        Ok(r) => Ok(r?),
                        Err(_) => Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "TLS negotiation timed out",
                        )),
                    }
                }
                (Ok(Plain::Tcp(s, _)), None) => Ok(Box::new(s)),
                // The server never offers TLS on a unix socket.
                (Ok(Plain::Unix(_)), _) if endpoint.tls.required() => {
                    return Err(ReplicationError::Tls(format!(
                        "sslmode={} needs a TCP connection: there is no TLS over a unix socket",
                        endpoint.tls.mode.as_str()
                    )))
                }
                (Ok(Plain::Unix(s)), _) => Ok(Box::new(s)),
                (Err(e), _) => Err(e),
            };
            match socket {
                Ok(socket) => {
                    let mut conn = ReplicationConnection {
                        reader: FrameReader { io: socket, buf: BytesMut::with_capacity(64 << 10) },
                        out: BytesMut::new(),
                    };
                    conn.startup(config).await?;
                    return Ok(conn);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.map(ReplicationError::Io).unwrap_or(ReplicationError::Closed))
    }

    async fn send(&mut self) -> Result<()> {
        let out = self.out.split();
        self.reader.io.write_all(&out).await?;
        self.reader.io.flush().await?;
        Ok(())
    }

    async fn startup(&mut self, config: &tokio_postgres::Config) -> Result<()> {
        let user = config
            .get_user()
            .map(str::to_owned)
            .or_else(|| std::env::var("USER").ok())
            .ok_or_else(|| {
                ReplicationError::Auth("no user name in the connection string".into())
            })?;
        let dbname = config.get_dbname().unwrap_or(&user).to_owned();
        let app = config.get_application_name().unwrap_or("eventstore-worker").to_owned();
        // The pinned search_path (see connect.rs) and whatever else the DSN's options say.
        let options = config.get_options().map(str::to_owned);
        let mut params = vec![
            ("user", user.as_str()),
            ("database", dbname.as_str()),
            ("replication", "database"),
            ("application_name", app.as_str()),
            ("client_encoding", "UTF8"),
            // The envelope's recorded_at is the server's text output of timestamptz.
            ("DateStyle", "ISO"),
            ("TimeZone", "UTC"),
        ];
        if let Some(o) = options.as_deref() {
            params.push(("options", o));
        }
        frontend::startup_message(params.iter().copied(), &mut self.out)?;
        self.send().await?;

        let password = || {
            config.get_password().map(<[u8]>::to_vec).ok_or_else(|| {
                ReplicationError::Auth("the server asked for a password and none was given".into())
            })
        };
        let mut scram: Option<ScramSha256> = None;
        loop {
            let frame = self.reader.next().await?;
            let mut body = frame.body.clone();
            match frame.tag {
                b'R' => {
                    if body.len() < 4 {
                        return Err(ReplicationError::Protocol(
                            "short authentication message".into(),
                        ));
                    }
                    match body.get_i32() {
                        0 => {}
                        3 => {
                            frontend::password_message(&password()?, &mut self.out)?;
                            self.send().await?;
                        }
                        5 => {
                            if body.len() < 4 {
                                return Err(ReplicationError::Protocol("short md5 salt".into()));
                            }
                            let salt = [body[0], body[1], body[2], body[3]];
                            let hash = postgres_protocol::authentication::md5_hash(
                                user.as_bytes(),
                                &password()?,
                                salt,
                            );
                            frontend::password_message(hash.as_bytes(), &mut self.out)?;
                            self.send().await?;
                        }
                        10 => {
                            if !cstrings(&body).any(|m| m == SCRAM_SHA_256.as_bytes()) {
                                return Err(ReplicationError::Auth(
                                    "server offers no supported SASL mechanism".into(),
                                ));
                            }
                            let s = ScramSha256::new(&password()?, ChannelBinding::unsupported());
                            frontend::sasl_initial_response(
                                SCRAM_SHA_256,
                                s.message(),
                                &mut self.out,
                            )?;
                            self.send().await?;
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram.as_mut().ok_or_else(|| {
                                ReplicationError::Protocol("unexpected SASLContinue".into())
                            })?;
                            s.update(&body)
                                .map_err(|e| ReplicationError::Auth(format!("SCRAM: {e}")))?;
                            frontend::sasl_response(s.message(), &mut self.out)?;
                            self.send().await?;
                        }
                        12 => {
                            let s = scram.as_mut().ok_or_else(|| {
                                ReplicationError::Protocol("unexpected SASLFinal".into())
                            })?;
                            s.finish(&body)
                                .map_err(|e| ReplicationError::Auth(format!("SCRAM: {e}")))?;
                        }
                        other => {
                            return Err(ReplicationError::Auth(format!(
                                "unsupported authentication method {other}"
                            )))
                        }
                    }
                }
                b'E' => return Err(ReplicationError::Server(parse_error(&frame.body))),
                b'Z' => return Ok(()),
                b'S' | b'K' | b'N' => {}
                other => {
                    return Err(ReplicationError::Protocol(format!(
                        "unexpected message {:?} during startup",
                        other as char
                    )))
                }
            }
        }
    }

    /// Runs one replication command, returning its rows as text.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        frontend::query(sql, &mut self.out)?;
        self.send().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let frame = self.reader.next().await?;
            match frame.tag {
                b'D' => rows.push(parse_data_row(&frame.body)?),
                b'E' => error = Some(parse_error(&frame.body)),
                b'Z' => {
                    return match error {
                        Some(e) => Err(ReplicationError::Server(e)),
                        None => Ok(rows),
                    }
                }
                b'T' | b'C' | b'I' | b'N' | b'S' => {}
                other => {
                    return Err(ReplicationError::Protocol(format!(
                        "unexpected message {:?} after a query",
                        other as char
                    )))
                }
            }
        }
    }

    pub async fn identify_system(&mut self) -> Result<SystemIdentity> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row = rows
            .first()
            .filter(|r| r.len() >= 4)
            .ok_or_else(|| ReplicationError::Protocol("IDENTIFY_SYSTEM returned no row".into()))?;
        let xlogpos = row[2]
            .as_deref()
            .unwrap_or("0/0")
            .parse()
            .map_err(|e| ReplicationError::Protocol(format!("IDENTIFY_SYSTEM: {e}")))?;
        Ok(SystemIdentity {
            system_id: row[0].clone().unwrap_or_default(),
            timeline: row[1].clone().unwrap_or_default(),
            xlogpos,
            dbname: row[3].clone(),
        })
    }

    /// Creates the worker's pgoutput slot and exports its snapshot: returns the consistent point
    /// C and the snapshot's name (see `create_exporting_slot`). With `failover` (PostgreSQL 17
    /// and later), standbys that synchronize slots keep a copy a promoted one can stream from.
    pub async fn create_slot(&mut self, slot: &str, failover: bool) -> Result<(Lsn, String)> {
        let sql = format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT 'export'{})",
            escape_identifier(slot),
            if failover { ", FAILOVER true" } else { "" }
        );
        let rows = self.simple_query(&sql).await?;
        consistent_point_and_snapshot(&rows)
    }

    /// Sets the slot's `failover` property (PostgreSQL 17 and later).
    pub async fn alter_slot_failover(&mut self, slot: &str, failover: bool) -> Result<()> {
        let sql =
            format!("ALTER_REPLICATION_SLOT {} (FAILOVER {failover})", escape_identifier(slot));
        self.simple_query(&sql).await.map(|_| ())
    }

    /// Creates a temporary pgoutput slot that exports its snapshot: returns the consistent
    /// point C and the snapshot's name. A transaction importing the snapshot sees exactly the
    /// transactions that committed before C. The snapshot stays importable while this
    /// connection is open and runs no other command; the slot goes away with the connection.
    pub async fn create_exporting_slot(&mut self, slot: &str) -> Result<(Lsn, String)> {
        let sql = format!(
            "CREATE_REPLICATION_SLOT {} TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')",
            escape_identifier(slot)
        );
        let rows = self.simple_query(&sql).await?;
        consistent_point_and_snapshot(&rows)
    }

    /// Starts streaming; `start` = 0/0 resumes at the slot's confirmed flush position.
    pub async fn start_replication(
        mut self,
        slot: &str,
        start: Lsn,
        publication: &str,
    ) -> Result<Streaming> {
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {} (proto_version '1', publication_names {})",
            escape_identifier(slot),
            start,
            quote_literal(&escape_identifier(publication)),
        );
        frontend::query(&sql, &mut self.out)?;
        self.send().await?;
        loop {
            let frame = self.reader.next().await?;
            match frame.tag {
                // CopyBothResponse: postgres-protocol's backend parser does not know this one;
                // its body (format + column formats) carries nothing we need.
                b'W' => break,
                b'E' => {
                    let e = parse_error(&frame.body);
                    // Drain up to ReadyForQuery is pointless: the connection is dropped.
                    return Err(ReplicationError::Server(e));
                }
                b'N' | b'S' => {}
                other => {
                    return Err(ReplicationError::Protocol(format!(
                        "unexpected message {:?} after START_REPLICATION",
                        other as char
                    )))
                }
            }
        }
        let FrameReader { io, buf } = self.reader;
        Ok(Streaming { socket: io.into_std()?, buf })
    }
}

/// A connection in streaming mode, not yet registered with the runtime that will read it: the
/// stream is best read on a thread of its own (see [`ReplicationStream::next`]), and tokio
/// sockets belong to the runtime they were registered with.
#[derive(Debug)]
pub struct Streaming {
    socket: StdSocket,
    buf: BytesMut,
}

impl Streaming {
    /// The stream and its sending half, registered with the calling task's runtime.
    pub fn split(self) -> Result<(ReplicationStream, Feedback)> {
        let (read, write) = tokio::io::split(self.socket.register()?);
        Ok((
            ReplicationStream { reader: FrameReader { io: read, buf: self.buf } },
            Feedback { io: write, out: BytesMut::new() },
        ))
    }
}

#[derive(Debug)]
pub enum StreamMessage {
    /// A pgoutput message; the WAL positions in its header are not needed (Commit carries them).
    XLogData { data: Bytes },
    /// `server_time`: the server's clock when it sent this.
    Keepalive { wal_end: Lsn, server_time: SystemTime, reply_requested: bool },
}

pub struct ReplicationStream {
    reader: FrameReader<ReadHalf<Box<dyn Socket>>>,
}

impl ReplicationStream {
    /// The next message. With `pace`, every read from the socket is preceded by a sleep of
    /// that long, so that one read takes in what the walsender sent meanwhile: it sends every
    /// message on its own, and a reader that keeps up wakes for each one (measured: a context
    /// switch for every 1.5 events, half the worker's CPU in the kernel). The sleep blocks the
    /// thread, not just the task, since a runtime waiting for a timer would still be woken by
    /// every message the socket receives: pace only on a runtime that serves nothing else,
    /// and only while the apply path has work queued, so no message is delayed that could be
    /// applied sooner.
    pub async fn next(&mut self, pace: Option<Duration>) -> Result<StreamMessage> {
        loop {
            let frame = self.reader.next_paced(pace).await?;
            match frame.tag {
                b'd' => {
                    let mut b = frame.body;
                    let Some(&kind) = b.first() else {
                        return Err(ReplicationError::Protocol("empty CopyData".into()));
                    };
                    b.advance(1);
                    return match kind {
                        b'w' if b.len() >= 24 => {
                            b.advance(24); // WAL start, WAL end, server clock
                            Ok(StreamMessage::XLogData { data: b })
                        }
                        b'k' if b.len() >= 17 => {
                            let wal_end = Lsn(b.get_u64());
                            let server_time = pg_time(b.get_i64());
                            Ok(StreamMessage::Keepalive {
                                wal_end,
                                server_time,
                                reply_requested: b.get_u8() == 1,
                            })
                        }
                        other => Err(ReplicationError::Protocol(format!(
                            "unexpected CopyData message {:?} of {} bytes",
                            other as char,
                            b.len()
                        ))),
                    };
                }
                b'E' => return Err(ReplicationError::Server(parse_error(&frame.body))),
                b'c' | b'C' | b'Z' => return Err(ReplicationError::Closed),
                b'N' | b'S' => {}
                other => {
                    return Err(ReplicationError::Protocol(format!(
                        "unexpected message {:?} while streaming",
                        other as char
                    )))
                }
            }
        }
    }
}

/// The sending half of a streaming connection: standby status updates.
pub struct Feedback {
    io: WriteHalf<Box<dyn Socket>>,
    out: BytesMut,
}

impl Feedback {
    pub async fn send_status(
        &mut self,
        write: Lsn,
        flush: Lsn,
        reply_requested: bool,
    ) -> Result<()> {
        let mut msg = Vec::with_capacity(34);
        msg.push(b'r');
        msg.extend_from_slice(&write.0.to_be_bytes());
        msg.extend_from_slice(&flush.0.to_be_bytes());
        msg.extend_from_slice(&flush.0.to_be_bytes()); // applied = flushed: we apply before acknowledging
        msg.extend_from_slice(&pg_now().to_be_bytes());
        msg.push(u8::from(reply_requested));
        frontend::CopyData::new(&msg[..])?.write(&mut self.out);
        let out = self.out.split();
        self.io.write_all(&out).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Ends the copy and the session politely.
    pub async fn finish(&mut self) -> Result<()> {
        frontend::copy_done(&mut self.out);
        frontend::terminate(&mut self.out);
        let out = self.out.split();
        self.io.write_all(&out).await?;
        self.io.flush().await?;
        Ok(())
    }
}

/// The consistent point and snapshot name of a `CREATE_REPLICATION_SLOT ... SNAPSHOT 'export'`.
fn consistent_point_and_snapshot(rows: &[Vec<Option<String>>]) -> Result<(Lsn, String)> {
    let bad = || {
        ReplicationError::Protocol(
            "CREATE_REPLICATION_SLOT returned no consistent point and snapshot".into(),
        )
    };
    let row = rows.first().filter(|r| r.len() >= 3).ok_or_else(bad)?;
    let point = row[1]
        .as_deref()
        .ok_or_else(bad)?
        .parse()
        .map_err(|e| ReplicationError::Protocol(format!("CREATE_REPLICATION_SLOT: {e}")))?;
    let snapshot = row[2].clone().ok_or_else(bad)?;
    Ok((point, snapshot))
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[test]
    fn parses_error_fields() {
        let body = b"SERROR\0VERROR\0C42710\0Mreplication slot \"s\" already exists\0\0";
        let e = parse_error(body);
        assert_eq!(e.code, "42710");
        assert_eq!(e.to_string(), "ERROR: replication slot \"s\" already exists (SQLSTATE 42710)");
    }

    #[test]
    fn parses_data_rows() {
        let body = [0u8, 2, 0, 0, 0, 2, b'h', b'i', 0xff, 0xff, 0xff, 0xff];
        assert_eq!(parse_data_row(&body).unwrap(), vec![Some("hi".to_owned()), None]);
        assert!(parse_data_row(&[0, 1, 0, 0, 0, 9, b'x']).is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(escape_identifier("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal(&escape_identifier("it's")), "'\"it''s\"'");
    }

    #[test]
    fn protocol_clock_round_trips() {
        assert_eq!(pg_time(0), UNIX_EPOCH + Duration::from_secs(PG_EPOCH));
        assert_eq!(
            pg_time(-1_500_000),
            UNIX_EPOCH + Duration::from_secs(PG_EPOCH) - Duration::from_micros(1_500_000)
        );
        let now = pg_now();
        let back = pg_time(now).duration_since(UNIX_EPOCH).unwrap().as_micros() as i64;
        assert_eq!(back - PG_EPOCH as i64 * 1_000_000, now);
    }

    #[tokio::test]
    async fn frames_split_across_reads() {
        for pace in [None, Some(Duration::from_millis(1))] {
            let (mut client, server) = tokio::io::duplex(64);
            let mut reader = FrameReader { io: server, buf: BytesMut::new() };
            tokio::spawn(async move {
                let msg = [b'Z', 0, 0, 0, 5, b'I', b'd', 0, 0, 0, 5, b'k'];
                for byte in msg {
                    client.write_all(&[byte]).await.unwrap();
                }
            });
            let f = reader.next_paced(pace).await.unwrap();
            assert_eq!((f.tag, &f.body[..]), (b'Z', &b"I"[..]), "{pace:?}");
            let f = reader.next_paced(pace).await.unwrap();
            assert_eq!((f.tag, &f.body[..]), (b'd', &b"k"[..]), "{pace:?}");
            assert!(
                matches!(reader.next_paced(pace).await, Err(ReplicationError::Closed)),
                "{pace:?}"
            );
        }
    }

    /// A server that answers an SSLRequest with `N`: `prefer` goes on in plain text, the modes
    /// that insist on TLS stop with an error naming the host and the mode.
    #[tokio::test]
    async fn a_server_without_tls_is_plain_for_prefer_and_an_error_otherwise() {
        use crate::pg::tls::{SslMode, TlsSettings};
        for mode in [SslMode::Prefer, SslMode::Require] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut request = [0u8; 8];
                s.read_exact(&mut request).await.unwrap();
                s.write_all(b"N").await.unwrap();
                request
            });
            let settings = TlsSettings { mode, root_cert: None };
            let config = settings.client_config().unwrap().unwrap();
            let socket = TcpStream::connect(addr).await.unwrap();
            let result = negotiate_tls(socket, "127.0.0.1", config, &settings).await;
            assert_eq!(
                server.await.unwrap(),
                [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f],
                "an SSLRequest"
            );
            match (mode, result) {
                (SslMode::Prefer, Ok(_)) => {}
                (SslMode::Require, Err(e)) => {
                    assert_eq!(e.to_string(), "replication connection: the server at 127.0.0.1 does not support TLS (sslmode=require)")
                }
                (mode, r) => panic!("{mode:?}: {:?}", r.err()),
            }
        }
    }

    #[tokio::test]
    async fn a_paced_read_takes_in_what_arrived_meanwhile() {
        // Frames written before the read are all in the buffer after one paced read.
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let frames: Vec<u8> = (0..1000u32).flat_map(|_| [b'd', 0, 0, 0, 6, b'k', b'!']).collect();
        client.write_all(&frames).await.unwrap();
        let mut reader = FrameReader { io: server, buf: BytesMut::new() };
        let f = reader.next_paced(Some(Duration::from_millis(1))).await.unwrap();
        assert_eq!((f.tag, &f.body[..]), (b'd', &b"k!"[..]));
        assert_eq!(reader.buf.len(), frames.len() - 7, "one read took in every frame");
    }
}
