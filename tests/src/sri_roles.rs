//! SRI's reference roles as test peers (built by scripts/install-translator and
//! scripts/install-sv2-roles): where they are, and a `jd_client_sv2` in solo mode on the
//! template-watcher's Template Distribution server.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jdc_shared::sv2::AuthorityKeys;

use crate::bitcoind::free_port;
use crate::stack::{Proc, Stack};
use crate::wait_until;

/// The binary named by the environment variable `var`, else the one cached at
/// `~/.cache/jdc-tools/<cached>`, if any.
pub fn installed(var: &str, cached: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        return Some(PathBuf::from(p));
    }
    let p = PathBuf::from(std::env::var_os("HOME")?)
        .join(".cache/jdc-tools")
        .join(cached);
    p.exists().then_some(p)
}

/// `jd_client_sv2` 0.6.0 (`JDCTEST_JD_CLIENT` or its cached test build).
pub fn jd_client() -> Option<PathBuf> {
    installed(
        "JDCTEST_JD_CLIENT",
        "jd_client_sv2-0.6.0-test/bin/jd_client_sv2",
    )
}

/// Waits until `needle` stands `times` times in the log file `log` (these roles log to
/// stdout, which the log file holds).
pub fn wait_for_line(
    log: &Path,
    needle: &str,
    times: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    wait_until(
        &format!("{times}× {needle:?} in {}", log.display()),
        timeout,
        || {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            Ok((text.matches(needle).count() >= times).then_some(()))
        },
    )
}

/// A running `jd_client_sv2` in solo mode.
pub struct SoloJdClient {
    /// The process (killed on drop).
    pub proc: Proc,
    /// Its SV2 port for miners.
    pub port: u16,
    /// Its authority public key, for miners.
    pub public_key: String,
}

/// Starts `program` (`jd_client_sv2`) in solo mode in `stack`'s folder, paying
/// `reward_script` (an SRI descriptor, e.g. `raw(51)`), with templates from the TDP server at
/// `tdp` (key `tdp_key`); returns once it accepts miners.
pub fn start_solo_jd_client(
    program: &Path,
    stack: &Stack,
    tdp: &str,
    tdp_key: &str,
    reward_script: &str,
    shares_per_minute: f32,
) -> anyhow::Result<SoloJdClient> {
    let keys = AuthorityKeys::generate();
    let port = free_port();
    let config = stack.dir.join("jd-client.toml");
    std::fs::write(
        &config,
        format!(
            r#"listening_address = "127.0.0.1:{port}"
max_supported_version = 2
min_supported_version = 2
authority_public_key = "{public}"
authority_secret_key = "{secret}"
cert_validity_sec = 3600
shares_per_minute = {shares_per_minute:?}
share_batch_size = 1
mode = "SOLOMINING"
jdc_signature = "sri-jdc"
coinbase_reward_script = "{reward_script}"
upstreams = []

[template_provider_type.Sv2Tp]
address = "{tdp}"
public_key = "{tdp_key}"
"#,
            public = keys.public_key_string(),
            secret = keys.secret_key_string(),
        ),
    )?;
    let proc = Proc::spawn(
        "jd-client",
        program,
        &["-c".into(), config.display().to_string()],
        &[],
        &stack.dir,
    )?;
    wait_for_line(
        &stack.dir.join("jd-client.log"),
        "ready to accept connections",
        1,
        Duration::from_secs(30),
    )?;
    Ok(SoloJdClient {
        proc,
        port,
        public_key: keys.public_key_string(),
    })
}
