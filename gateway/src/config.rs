//! Configuration: `config/ipay.toml` documents every setting with its default. Values come from
//! the defaults, then the file given with `--config`, then `IPAY_…` environment variables
//! (`IPAY_SERVER__LISTEN=127.0.0.1:9000`: sections and keys joined by `__`; `IPAY_TEST_…` are
//! the test suite's and ignored), then command-line flags.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use ipay_engine::EngineConfig;
use ipay_engine::model::Secret;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Everything `ipay` can be told.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub cluster: ClusterConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub sessions: ipay_engine::session::SessionConfig,
    pub limits: ipay_engine::Limits,
    pub channels: ipay_engine::channel::ChannelsConfig,
    pub webhooks: ipay_engine::webhooks::WebhookConfig,
    pub lastmile: ipay_lastmile::LastMileConfig,
    pub settlement: ipay_engine::settlement::SettlementConfig,
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Loopback by default; `0` as port picks a free one.
    pub listen: SocketAddr,
    /// Largest request body accepted, bytes (larger → 413).
    pub max_body_bytes: usize,
    /// Longest a request may take end to end, ms (longer → 408).
    pub request_timeout_ms: u64,
    /// Requests handled at once; more are refused with 503 at once rather than queued.
    pub max_concurrent_requests: usize,
    /// Longest a client may take to send a request's line and headers once it started, ms;
    /// slower connections are closed without an answer.
    pub header_read_timeout_ms: u64,
    /// Longest a kept-alive connection may wait for its next request, ms; then it is closed.
    pub idle_timeout_ms: u64,
    /// Connections open at once. Past it a new connection gets 503 `connection_limit` with
    /// `Connection: close` and is closed. Keep it below the process's open-file limit
    /// (`ulimit -n`) less what storage and outbound calls use.
    pub max_connections: usize,
    /// Largest request line plus headers, bytes (larger → 431 `header_too_large`).
    pub max_header_bytes: usize,
    /// Longest pause between accepts after repeated accept errors (out of descriptors), ms;
    /// pauses start at 5 ms and double.
    pub accept_backoff_max_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080"
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080))),
            max_body_bytes: 64 * 1024,
            request_timeout_ms: 30_000,
            max_concurrent_requests: 4_096,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_connections: 4_096,
            max_header_bytes: 32 * 1024,
            accept_backoff_max_ms: 1_000,
        }
    }
}

/// Storage back-end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageMode {
    /// One process, durable on local disk (redb). The default.
    #[default]
    Embedded,
    /// Redis + ScyllaDB, shared by several nodes.
    Cluster,
}

/// `[storage]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub mode: StorageMode,
    /// Embedded mode: directory of the ledger file.
    pub data_dir: PathBuf,
    /// Write batches waiting for the ledger writer before requests get 503.
    pub queue_capacity: usize,
    /// Most write batches folded into one durable commit (group commit).
    pub max_group_commit: usize,
    /// Ledger page cache, MiB.
    pub cache_mib: usize,
    /// How often applied writes are made durable in the ledger file and the write-ahead log
    /// behind them deleted, ms.
    pub checkpoint_interval_ms: u64,
    /// Write-ahead log segment size, MiB.
    pub wal_segment_mib: u64,
    /// Also checkpoint after this many MiB of writes since the last one (keeps pauses short).
    pub checkpoint_mib: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            mode: StorageMode::Embedded,
            data_dir: PathBuf::from("./data"),
            queue_capacity: 65_536,
            max_group_commit: 2_048,
            cache_mib: 256,
            checkpoint_interval_ms: 2_000,
            wal_segment_mib: 64,
            checkpoint_mib: 2,
        }
    }
}

