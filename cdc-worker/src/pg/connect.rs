//! Where the worker's databases are and how every connection to them is opened: one place for
//! TLS (`tls.rs`), the connection's name in `pg_stat_activity`, and its pinned `search_path`.
//!
//! `search_path` is part of the connection, set at startup (`options=-c search_path=...`), with
//! `pg_temp` last so no temporary object shadows anything. Connections that run only the
//! worker's own SQL get `pg_catalog, pg_temp`: nothing another role creates is ever found.
//! Those that run projections' setup and handlers get the configured `[target] search_path`
//! then `pg_temp`, so read-model tables resolve (and are created) unqualified; `pg_catalog` is
//! searched first implicitly there (listing it first would make it the creation schema), which
//! hides exact-match overloads, and the worker's own SQL on those connections is qualified where
//! a better-matching overload could win (polymorphic functions, cross-type operators). See
//! docs/worker.md, "search_path".

use anyhow::Context;
use tokio_postgres::{Client, NoTls};
use tracing::debug;

use crate::pg::tls::{SslMode, TlsSettings};

/// The path of connections that run only the worker's own SQL.
pub const INTERNAL_SEARCH_PATH: &str = "pg_catalog, pg_temp";

/// A database the worker connects to: libpq-style settings and TLS.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub pg: tokio_postgres::Config,
    pub tls: TlsSettings,
}

/// `options` that pin `search_path` to `path`, after any `options` already given (the last
/// `-c` wins). Whitespace and backslashes are escaped as the server's option splitter expects.
pub fn pinned_options(existing: Option<&str>, path: &str) -> String {
    let mut value = String::new();
    for c in path.chars() {
        if c.is_whitespace() || c == '\\' {
            value.push('\\');
        }
        value.push(c);
    }
    match existing {
        Some(e) if !e.trim().is_empty() => format!("{e} -c search_path={value}"),
        _ => format!("-c search_path={value}"),
    }
}

/// The `search_path` of a connection that runs handlers: `configured`, then `pg_temp`
/// (`pg_catalog` is searched before both, implicitly).
pub fn handler_search_path(configured: &str) -> String {
    if configured.trim().is_empty() {
        INTERNAL_SEARCH_PATH.to_owned()
    } else {
        format!("{}, pg_temp", configured.trim())
    }
}

impl Endpoint {
    /// The same endpoint with `search_path` pinned to `path` (see the module doc).
    pub fn with_search_path(&self, path: &str) -> Endpoint {
        let mut e = self.clone();
        let options = pinned_options(self.pg.get_options(), path);
        e.pg.options(&options);
        e
    }

    /// The same endpoint named for one of the worker's tasks in `pg_stat_activity`: unless it
    /// names an application already, `eventstore-worker` (`task` empty) or `eventstore-worker TASK`.
    pub fn named(&self, task: &str) -> Endpoint {
        let mut e = self.clone();
        if e.pg.get_application_name().is_none() {
            e.pg.application_name(if task.is_empty() {
                "eventstore-worker".to_owned()
            } else {
                format!("eventstore-worker {task}")
            });
        }
        e
    }
}

/// Connects to the source or target database (`what`) for one of the worker's tasks (see
/// [`Endpoint::named`]), with TLS as configured.
pub async fn connect_sql(
    endpoint: &Endpoint,
    what: &'static str,
    task: &str,
) -> anyhow::Result<Client> {
    let Endpoint { mut pg, tls } = endpoint.named(task);
    let context = || format!("connecting to the {what} database (sslmode={})", tls.mode.as_str());
    let client_config = tls.client_config().map_err(anyhow::Error::msg).with_context(context)?;
    pg.ssl_mode(match tls.mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    });
    let client = match client_config {
        None => {
            let (client, connection) = pg.connect(NoTls).await.with_context(context)?;
            spawn_connection(connection, what);
            client
        }
        Some(c) => {
            let connector = tokio_postgres_rustls::MakeRustlsConnect::new((*c).clone());
            let (client, connection) = pg.connect(connector).await.with_context(context)?;
            spawn_connection(connection, what);
            client
        }
    };
    Ok(client)
}

fn spawn_connection<F>(connection: F, what: &'static str)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            debug!(error = %e, what, "SQL connection ended");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_path_is_pinned_in_startup_options() {
        assert_eq!(
            pinned_options(None, INTERNAL_SEARCH_PATH),
            "-c search_path=pg_catalog,\\ pg_temp"
        );
        assert_eq!(
            pinned_options(Some("-c statement_timeout=5s"), "pg_catalog, \"my schema\""),
            "-c statement_timeout=5s -c search_path=pg_catalog,\\ \"my\\ schema\""
        );
        assert_eq!(handler_search_path("\"$user\", public"), "\"$user\", public, pg_temp");
        assert_eq!(handler_search_path(" "), INTERNAL_SEARCH_PATH);
    }

    #[test]
    fn endpoints_are_named_unless_the_dsn_names_them() {
        let e = Endpoint { pg: "host=x".parse().unwrap(), tls: TlsSettings::default() };
        assert_eq!(e.named("").pg.get_application_name(), Some("eventstore-worker"));
        assert_eq!(e.named("build").pg.get_application_name(), Some("eventstore-worker build"));
        let mine = Endpoint {
            pg: "host=x application_name=mine".parse().unwrap(),
            tls: TlsSettings::default(),
        };
        assert_eq!(mine.named("build").pg.get_application_name(), Some("mine"));
        assert_eq!(
            e.with_search_path("pg_catalog").pg.get_options(),
            Some("-c search_path=pg_catalog")
        );
    }
}
