//! The worker's TOML configuration, validated before anything connects.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

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
    #[serde(default = "default_slot")]
    slot: String,
    #[serde(default = "default_publication")]
    publication: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    dsn: String,
}

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
    /// goes through, alone (see `queue.rs`).
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
    pub source: tokio_postgres::Config,
    pub slot: String,
    pub publication: String,
    /// `None`: read models live in the source database.
    pub target: Option<tokio_postgres::Config>,
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
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read { file: file.into(), source })?;
        let mut config = Config::parse(file, &text)?;
        // Like libpq: a password not in the connection string may come from PGPASSWORD.
        if let Ok(password) = std::env::var("PGPASSWORD") {
            for c in std::iter::once(&mut config.source).chain(config.target.as_mut()) {
                if c.get_password().is_none() {
                    c.password(password.as_str());
                }
            }
        }
        Ok(config)
    }

    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax { file: file.into(), message: e.to_string() })?;
        let invalid = |key: String, message: String| ConfigError::Invalid { file: file.into(), key, message };

        let dsn = |key: &str, dsn: &str| {
            tokio_postgres::Config::from_str(dsn).map_err(|e| invalid(key.into(), format!("invalid connection string: {e}")))
        };
        let source = dsn("source.dsn", &raw.source.dsn)?;
        let target = raw.target.as_ref().map(|t| dsn("target.dsn", &t.dsn)).transpose()?;
        for (key, value) in [("source.slot", &raw.source.slot), ("source.publication", &raw.source.publication)] {
            if value.is_empty() || value.len() > 63 {
                return Err(invalid(key.into(), "must be 1 to 63 characters".into()));
            }
        }
        if !raw.source.slot.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return Err(invalid(
                "source.slot".into(),
                "replication slot names may contain only lower case letters, digits and underscores".into(),
            ));
        }
        let b = &raw.batch;
        if b.max_transactions == 0 || b.max_events == 0 || b.max_bytes == 0 {
            return Err(invalid("batch".into(), "max_transactions, max_events and max_bytes must be positive".into()));
        }
        if raw.stream.max_queued_bytes == 0 {
            return Err(invalid("stream.max_queued_bytes".into(), "must be positive".into()));
        }
        if raw.projections.is_empty() {
            return Err(invalid("projection".into(), "at least one [[projection]] is required".into()));
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
                return Err(invalid(at("handlers"), "at least one handler (event_type = \"SQL\") is required".into()));
            }
            for (event_type, sql) in &p.handlers {
                if sql.trim().is_empty() {
                    return Err(invalid(at(&format!("handlers.{event_type}")), "SQL must not be empty".into()));
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
            target,
            batch: raw.batch,
            stream: raw.stream,
            projections,
        })
    }

    pub fn target_config(&self) -> &tokio_postgres::Config {
        self.target.as_ref().unwrap_or(&self.source)
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
        assert_eq!(c.source.get_dbname(), Some("app"));
    }

    #[test]
    fn accepts_urls_and_a_target() {
        let c = parse(&GOOD.replace(
            "[[projection]]",
            "[target]\ndsn = \"postgres://rm:secret@db.example:6543/readmodels\"\n[[projection]]",
        ))
        .unwrap();
        let t = c.target.unwrap();
        assert_eq!(t.get_dbname(), Some("readmodels"));
        assert_eq!(t.get_ports(), &[6543]);
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_handler_need_not_use_the_envelope() {
        let c = parse(&GOOD.replace("($1->'data'->>'order_id')", "('x')")).unwrap();
        assert_eq!(c.projections[0].handlers["OrderPlaced"], "INSERT INTO order_summary VALUES ('x')");
    }

    #[test]
    fn errors_name_file_projection_and_key() {
        assert_eq!(
            err(&GOOD.replace("($1->'data'->>'order_id')", "").replace("INSERT INTO order_summary VALUES ", " ")),
            "worker.toml: projection \"order_summary\": handlers.OrderPlaced: SQL must not be empty"
        );
        assert!(err(&GOOD.replace("name = \"order_summary\"", "name = \"\"")).starts_with("worker.toml: projection[0].name"));
        let unknown = err(&GOOD.replace("[projection.handlers]", "on_unknown = \"explode\"\n[projection.handlers]"));
        assert!(unknown.starts_with("worker.toml:") && unknown.contains("on_unknown") || unknown.contains("explode"), "{unknown}");
        let typo = err(&GOOD.replace("setup =", "setpu ="));
        assert!(typo.contains("setpu"), "{typo}");
        assert_eq!(
            err(&GOOD.replace("dbname=app", "dbname=app bogus=1")),
            "worker.toml: source.dsn: invalid connection string: invalid configuration: unknown option `bogus`"
                .to_string()
                .replace("invalid configuration: unknown option `bogus`", &tokio_postgres::Config::from_str("bogus=1").unwrap_err().to_string())
        );
        let dup = format!("{GOOD}\n[[projection]]\nname = \"order_summary\"\n[projection.handlers]\nX = \"SELECT $1\"");
        assert_eq!(err(&dup), "worker.toml: projection \"order_summary\": name: is used by more than one projection");
        assert!(err("[source]\ndsn = \"host=x\"").contains("at least one [[projection]]"));
        assert!(err(&GOOD.replace("[source]", "[source]\nslot = \"Bad-Name\"")).contains("source.slot"));
        assert!(err(&GOOD.replace("[projection.handlers]", "version = \" \"\n[projection.handlers]")).contains("version"));
        assert_eq!(
            err(&GOOD.replace("[[projection]]", "[stream]\nmax_queued_bytes = 0\n[[projection]]")),
            "worker.toml: stream.max_queued_bytes: must be positive"
        );
        let bound = parse(&GOOD.replace("[[projection]]", "[stream]\nmax_queued_bytes = 1048576\n[[projection]]")).unwrap();
        assert_eq!(bound.stream.max_queued_bytes, 1 << 20);
    }

    #[test]
    fn version_is_a_string_or_an_integer() {
        assert_eq!(parse(GOOD).unwrap().projections[0].version, None);
        let v = |text: &str| parse(&GOOD.replace("[projection.handlers]", &format!("version = {text}\n[projection.handlers]")));
        assert_eq!(v("3").unwrap().projections[0].version.as_deref(), Some("3"));
        assert_eq!(v("\"2024-05-01\"").unwrap().projections[0].version.as_deref(), Some("2024-05-01"));
        assert!(v("1.5").is_err());
    }
}