/// `[cluster]`: where cluster mode (`storage.mode = "cluster"`) keeps its state, and how to
/// reach it (logins, TLS). `Debug` hides every secret.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `host:port` of one or more ScyllaDB / Cassandra nodes; the rest are discovered.
    pub cql_contact_points: Vec<String>,
    /// Keyspace of the ledger tables (letters, digits, `_`).
    pub keyspace: String,
    /// CQL replication map used when `ipay migrate` creates the keyspace.
    pub replication: String,
    /// Bound on each connection attempt to a node, ms (session set-up gives up after twice this).
    pub cql_connect_timeout_ms: u64,
    /// Bound on each ledger request (read, write batch, page of a scan), ms; beyond it the
    /// request fails with 503 store_unavailable.
    pub cql_request_timeout_ms: u64,
    /// Ledger write batches in flight to the cluster before requests get 503 at once.
    pub max_inflight_batches: usize,
    /// Login name for clusters with authentication on (PasswordAuthenticator); empty: none.
    pub cql_username: String,
    /// Password of `cql_username`. Set it through `IPAY_CLUSTER__CQL_PASSWORD`.
    pub cql_password: Secret,
    /// Connect to the CQL nodes with TLS (also on when any `cql_tls_*_file` is set).
    pub cql_tls: bool,
    /// PEM CA certificate(s) the nodes' certificates must chain to; empty: the system's
    /// trust store. Node certificates must name the node's address (IP SAN).
    pub cql_tls_ca_file: String,
    /// PEM client certificate (chain) for nodes that require one; with `cql_tls_key_file`.
    pub cql_tls_cert_file: String,
    /// PEM private key of `cql_tls_cert_file`.
    pub cql_tls_key_file: String,
    /// Redis for shared hot state (idempotency reservations, leases):
    /// `redis://[user:password@]host:port[/db]`, or `rediss://…` for TLS.
    pub redis_url: String,
    /// With `rediss://`: PEM CA certificate(s) to trust instead of the system's.
    pub redis_tls_ca_file: String,
    /// With `rediss://`: PEM client certificate for servers that ask for one.
    pub redis_tls_cert_file: String,
    /// PEM private key of `redis_tls_cert_file`.
    pub redis_tls_key_file: String,
    /// Shared secret nodes present to each other's `/internal/` routes when forwarding a
    /// session command to its owner. Every node of a cluster needs the same value; empty turns
    /// forwarding off (commands for sessions owned elsewhere then get 503 until the owner's
    /// lease lapses). Set it through `IPAY_CLUSTER__NODE_TOKEN` rather than in a file.
    pub node_token: String,
    /// Base URL other nodes use to reach this one (`http://10.0.0.5:8080`); empty means
    /// `http://<the address it listens on>`.
    pub advertise_url: String,
    /// How long a node keeps a payment session after its last command, ms. A node that dies
    /// holds its sessions at most this long.
    pub session_lease_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            cql_contact_points: vec!["127.0.0.1:9042".into()],
            keyspace: "ipay".into(),
            replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}".into(),
            cql_connect_timeout_ms: 5_000,
            cql_request_timeout_ms: 1_000,
            max_inflight_batches: 4_096,
            cql_username: String::new(),
            cql_password: Secret::new(String::new()),
            cql_tls: false,
            cql_tls_ca_file: String::new(),
            cql_tls_cert_file: String::new(),
            cql_tls_key_file: String::new(),
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_tls_ca_file: String::new(),
            redis_tls_cert_file: String::new(),
            redis_tls_key_file: String::new(),
            node_token: String::new(),
            advertise_url: String::new(),
            session_lease_ms: 5_000,
        }
    }
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = if self.node_token.is_empty() {
            ""
        } else {
            "***"
        };
        f.debug_struct("ClusterConfig")
            .field("cql_contact_points", &self.cql_contact_points)
            .field("keyspace", &self.keyspace)
            .field("cql_username", &self.cql_username)
            .field("cql_password", &self.cql_password)
            .field("cql_tls", &self.cql_tls)
            .field("cql_tls_ca_file", &self.cql_tls_ca_file)
            .field("cql_tls_cert_file", &self.cql_tls_cert_file)
            .field("cql_tls_key_file", &self.cql_tls_key_file)
            .field("redis_url", &redact_url(&self.redis_url))
            .field("redis_tls_ca_file", &self.redis_tls_ca_file)
            .field("redis_tls_cert_file", &self.redis_tls_cert_file)
            .field("redis_tls_key_file", &self.redis_tls_key_file)
            .field("node_token", &token)
            .field("advertise_url", &self.advertise_url)
            .finish_non_exhaustive()
    }
}

/// `url` with its password replaced by `***` (`rediss://:***@host:6380`); a URL that does
/// not parse is not shown at all, since where its password sits is unknown.
fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<not a URL>".into(),
    }
}

/// A path setting: empty means "not set".
fn path(s: &str) -> Option<PathBuf> {
    let s = s.trim();
    (!s.is_empty()).then(|| PathBuf::from(s))
}

