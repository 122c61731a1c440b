//! Real `ipay` processes and the shared test servers, for the multi-process tests.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The `ipay` binary built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_ipay");

/// A service's address from the environment (`IPAY_TEST_CQL_ADDR`, `IPAY_TEST_REDIS_URL`, set
/// by `scripts/test.sh`), or from its script under `scripts/services/` after starting it.
pub fn service(var: &str, script: &str) -> String {
    if let Ok(v) = std::env::var(var)
        && !v.trim().is_empty()
    {
        return v.trim().to_string();
    }
    let path = format!(
        "{}/../scripts/services/{script}",
        env!("CARGO_MANIFEST_DIR")
    );
    let status = Command::new(&path)
        .arg("start")
        .status()
        .unwrap_or_else(|e| panic!("cannot run {path}: {e}"));
    assert!(
        status.success(),
        "{path} start failed; set {var} or see its output"
    );
    let out = Command::new(&path)
        .arg("env")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {path} env: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix(&format!("export {var}="))
                .map(|v| v.trim_matches(['"', '\'']).to_string())
        })
        .unwrap_or_else(|| panic!("{path} env printed no {var}: {text}"))
}

/// A running `ipay serve`; killed when dropped.
pub struct Node {
    pub child: Child,
    pub base: String,
}

impl Node {
    /// SIGKILL: no shutdown hook runs.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd` (an `ipay serve … --listen 127.0.0.1:0`; its stderr as the caller set it),
/// waits for the line naming its address and keeps draining its output so the server never
/// blocks on a full pipe.
pub fn spawn_node(mut cmd: Command) -> Node {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn ipay serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("ipay serve printed nothing").unwrap();
    let base = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();
    std::thread::spawn(move || for _ in lines {});
    Node { child, base }
}

/// Names for [`sandbox_merchant`]: the admin token the nodes were started with, the merchant's
/// and the manifest's names.
pub struct MerchantSpec<'a> {
    pub admin_token: &'a str,
    pub merchant: &'a str,
    pub service: &'a str,
}

/// Creates a merchant through `admin_base`'s admin API and an active sandbox manifest for it;
/// the manifest is activated through `activate_base`, which may be another node of the same
/// cluster (both read the manifest from the shared ledger). Returns (test key, service id).
pub async fn sandbox_merchant(
    http: &reqwest::Client,
    admin_base: &str,
    activate_base: &str,
    spec: MerchantSpec<'_>,
) -> (String, String) {
    let creds: serde_json::Value = http
        .post(format!("{admin_base}/v1/admin/merchants"))
        .bearer_auth(spec.admin_token)
        .json(&serde_json::json!({"name": spec.merchant}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = creds["test_secret_key"].as_str().unwrap().to_string();
    let svc: serde_json::Value = http
        .post(format!("{admin_base}/v1/services"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"name": spec.service, "accepted_channels": ["sandbox"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sid = svc["id"].as_str().unwrap().to_string();
    let act = http
        .patch(format!("{activate_base}/v1/services/{sid}/activate"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(act.status(), reqwest::StatusCode::OK, "activating {sid}");
    (key, sid)
}
