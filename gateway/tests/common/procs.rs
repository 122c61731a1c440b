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