/// `[admin]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer token for `/v1/admin/*`. Empty disables the admin API. Set it through
    /// `IPAY_ADMIN__TOKEN` rather than the file where possible.
    pub token: String,
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `ipay_engine=debug,info`. `RUST_LOG` wins when set.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

impl Config {
    /// Defaults, then the file (if given), then `IPAY_…` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Config, String> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            if !f.exists() {
                return Err(format!("config file {} does not exist", f.display()));
            }
            fig = fig.merge(Toml::file(f));
        }
        // Every setting lives in a section, so only `IPAY_<SECTION>__<KEY>` names are ours;
        // others (`IPAY_TEST_CQL_ADDR`, `IPAY_SERVICES_DIR`, `IPAY_CASSANDRA_…` of the test
        // scripts) belong to other tools and are left alone.
        let env = Env::prefixed("IPAY_")
            .filter(|k| {
                let k = k.as_str().to_ascii_lowercase();
                k.contains("__") && !k.starts_with("test_")
            })
            .split("__");
        fig = fig.merge(env);
        fig.extract()
            .map_err(|e| format!("invalid configuration: {e}"))
    }

    /// The CQL ledger's settings (cluster mode and `ipay migrate`).
    pub fn cql(&self) -> ipay_engine::store::cql::CqlConfig {
        let c = &self.cluster;
        ipay_engine::store::cql::CqlConfig {
            contact_points: c.cql_contact_points.clone(),
            keyspace: c.keyspace.clone(),
            replication: c.replication.clone(),
            connect_timeout: std::time::Duration::from_millis(c.cql_connect_timeout_ms.max(1)),
            request_timeout: std::time::Duration::from_millis(c.cql_request_timeout_ms.max(1)),
            max_inflight_batches: c.max_inflight_batches.max(1),
            idempotency_ttl: std::time::Duration::from_secs(
                (self.limits.idempotency_ttl_hours.max(1) as u64).saturating_mul(3600),
            ),
            auth: (!c.cql_username.is_empty()).then(|| ipay_engine::store::tls::CqlAuth {
                username: c.cql_username.clone(),
                password: c.cql_password.clone(),
            }),
            tls: self.cql_tls(),
        }
    }

    /// TLS for the CQL connections: on with `cql_tls` or when a TLS file is named.
    fn cql_tls(&self) -> Option<ipay_engine::store::tls::TlsFiles> {
        let c = &self.cluster;
        let files = ipay_engine::store::tls::TlsFiles {
            ca_file: path(&c.cql_tls_ca_file),
            cert_file: path(&c.cql_tls_cert_file),
            key_file: path(&c.cql_tls_key_file),
        };
        (c.cql_tls || !files.is_empty()).then_some(files)
    }

    /// TLS files for a `rediss://` `redis_url`.
    pub fn redis_tls(&self) -> ipay_engine::store::tls::TlsFiles {
        let c = &self.cluster;
        ipay_engine::store::tls::TlsFiles {
            ca_file: path(&c.redis_tls_ca_file),
            cert_file: path(&c.redis_tls_cert_file),
            key_file: path(&c.redis_tls_key_file),
        }
    }

    /// The engine's part.
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            sessions: self.sessions.clone(),
            limits: self.limits.clone(),
            url_policy: self.webhooks.url_policy(),
        }
    }
}

