//! TLS for both of the worker's connections, with libpq's `sslmode` semantics:
//!
//! | sslmode | TLS | server certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default, as libpq) | if the server offers it, else plain | not checked |
//! | `require` | always | not checked; with `sslrootcert`, as `verify-ca` (libpq does the same) |
//! | `verify-ca` | always | chain to `sslrootcert` |
//! | `verify-full` | always | chain to `sslrootcert` and the host name (or IP) connected to |
//!
//! `sslmode` and `sslrootcert` may be given in the DSN (keyword/value or URL query) or beside it
//! in the configuration (which wins). tokio-postgres knows neither `verify-*` nor `sslrootcert`,
//! so [`split_dsn`] takes them out of the DSN before it is parsed. Over a unix socket there is
//! no TLS (the server refuses it there): `prefer` is plain, the others fail.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = String;
    fn from_str(s: &str) -> Result<SslMode, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // libpq's "allow" tries plain first; the worker has no reason to prefer plain.
            other => {
                return Err(format!(
                "unknown sslmode {other:?} (disable, prefer, require, verify-ca or verify-full)"
            ))
            }
        })
    }
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// A connection's TLS settings, as configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
}

impl TlsSettings {
    /// The mode in effect: `require` with a root certificate verifies the chain, as in libpq.
    pub fn effective_mode(&self) -> SslMode {
        match (self.mode, &self.root_cert) {
            (SslMode::Require, Some(_)) => SslMode::VerifyCa,
            (mode, _) => mode,
        }
    }

    /// Whether TLS must be used (the connection fails without it).
    pub fn required(&self) -> bool {
        !matches!(self.mode, SslMode::Disable | SslMode::Prefer)
    }

    /// The rustls configuration for these settings; `None` for `disable`. Reads the root
    /// certificate file (default `~/.postgresql/root.crt`, as libpq) when the mode verifies.
    pub fn client_config(&self) -> Result<Option<Arc<ClientConfig>>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let config = match self.effective_mode() {
            SslMode::Disable => return Ok(None),
            SslMode::Prefer | SslMode::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                .with_no_client_auth(),
            mode @ (SslMode::VerifyCa | SslMode::VerifyFull) => {
                let roots = Arc::new(self.roots()?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| format!("TLS: sslrootcert: {e}"))?;
                if mode == SslMode::VerifyFull {
                    builder.with_webpki_verifier(webpki).with_no_client_auth()
                } else {
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                        .with_no_client_auth()
                }
            }
        };
        Ok(Some(Arc::new(config)))
    }

    fn roots(&self) -> Result<RootCertStore, String> {
        let path = match &self.root_cert {
            Some(p) => p.clone(),
            None => match std::env::var_os("HOME") {
                Some(home) => Path::new(&home).join(".postgresql/root.crt"),
                None => return Err(format!("sslmode {} needs sslrootcert", self.mode.as_str())),
            },
        };
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(&path)
            .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!("sslrootcert {}: no certificate in the file", path.display()));
        }
        Ok(roots)
    }
}

/// The name to verify the server's certificate against (and to send as SNI).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_owned())
        .map_err(|e| format!("TLS: host {host:?} is not a valid server name: {e}"))
}

/// `prefer` and `require` without a root certificate: encrypted, but any certificate will do
/// (the handshake signatures are still checked, so the peer holds the certificate's key).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the name in the certificate is not
/// compared with the host.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                ..
            })) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// TLS keys found in a DSN: its text without them, and their values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SplitDsn {
    pub rest: String,
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
}

const TLS_KEYS: [&str; 2] = ["sslmode", "sslrootcert"];

/// Takes `sslmode` and `sslrootcert` out of a keyword/value DSN or a `postgres://` URL.
pub fn split_dsn(dsn: &str) -> Result<SplitDsn, String> {
    if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        split_url(dsn)
    } else {
        split_keyword_value(dsn)
    }
}

fn split_url(url: &str) -> Result<SplitDsn, String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(SplitDsn { rest: url.to_owned(), ..SplitDsn::default() });
    };
    let mut out = SplitDsn::default();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => out.sslmode = Some(percent_decode(value)?),
            "sslrootcert" => out.sslrootcert = Some(percent_decode(value)?),
            _ => kept.push(pair),
        }
    }
    out.rest = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex =
                s.get(i + 1..i + 3).ok_or_else(|| format!("invalid percent-encoding in {s:?}"))?;
            out.push(
                u8::from_str_radix(hex, 16)
                    .map_err(|_| format!("invalid percent-encoding in {s:?}"))?,
            );
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("invalid UTF-8 in {s:?}"))
}

