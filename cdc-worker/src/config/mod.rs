//! The worker's TOML configuration, validated before anything connects.
//!
//! Over 500 lines with its tests (about 200 of them): validation and its cases belong together.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::pg::connect::{handler_search_path, Endpoint, INTERNAL_SEARCH_PATH};
use crate::pg::tls::{SslMode, TlsSettings};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read { file: PathBuf, source: std::io::Error },
    #[error("{file}: {message}")]
    Syntax { file: PathBuf, message: String },
    #[error("{file}: {key}: {message}")]
    Invalid { file: PathBuf, key: String, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    source: RawSource,
    target: Option<RawTarget>,
    #[serde(default)]
    batch: Batch,
    #[serde(default)]
    stream: Stream,
    #[serde(default, rename = "projection")]
    projections: Vec<RawProjection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    dsn: String,
    #[serde(default)]
    sslmode: Option<String>,
    #[serde(default)]
    sslrootcert: Option<PathBuf>,
    #[serde(default = "default_slot")]
    slot: String,
    #[serde(default = "default_publication")]
    publication: String,
    /// Create the slot as a failover slot where the server supports it (PostgreSQL 17 and
    /// later), so that a standby synchronizing slots keeps it.
    #[serde(default = "default_failover")]
    failover: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    /// Omitted: the source database (with the source's TLS settings).
    #[serde(default)]
    dsn: Option<String>,
    #[serde(default)]
    sslmode: Option<String>,
    #[serde(default)]
    sslrootcert: Option<PathBuf>,
    /// Where setup and handler SQL resolve unqualified names (see `pg/connect.rs`).
    #[serde(default)]
    search_path: Option<String>,
}

/// `search_path` of handlers when `[target] search_path` is not set: PostgreSQL's default.
pub const DEFAULT_SEARCH_PATH: &str = "\"$user\", public";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProjection {
    name: String,
    #[serde(default)]
    setup: Option<String>,
    #[serde(default)]
    on_unknown: OnUnknown,
    #[serde(default)]
    version: Option<Version>,
    #[serde(default)]
    handlers: BTreeMap<String, String>,
}

/// A projection's `version`: any string or integer; compared as text.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Version {
    Integer(i64),
    Text(String),
}

impl Version {
    fn into_text(self) -> String {
        match self {
            Version::Integer(i) => i.to_string(),
            Version::Text(s) => s,
        }
    }
}

fn default_slot() -> String {
    "eventstore_worker".into()
}

fn default_failover() -> bool {
    true
}

fn default_publication() -> String {
    "eventstore_events".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnknown {
    #[default]
    Skip,
    Fail,
}

/// Bounds of one target transaction. Source transactions are never split, so a batch may
/// exceed `max_events`/`max_bytes` by one source transaction.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Batch {
    pub max_transactions: usize,
    pub max_events: usize,
    pub max_bytes: usize,
    /// How long to wait for more source transactions once one is ready.
    pub linger_ms: u64,
}

impl Default for Batch {
    fn default() -> Self {
        Batch { max_transactions: 10_000, max_events: 10_000, max_bytes: 16 << 20, linger_ms: 2 }
    }
}

impl Batch {
    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.linger_ms)
    }
}

/// The stream reader's side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Stream {
    /// Bytes of decoded source transactions (envelopes) held between the stream reader and the
    /// apply path, the batch being applied included; one transaction larger than this still
    /// goes through, alone (see `stream/queue.rs`).
    pub max_queued_bytes: usize,
}