#[cfg(test)]
// figment's test jail returns its (large) error type by value; fine in tests.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn only_sectioned_ipay_variables_are_settings() {
        figment::Jail::expect_with(|jail| {
            // Other tools' variables are ignored…
            jail.set_env("IPAY_SERVICES_DIR", "/tmp/x");
            jail.set_env("IPAY_CASSANDRA_COMMITLOG_SYNC", "batch");
            jail.set_env("IPAY_TEST_CQL_ADDR", "127.0.0.1:1");
            jail.set_env("IPAY_SERVER__REQUEST_TIMEOUT_MS", "1234");
            let cfg = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(cfg.server.request_timeout_ms, 1234);
            // …but a misspelt setting still stops the start.
            jail.set_env("IPAY_SERVER__LISEN", "127.0.0.1:1");
            assert!(Config::load(None).unwrap_err().contains("lisen"));
            Ok(())
        });
    }

    #[test]
    fn the_shipped_config_file_parses_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/ipay.toml");
        let from_file: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(&path))
            .extract()
            .unwrap();
        let defaults = Config::default();
        assert_eq!(
            serde_json::to_value(&from_file).unwrap(),
            serde_json::to_value(&defaults).unwrap()
        );
    }

    /// Every setting the structs know (with a default other than "unset") must be written out
    /// in `config/ipay.toml`, so the file really lists every setting.
    #[test]
    fn the_shipped_config_file_lists_every_setting() {
        fn missing(
            defaults: &serde_json::Value,
            file: &serde_json::Value,
            at: &str,
            out: &mut Vec<String>,
        ) {
            let Some(d) = defaults.as_object() else {
                return;
            };
            for (k, v) in d {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                match file.get(k) {
                    // An optional setting that is unset by default may stay commented out.
                    None if v.is_null() => {}
                    None => out.push(path),
                    Some(f) if v.is_object() => missing(v, f, &path, out),
                    Some(_) => {}
                }
            }
        }
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/ipay.toml");
        let file: serde_json::Value = Figment::from(Toml::file(&path)).extract().unwrap();
        let defaults = serde_json::to_value(Config::default()).unwrap();
        let mut out = Vec::new();
        missing(&defaults, &file, "", &mut out);
        assert!(out.is_empty(), "config/ipay.toml does not list: {out:?}");
    }

    #[test]
    fn the_cluster_example_parses_and_selects_cluster_mode() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/cluster.toml");
        let cfg: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(&path))
            .extract()
            .unwrap();
        assert_eq!(cfg.storage.mode, StorageMode::Cluster);
        let cql = cfg.cql();
        assert_eq!(cql.contact_points, vec!["127.0.0.1:9042".to_string()]);
        assert_eq!(cql.keyspace, "ipay");
        assert_eq!(cql.request_timeout, std::time::Duration::from_secs(1));
        assert_eq!(
            cql.idempotency_ttl,
            std::time::Duration::from_secs(24 * 3600)
        );
        assert_eq!(cfg.cluster.redis_url, "redis://127.0.0.1:6379");
    }

    #[test]
    fn cluster_secrets_never_show_in_debug_output() {
        let mut cfg = Config::default();
        cfg.cluster.redis_url = "rediss://ipay:redis-pass-1@10.0.0.7:6380/2".into();
        cfg.cluster.cql_username = "ipay".into();
        cfg.cluster.cql_password = Secret::new("cql-pass-2".into());
        cfg.cluster.node_token = "node-token-3".into();
        let shown = format!("{cfg:?}");
        for secret in ["redis-pass-1", "cql-pass-2", "node-token-3"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("rediss://ipay:***@10.0.0.7:6380/2"),
            "{shown}"
        );
        assert!(
            format!("{:?}", cfg.cql()).contains("ipay")
                && !format!("{:?}", cfg.cql()).contains("cql-pass-2")
        );
    }

    #[test]
    fn cql_tls_is_on_with_the_switch_or_any_file() {
        let mut cfg = Config::default();
        assert!(cfg.cql().tls.is_none() && cfg.cql().auth.is_none());
        cfg.cluster.cql_tls_ca_file = "/etc/ipay/ca.pem".into();
        let tls = cfg.cql().tls.unwrap();
        assert_eq!(tls.ca_file, Some(PathBuf::from("/etc/ipay/ca.pem")));
        cfg.cluster.cql_tls_ca_file.clear();
        cfg.cluster.cql_tls = true;
        assert!(cfg.cql().tls.unwrap().is_empty());
        cfg.cluster.cql_username = "ipay".into();
        assert_eq!(cfg.cql().auth.unwrap().username, "ipay");
    }

    #[test]
    fn unknown_cluster_keys_are_rejected() {
        // In a jail: another test sets IPAY_ variables, and the environment is read too.
        figment::Jail::expect_with(|_| {
            let dir = tempfile::tempdir().unwrap();
            let f = dir.path().join("c.toml");
            std::fs::write(&f, "[cluster]\ncql_contact_point = \"x:1\"\n").unwrap();
            let err = Config::load(Some(&f)).unwrap_err();
            assert!(err.contains("cql_contact_point"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_rejected() {
        // In a jail: another test sets IPAY_ variables, and the environment is read too.
        figment::Jail::expect_with(|_| {
            let dir = tempfile::tempdir().unwrap();
            let f = dir.path().join("c.toml");
            std::fs::write(&f, "[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap();
            let err = Config::load(Some(&f)).unwrap_err();
            assert!(err.contains("lisen"), "{err}");
            Ok(())
        });
    }
}
