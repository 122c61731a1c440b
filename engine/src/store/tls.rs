//! TLS and logins for the cluster-mode backends: the files an operator names (CA, client
//! certificate and key) turned into what the CQL driver (OpenSSL) and the Redis client
//! (rustls) take, and start-up errors that say which setting is wrong.
//!
//! This module only prepares connections; opening them, pooling and timeouts stay with
//! [`super::cql`] and [`super::redis_hot`]. Secrets (passwords, keys) are never put into an
//! error message or a `Debug` output.

use crate::error::StoreError;
use crate::model::Secret;
use std::fmt;
use std::path::{Path, PathBuf};

/// A CQL login (PasswordAuthenticator and compatible). `Debug` never shows the password.
#[derive(Clone)]
pub struct CqlAuth {
    pub username: String,
    pub password: Secret,
}

impl fmt::Debug for CqlAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CqlAuth")
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

/// TLS files for a backend's connections. Without `ca_file` the server's certificate is
/// checked against the system's trust store; `cert_file` and `key_file` (both or neither)
/// present a client certificate to servers that ask for one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM file with the CA certificate(s) to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

impl TlsFiles {
    /// True when no file is named (system roots, no client certificate).
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.cert_file.is_none() && self.key_file.is_none()
    }

    /// The client certificate and key, or an error when only one of them is named.
    fn client_pair(&self, what: &str) -> Result<Option<(&Path, &Path)>, StoreError> {
        match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => Ok(Some((c, k))),
            (None, None) => Ok(None),
            _ => Err(StoreError(format!(
                "{what}: a client certificate needs both its certificate file and its key \
                 file; set both or neither"
            ))),
        }
    }
}

fn read(what: &str, setting: &str, path: &Path) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|e| {
        StoreError(format!(
            "{what}: cannot read {setting} {}: {e}",
            path.display()
        ))
    })
}

/// The OpenSSL context for CQL connections: peer verification on (the driver also checks
/// the node's certificate against the address it connects to), trusting `ca_file` alone when
/// it is set.
pub fn cql_tls_context(
    files: &TlsFiles,
) -> Result<scylla::client::session::TlsContext, StoreError> {
    use openssl::ssl::{SslConnector, SslFiletype, SslMethod};
    use openssl::x509::X509;
    use openssl::x509::store::X509StoreBuilder;
    const WHAT: &str = "CQL TLS";
    let fail =
        |what: &str, e: openssl::error::ErrorStack| StoreError(format!("{WHAT}: {what}: {e}"));
    let mut builder =
        SslConnector::builder(SslMethod::tls_client()).map_err(|e| fail("OpenSSL", e))?;
    if let Some(ca) = &files.ca_file {
        let pem = read(WHAT, "[cluster] cql_tls_ca_file", ca)?;
        let certs = X509::stack_from_pem(&pem)
            .map_err(|e| fail(&format!("{} holds no PEM certificate", ca.display()), e))?;
        if certs.is_empty() {
            return Err(StoreError(format!(
                "{WHAT}: {} holds no PEM certificate",
                ca.display()
            )));
        }
        let mut store = X509StoreBuilder::new().map_err(|e| fail("OpenSSL", e))?;
        for cert in certs {
            store
                .add_cert(cert)
                .map_err(|e| fail("CA certificate", e))?;
        }
        builder.set_cert_store(store.build());
    }
    if let Some((cert, key)) = files.client_pair(WHAT)? {
        read(WHAT, "[cluster] cql_tls_cert_file", cert)?;
        read(WHAT, "[cluster] cql_tls_key_file", key)?;
        builder
            .set_certificate_chain_file(cert)
            .map_err(|e| fail(&format!("client certificate {}", cert.display()), e))?;
        builder
            .set_private_key_file(key, SslFiletype::PEM)
            .map_err(|e| fail(&format!("client key {}", key.display()), e))?;
        builder
            .check_private_key()
            .map_err(|e| fail("the client key does not match the certificate", e))?;
    }
    let config = scylla::client::session::OpenSsl010Config::new(builder);
    Ok(scylla::client::session::TlsContext::OpenSsl010Config(
        config,
    ))
}

/// The Redis client's TLS certificates for a `rediss://` URL, read from `files`.
pub fn redis_tls_certificates(files: &TlsFiles) -> Result<redis::TlsCertificates, StoreError> {
    const WHAT: &str = "redis TLS";
    let root_cert = match &files.ca_file {
        Some(ca) => Some(read(WHAT, "[cluster] redis_tls_ca_file", ca)?),
        None => None,
    };
    let client_tls = match files.client_pair(WHAT)? {
        Some((cert, key)) => Some(redis::ClientTlsConfig {
            client_cert: read(WHAT, "[cluster] redis_tls_cert_file", cert)?,
            client_key: read(WHAT, "[cluster] redis_tls_key_file", key)?,
        }),
        None => None,
    };
    Ok(redis::TlsCertificates {
        client_tls,
        root_cert,
    })
}

/// Whether a failed first contact with Redis is a configuration mistake that retrying cannot
/// fix (wrong or missing password, a certificate that is not trusted, a TLS/plain mismatch)
/// rather than Redis being down or slow; for the former, start-up should stop.
pub fn redis_error_is_fatal(e: &redis::RedisError) -> bool {
    use redis::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::AuthenticationFailed | ErrorKind::InvalidClientConfig
    ) {
        return true;
    }
    if matches!(e.code(), Some("NOAUTH" | "WRONGPASS")) {
        return true;
    }
    if e.is_connection_refusal() || e.is_timeout() {
        return false;
    }
    let text = e.to_string().to_ascii_lowercase();
    ["certificate", "handshake", "tls", "unknownissuer", "ssl"]
        .iter()
        .any(|w| text.contains(w))
}

/// A hint for a CQL connection error: which setting most likely needs a look.
pub fn cql_error_hint(error: &str, tls: bool, auth: bool) -> &'static str {
    let e = error.to_ascii_lowercase();
    if e.contains("authenticat") || e.contains("credentials") || e.contains("password") {
        if auth {
            "Check [cluster] cql_username and cql_password"
        } else {
            "The cluster asks for a login: set [cluster] cql_username and cql_password"
        }
    } else if e.contains("certificate") || e.contains("ssl") || e.contains("tls") {
        "Check [cluster] cql_tls_ca_file (the CA that signed the nodes' certificates) and that \
         the certificates name the addresses connected to"
    } else if tls {
        "Check that the cluster is running, that [cluster] cql_contact_points names its nodes \
         and that they accept TLS on that port"
    } else {
        "Check that the cluster is running and that [cluster] cql_contact_points names its \
         nodes (set [cluster] cql_tls if they require TLS)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cql_login_never_prints_its_password() {
        let a = CqlAuth {
            username: "ipay".into(),
            password: Secret::new("hunter2-long".into()),
        };
        let s = format!("{a:?}");
        assert!(s.contains("ipay") && !s.contains("hunter2"), "{s}");
    }

    #[test]
    fn half_a_client_certificate_is_refused() {
        let f = TlsFiles {
            cert_file: Some("/x/client.pem".into()),
            ..Default::default()
        };
        let e = redis_tls_certificates(&f).unwrap_err();
        assert!(e.0.contains("both"), "{e}");
        assert!(cql_tls_context(&f).is_err());
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let f = TlsFiles {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let e = cql_tls_context(&f).err().map(|e| e.0).unwrap_or_default();
        assert!(
            e.contains("cql_tls_ca_file") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
        let e = redis_tls_certificates(&f).unwrap_err();
        assert!(e.0.contains("redis_tls_ca_file"), "{e}");
    }
}