impl Default for Stream {
    fn default() -> Self {
        Stream { max_queued_bytes: 64 << 20 }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    /// The source, `search_path` pinned to the internal one (nothing but the worker's SQL runs
    /// on source connections).
    pub source: Endpoint,
    pub slot: String,
    pub publication: String,
    /// Whether the slot is a failover slot (on servers that have them).
    pub failover: bool,
    /// `None`: read models live in the source database.
    pub target: Option<Endpoint>,
    /// The target for connections that run setup and handlers (the configured search_path).
    target_handlers: Endpoint,
    /// The target for connections that run only the worker's own SQL.
    target_internal: Endpoint,
    pub batch: Batch,
    pub stream: Stream,
    pub projections: Vec<Projection>,
}

#[derive(Debug, Clone)]
pub struct Projection {
    pub name: String,
    pub setup: Option<String>,
    pub on_unknown: OnUnknown,
    /// Changing it makes the worker rebuild the projection from `eventstore.events` (in shadow
    /// tables, swapped in when complete). `None` when not set.
    pub version: Option<String>,
    /// event type → SQL run with one parameter, the envelope (which it need not use).
    pub handlers: BTreeMap<String, String>,
}

impl Config {
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file)
            .map_err(|source| ConfigError::Read { file: file.into(), source })?;
        let mut config = Config::parse(file, &text)?;
        // A root certificate that cannot be read is a configuration error, not a reason to
        // retry connecting forever.
        for (section, endpoint) in
            [("source", Some(&config.source)), ("target", config.target.as_ref())]
        {
            if let Some(e) = endpoint {
                e.tls.client_config().map_err(|message| ConfigError::Invalid {
                    file: file.into(),
                    key: format!("{section}.sslrootcert"),
                    message,
                })?;
            }
        }
        // Like libpq: a password not in the connection string may come from PGPASSWORD.
        if let Ok(password) = std::env::var("PGPASSWORD") {
            let endpoints =
                [&mut config.source, &mut config.target_handlers, &mut config.target_internal];
            for c in endpoints.into_iter().chain(config.target.as_mut()) {
                if c.pg.get_password().is_none() {
                    c.pg.password(password.as_str());
                }
            }
        }
        Ok(config)
    }

    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Syntax { file: file.into(), message: e.to_string() })?;
        let invalid =
            |key: String, message: String| ConfigError::Invalid { file: file.into(), key, message };

        // The DSN's own sslmode/sslrootcert, unless the keys beside it say otherwise.
        let endpoint =
            |section: &str, dsn: &str, sslmode: &Option<String>, sslrootcert: &Option<PathBuf>| {
                let key = format!("{section}.dsn");
                let split = crate::pg::tls::split_dsn(dsn)
                    .map_err(|e| invalid(key.clone(), format!("invalid connection string: {e}")))?;
                let pg = tokio_postgres::Config::from_str(&split.rest)
                    .map_err(|e| invalid(key.clone(), format!("invalid connection string: {e}")))?;
                let (mode_key, mode) = match sslmode {
                    Some(m) => (format!("{section}.sslmode"), Some(m.clone())),
                    None => (key.clone(), split.sslmode),
                };
                let mode = match mode {
                    Some(m) => m.parse::<SslMode>().map_err(|e| invalid(mode_key, e))?,
                    None => SslMode::default(),
                };
                let root_cert = sslrootcert.clone().or(split.sslrootcert.map(PathBuf::from));
                Ok::<_, ConfigError>(Endpoint { pg, tls: TlsSettings { mode, root_cert } })
            };
        let source =
            endpoint("source", &raw.source.dsn, &raw.source.sslmode, &raw.source.sslrootcert)?;
        let target = match &raw.target {
            Some(RawTarget { dsn: Some(dsn), sslmode, sslrootcert, .. }) => Some(endpoint("target", dsn, sslmode, sslrootcert)?),
            Some(RawTarget { dsn: None, sslmode: Some(_), .. } | RawTarget { dsn: None, sslrootcert: Some(_), .. }) => {
                return Err(invalid(
                    "target".into(),
                    "sslmode and sslrootcert need a target dsn; without one the source's settings apply".into(),
                ))
            }
            _ => None,
        };
        let search_path = raw
            .target
            .as_ref()
            .and_then(|t| t.search_path.clone())
            .unwrap_or_else(|| DEFAULT_SEARCH_PATH.into());
        let target_handlers =
            target.as_ref().unwrap_or(&source).with_search_path(&handler_search_path(&search_path));
        let target_internal =
            target.as_ref().unwrap_or(&source).with_search_path(INTERNAL_SEARCH_PATH);
        let source = source.with_search_path(INTERNAL_SEARCH_PATH);
        for (key, value) in
            [("source.slot", &raw.source.slot), ("source.publication", &raw.source.publication)]
        {
            if value.is_empty() || value.len() > 63 {
                return Err(invalid(key.into(), "must be 1 to 63 characters".into()));
            }
        }
        if !raw
            .source
            .slot
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(invalid(
                "source.slot".into(),
                "replication slot names may contain only lower case letters, digits and underscores".into(),
            ));
        }
        let b = &raw.batch;
        if b.max_transactions == 0 || b.max_events == 0 || b.max_bytes == 0 {
            return Err(invalid(
                "batch".into(),
                "max_transactions, max_events and max_bytes must be positive".into(),
            ));
        }
        if raw.stream.max_queued_bytes == 0 {
            return Err(invalid("stream.max_queued_bytes".into(), "must be positive".into()));
        }
        if raw.projections.is_empty() {
            return Err(invalid(
                "projection".into(),
                "at least one [[projection]] is required".into(),
            ));
        }

        let mut seen = HashSet::new();
        let mut projections = Vec::new();
        for (i, p) in raw.projections.into_iter().enumerate() {
            let at = |key: &str| {
                if p.name.is_empty() {
                    format!("projection[{i}].{key}")
                } else {
                    format!("projection {:?}: {key}", p.name)
                }
            };
            if p.name.trim().is_empty() {
                return Err(invalid(at("name"), "must not be empty".into()));
            }
            if !seen.insert(p.name.clone()) {
                return Err(invalid(at("name"), "is used by more than one projection".into()));
            }
            if p.handlers.is_empty() {
                return Err(invalid(
                    at("handlers"),
                    "at least one handler (event_type = \"SQL\") is required".into(),
                ));
            }
            for (event_type, sql) in &p.handlers {
                if sql.trim().is_empty() {
                    return Err(invalid(
                        at(&format!("handlers.{event_type}")),
                        "SQL must not be empty".into(),
                    ));
                }
                // A handler need not read the envelope (`UPDATE stats SET n = n + 1`): it is
                // still run with it bound as $1, prepared as jsonb (see projection::prepare).
            }
            let version = p.version.map(Version::into_text);
            if version.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(invalid(at("version"), "must not be empty".into()));
            }
            projections.push(Projection {
                name: p.name,
                setup: p.setup,
                on_unknown: p.on_unknown,
                version,
                handlers: p.handlers,
            });
        }

        Ok(Config {
            file: file.into(),
            source,
            slot: raw.source.slot,
            publication: raw.source.publication,
            failover: raw.source.failover,
            target,
            target_handlers,
            target_internal,
            batch: raw.batch,
            stream: raw.stream,
            projections,
        })
    }

    /// The target, for connections that run projections' setup and handlers.
    pub fn target_config(&self) -> &Endpoint {
        &self.target_handlers
    }

    /// The target, for connections that run only the worker's own SQL.
    pub fn target_internal(&self) -> &Endpoint {
        &self.target_internal
    }

    pub fn projection(&self, name: &str) -> Option<&Projection> {
        self.projections.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("worker.toml"), text)
    }

    const GOOD: &str = r#"
        [source]
        dsn = "host=localhost port=5432 dbname=app user=worker"
        [[projection]]
        name = "order_summary"
        setup = "CREATE TABLE IF NOT EXISTS order_summary (order_id text PRIMARY KEY)"
        [projection.handlers]
        OrderPlaced = "INSERT INTO order_summary VALUES ($1->'data'->>'order_id')"
    "#;

    #[test]
    fn parses_the_documented_shape_with_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.slot, "eventstore_worker");
        assert_eq!(c.publication, "eventstore_events");
        assert!(c.target.is_none());
        assert_eq!(c.stream.max_queued_bytes, 64 << 20);
        assert_eq!(c.projections[0].on_unknown, OnUnknown::Skip);
        assert_eq!(c.source.pg.get_dbname(), Some("app"));
        assert_eq!(c.source.tls, TlsSettings::default());
        assert_eq!(c.source.pg.get_options(), Some("-c search_path=pg_catalog,\\ pg_temp"));
        assert_eq!(
            c.target_config().pg.get_options(),
            Some("-c search_path=\"$user\",\\ public,\\ pg_temp")
        );
        assert_eq!(c.target_internal().pg.get_options(), c.source.pg.get_options());
    }

    #[test]
    fn accepts_urls_and_a_target() {
        let c = parse(&GOOD.replace(
            "[[projection]]",
            "[target]\ndsn = \"postgres://rm:secret@db.example:6543/readmodels\"\n[[projection]]",
        ))
        .unwrap();
        let t = c.target.unwrap();
        assert_eq!(t.pg.get_dbname(), Some("readmodels"));
        assert_eq!(t.pg.get_ports(), &[6543]);
    }

    #[test]
    fn tls_settings_come_from_the_dsn_or_beside_it() {
        let with = |source: &str| {
            parse(&GOOD.replace("[source]\n", &format!("[source]\n{source}\n")).replacen(
                "dsn = \"host=localhost port=5432 dbname=app user=worker\"\n",
                "",
                1,
            ))
        };
        let c = with("dsn = \"host=db dbname=app sslmode=verify-full sslrootcert=/etc/ca.pem\"")
            .unwrap();
        assert_eq!(
            c.source.tls,
            TlsSettings { mode: SslMode::VerifyFull, root_cert: Some("/etc/ca.pem".into()) }
        );
        assert_eq!(c.target_config().tls, c.source.tls, "no [target]: the source's settings");
        let c = with("dsn = \"postgres://w@db/app?sslmode=require\"\nsslmode = \"verify-ca\"\nsslrootcert = \"/ca.pem\"").unwrap();
        assert_eq!(
            c.source.tls,
            TlsSettings { mode: SslMode::VerifyCa, root_cert: Some("/ca.pem".into()) },
            "the key beside the dsn wins"
        );
        assert_eq!(c.source.pg.get_dbname(), Some("app"));
        let e = with("dsn = \"host=db sslmode=sometimes\"").unwrap_err().to_string();
        assert!(e.starts_with("worker.toml: source.dsn: unknown sslmode \"sometimes\""), "{e}");
        let e = with("dsn = \"host=db\"\nsslmode = \"always\"").unwrap_err().to_string();
        assert!(e.starts_with("worker.toml: source.sslmode: unknown sslmode"), "{e}");
        let target = GOOD.replace(
            "[[projection]]",
            "[target]\ndsn = \"host=rm sslmode=disable\"\n[[projection]]",
        );
        assert_eq!(parse(&target).unwrap().target_config().tls.mode, SslMode::Disable);
        let e = parse(
            &GOOD.replace("[[projection]]", "[target]\nsslmode = \"require\"\n[[projection]]"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("target: sslmode and sslrootcert need a target dsn"), "{e}");
    }

    #[test]
    fn an_unreadable_root_certificate_fails_the_load() {
        let dir =
            std::env::temp_dir().join(format!("eventstore-worker-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("worker.toml");
        std::fs::write(
            &file,
            GOOD.replace(
                "user=worker",
                "user=worker sslmode=verify-full sslrootcert=/nonexistent/ca.pem",
            ),
        )
        .unwrap();
        let e = Config::load(&file).unwrap_err().to_string();
        assert!(
            e.contains("worker.toml: source.sslrootcert: sslrootcert /nonexistent/ca.pem:"),
            "{e}"
        );
        std::fs::write(&file, GOOD).unwrap();
        assert!(Config::load(&file).is_ok(), "prefer reads no file");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn handlers_resolve_names_through_the_configured_search_path() {
        let c =
            parse(&GOOD.replace(
                "[[projection]]",
                "[target]\nsearch_path = \"readmodels\"\n[[projection]]",
            ))
            .unwrap();
        assert!(c.target.is_none(), "a target without dsn is the source database");
        assert_eq!(
            c.target_config().pg.get_options(),
            Some("-c search_path=readmodels,\\ pg_temp")
        );
        assert_eq!(c.target_config().pg.get_dbname(), Some("app"));
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_handler_need_not_use_the_envelope() {
        let c = parse(&GOOD.replace("($1->'data'->>'order_id')", "('x')")).unwrap();
        assert_eq!(
            c.projections[0].handlers["OrderPlaced"],
            "INSERT INTO order_summary VALUES ('x')"
        );
    }

    #[test]
    fn errors_name_file_projection_and_key() {
        assert_eq!(
            err(&GOOD.replace("($1->'data'->>'order_id')", "").replace("INSERT INTO order_summary VALUES ", " ")),
            "worker.toml: projection \"order_summary\": handlers.OrderPlaced: SQL must not be empty"
        );
        assert!(err(&GOOD.replace("name = \"order_summary\"", "name = \"\""))
            .starts_with("worker.toml: projection[0].name"));
        let unknown = err(&GOOD
            .replace("[projection.handlers]", "on_unknown = \"explode\"\n[projection.handlers]"));
        assert!(
            unknown.starts_with("worker.toml:")
                && unknown.contains("on_unknown")
                && unknown.contains("explode"),
            "{unknown}"
        );
        let typo = err(&GOOD.replace("setup =", "setpu ="));
        assert!(typo.contains("setpu"), "{typo}");
        assert_eq!(
            err(&GOOD.replace("dbname=app", "dbname=app bogus=1")),
            "worker.toml: source.dsn: invalid connection string: invalid configuration: unknown option `bogus`"
                .to_string()
                .replace("invalid configuration: unknown option `bogus`", &tokio_postgres::Config::from_str("bogus=1").unwrap_err().to_string())
        );
        let dup = format!("{GOOD}\n[[projection]]\nname = \"order_summary\"\n[projection.handlers]\nX = \"SELECT $1\"");
        assert_eq!(
            err(&dup),
            "worker.toml: projection \"order_summary\": name: is used by more than one projection"
        );
        assert!(err("[source]\ndsn = \"host=x\"").contains("at least one [[projection]]"));
        assert!(
            err(&GOOD.replace("[source]", "[source]\nslot = \"Bad-Name\"")).contains("source.slot")
        );
        assert!(err(
            &GOOD.replace("[projection.handlers]", "version = \" \"\n[projection.handlers]")
        )
        .contains("version"));
        assert_eq!(
            err(&GOOD.replace("[[projection]]", "[stream]\nmax_queued_bytes = 0\n[[projection]]")),
            "worker.toml: stream.max_queued_bytes: must be positive"
        );
        let bound = parse(
            &GOOD.replace("[[projection]]", "[stream]\nmax_queued_bytes = 1048576\n[[projection]]"),
        )
        .unwrap();
        assert_eq!(bound.stream.max_queued_bytes, 1 << 20);
    }

    #[test]
    fn version_is_a_string_or_an_integer() {
        assert_eq!(parse(GOOD).unwrap().projections[0].version, None);
        let v = |text: &str| {
            parse(&GOOD.replace(
                "[projection.handlers]",
                &format!("version = {text}\n[projection.handlers]"),
            ))
        };
        assert_eq!(v("3").unwrap().projections[0].version.as_deref(), Some("3"));
        assert_eq!(
            v("\"2024-05-01\"").unwrap().projections[0].version.as_deref(),
            Some("2024-05-01")
        );
        assert!(v("1.5").is_err());
    }
}