/// Splits `key = value` pairs as libpq does (values optionally single-quoted, `\` escaping
/// within), keeping every other pair's text as it was.
fn split_keyword_value(dsn: &str) -> Result<SplitDsn, String> {
    let b = dsn.as_bytes();
    let mut out = SplitDsn::default();
    let mut kept: Vec<&str> = Vec::new();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &dsn[start..i];
        skip_ws(&mut i);
        if b.get(i) != Some(&b'=') {
            return Err(format!("missing \"=\" after {key:?} in connection string"));
        }
        i += 1;
        skip_ws(&mut i);
        let mut value = String::new();
        if b.get(i) == Some(&b'\'') {
            i += 1;
            loop {
                match b.get(i) {
                    None => return Err("unterminated quoted value in connection string".into()),
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < b.len() => {
                        value.push(b[i + 1] as char);
                        i += 2;
                    }
                    Some(_) => {
                        let ch = dsn[i..].chars().next().unwrap_or_default();
                        value.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
        } else {
            let v = i;
            while i < b.len() && !b[i].is_ascii_whitespace() {
                i += 1;
            }
            value.push_str(&dsn[v..i]);
        }
        match key {
            "sslmode" => out.sslmode = Some(value),
            "sslrootcert" => out.sslrootcert = Some(value),
            _ => kept.push(&dsn[start..i]),
        }
    }
    debug_assert!(TLS_KEYS.iter().all(|k| !kept.iter().any(|p| p.starts_with(&format!("{k}=")))));
    out.rest = kept.join(" ");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_require_with_a_root_verifies_the_chain() {
        for m in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            assert_eq!(m.parse::<SslMode>().unwrap().as_str(), m);
        }
        assert!("allow".parse::<SslMode>().unwrap_err().contains("verify-full"));
        let s = |mode, root: Option<&str>| TlsSettings { mode, root_cert: root.map(PathBuf::from) };
        assert_eq!(s(SslMode::Require, None).effective_mode(), SslMode::Require);
        assert_eq!(s(SslMode::Require, Some("/ca.pem")).effective_mode(), SslMode::VerifyCa);
        assert_eq!(s(SslMode::Prefer, Some("/ca.pem")).effective_mode(), SslMode::Prefer);
        assert!(!s(SslMode::Prefer, None).required() && s(SslMode::VerifyFull, None).required());
        assert_eq!(TlsSettings::default().mode, SslMode::Prefer, "libpq's default");
    }

    #[test]
    fn tls_keys_come_out_of_keyword_value_dsns() {
        let d = split_dsn(
            "host=db port=5432 sslmode=verify-full  sslrootcert = '/etc/my ca\\'s.pem' dbname=app",
        )
        .unwrap();
        assert_eq!(d.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(d.sslrootcert.as_deref(), Some("/etc/my ca's.pem"));
        assert_eq!(d.rest, "host=db port=5432 dbname=app");
        let d = split_dsn("host=db password='a b=c' user = x").unwrap();
        assert_eq!((d.sslmode, d.rest.as_str()), (None, "host=db password='a b=c' user = x"));
        assert!(split_dsn("host=db sslmode").is_err());
        assert!(split_dsn("host='db").is_err());
        assert_eq!(split_dsn("").unwrap().rest, "");
    }

    #[test]
    fn tls_keys_come_out_of_urls() {
        let d = split_dsn("postgres://u:p@db:5432/app?sslmode=require&application_name=x&sslrootcert=%2Fetc%2Fca.pem").unwrap();
        assert_eq!(d.sslmode.as_deref(), Some("require"));
        assert_eq!(d.sslrootcert.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(d.rest, "postgres://u:p@db:5432/app?application_name=x");
        let d = split_dsn("postgresql://db/app?sslmode=disable").unwrap();
        assert_eq!(
            (d.sslmode.as_deref(), d.rest.as_str()),
            (Some("disable"), "postgresql://db/app")
        );
        assert_eq!(split_dsn("postgres://db/app").unwrap().rest, "postgres://db/app");
        assert!(split_dsn("postgres://db/app?sslrootcert=%zz").is_err());
    }

    #[test]
    fn client_configs_follow_the_mode() {
        assert!(TlsSettings { mode: SslMode::Disable, root_cert: None }
            .client_config()
            .unwrap()
            .is_none());
        assert!(TlsSettings { mode: SslMode::Require, root_cert: None }
            .client_config()
            .unwrap()
            .is_some());
        let missing = TlsSettings {
            mode: SslMode::VerifyFull,
            root_cert: Some("/nonexistent/ca.pem".into()),
        };
        assert!(missing.client_config().unwrap_err().contains("sslrootcert /nonexistent/ca.pem"));
        assert!(server_name("127.0.0.1").is_ok() && server_name("db.example").is_ok());
    }
}
