//! A real `bitcoind -regtest` for tests.
//!
//! [`Bitcoind::start`] finds the node with `scripts/install-bitcoind` (which honours
//! `BITCOIND_EXE`), starts it on a fresh temporary datadir with free ports for RPC, P2P and the
//! two ZMQ notifications (`hashblock`, `sequence`), and returns once its RPC answers. The node is
//! killed and its datadir removed on drop.
//!
//! ```no_run
//! use jdc_tests::bitcoind::Bitcoind;
//! # fn main() -> anyhow::Result<()> {
//! let node = Bitcoind::start()?;
//! node.create_wallet("miner")?;
//! node.generate(101)?;
//! let addr = node.new_address()?;
//! let txid = node.send_to_address(&addr, 100_000)?;
//! std::fs::write("jdc.toml", node.config_toml())?;
//! # let _ = txid; Ok(()) }
//! ```
//!
//! Everything here is blocking (std processes and the blocking `bitcoincore-rpc` client); from
//! async tests call it directly on a multi-threaded runtime or through `spawn_blocking`.

use anyhow::{anyhow, bail, Context};
use bitcoincore_rpc::bitcoin::{Address, Amount, BlockHash, Txid};
use bitcoincore_rpc::{Auth, Client, RpcApi};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long bitcoind may take to answer RPC after start.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful `stop` may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts with fresh ports when bitcoind cannot bind one (another test took it meanwhile).
const START_ATTEMPTS: usize = 3;

/// A free TCP port on 127.0.0.1, below the kernel's ephemeral range (32768 and up): a port
/// taken from that range and released can be handed out again at once as the source port of
/// any outgoing connection (the tests make thousands), and the process meant to bind it then
/// fails. Candidates are spread by process id and a counter, and each is checked bindable.
/// Another process may still take it before it is used; callers that bind it should retry on
/// conflict.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    const LOW: u32 = 10_000;
    const SPAN: u32 = 22_000;
    let seed = std::process::id().wrapping_mul(2_654_435_761);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = LOW + seed.wrapping_add(n.wrapping_mul(7_919)) % SPAN;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
}

/// The folder holding `bitcoind` and `bitcoin-cli`, from `scripts/install-bitcoind` (its last
/// stdout line). Computed once per test process.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    static DIR: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut guard = DIR.lock().map_err(|_| anyhow!("bin_dir lock poisoned"))?;
    if let Some(dir) = guard.as_ref() {
        return Ok(dir.clone());
    }
    let script = workspace_root().join("scripts/install-bitcoind");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed with {}", script.display(), out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| PathBuf::from(l.trim()))
        .ok_or_else(|| anyhow!("{} printed no folder", script.display()))?;
    if !dir.join("bitcoind").exists() {
        bail!("{} has no bitcoind", dir.display());
    }
    *guard = Some(dir.clone());
    Ok(dir)
}

/// The workspace root (parent of this crate's folder).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// How to start the node.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Authenticate RPC with this user and password (written to a password file for the
    /// config) instead of the cookie file.
    pub user_password: Option<(String, String)>,
    /// Extra `bitcoind` arguments, e.g. `-debug=zmq`.
    pub extra_args: Vec<String>,
}

/// A running regtest bitcoind, killed on drop.
pub struct Bitcoind {
    child: Option<Child>,
    bin_dir: PathBuf,
    /// Temporary folder owned by this node: the datadir and the password file live in it.
    root: PathBuf,
    datadir: PathBuf,
    rpc_port: u16,
    p2p_port: u16,
    zmq_hashblock_port: u16,
    zmq_sequence_port: u16,
    options: Options,
    default_wallet: Mutex<Option<String>>,
}

impl std::fmt::Debug for Bitcoind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bitcoind")
            .field("datadir", &self.datadir)
            .field("rpc_port", &self.rpc_port)
            .field("zmq_hashblock", &self.zmq_hashblock())
            .field("zmq_sequence", &self.zmq_sequence())
            .finish()
    }
}

impl Bitcoind {
    /// Starts a node with cookie authentication.
    /// A node with a wallet `miner` holding 101 blocks of coinbases (one spendable), and that
    /// wallet's address.
    pub fn start_funded() -> anyhow::Result<(Bitcoind, Address)> {
        let node = Bitcoind::start()?;
        node.create_wallet("miner")?;
        let funding = node.new_address()?;
        node.generate_to(&funding, 101)?;
        Ok((node, funding))
    }

    pub fn start() -> anyhow::Result<Bitcoind> {
        Self::start_with(Options::default())
    }

    /// Starts a node with the given options.
    pub fn start_with(options: Options) -> anyhow::Result<Bitcoind> {
        let bin_dir = bin_dir()?;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let root = std::env::temp_dir().join(format!(
            "jdc-bitcoind-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            jdc_shared::time::now_micros()
        ));
        let datadir = root.join("data");
        std::fs::create_dir_all(&datadir)
            .with_context(|| format!("creating {}", datadir.display()))?;
        if let Some((_, password)) = &options.user_password {
            std::fs::write(root.join("rpc-password"), password)?;
        }
        let mut node = Bitcoind {
            child: None,
            bin_dir,
            root,
            datadir,
            rpc_port: 0,
            p2p_port: 0,
            zmq_hashblock_port: 0,
            zmq_sequence_port: 0,
            options,
            default_wallet: Mutex::new(None),
        };
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            node.rpc_port = free_port();
            node.p2p_port = free_port();
            node.zmq_hashblock_port = free_port();
            node.zmq_sequence_port = free_port();
            match node.spawn_and_wait() {
                Ok(()) => return Ok(node),
                Err(e) => {
                    node.kill();
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("bitcoind did not start")))
    }

    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "-regtest".to_string(),
            format!("-datadir={}", self.datadir.display()),
            format!("-rpcport={}", self.rpc_port),
            "-rpcbind=127.0.0.1".into(),
            "-rpcallowip=127.0.0.1".into(),
            format!("-port={}", self.p2p_port),
            "-listen=0".into(),
            "-server=1".into(),
            "-txindex=0".into(),
            "-fallbackfee=0.0002".into(),
            "-printtoconsole=0".into(),
            "-dnsseed=0".into(),
            "-fixedseeds=0".into(),
            "-upnp=0".into(),
            "-natpmp=0".into(),
            "-rpcthreads=8".into(),
            format!("-zmqpubhashblock={}", self.zmq_hashblock()),
            format!("-zmqpubsequence={}", self.zmq_sequence()),
        ];
        if let Some((user, password)) = &self.options.user_password {
            args.push(format!("-rpcuser={user}"));
            args.push(format!("-rpcpassword={password}"));
        }
        args.extend(self.options.extra_args.iter().cloned());
        args
    }

    fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(self.cookie_file());
        let stderr_path = self.root.join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path)
            .with_context(|| format!("creating {}", stderr_path.display()))?;
        let child = Command::new(self.bin_dir.join("bitcoind"))
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("spawning bitcoind")?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                    bail!(
                        "bitcoind exited with {status} during start: {}\n{}",
                        stderr.trim(),
                        self.log_tail(20)
                    );
                }
            }
            if self.auth_ready() {
                if let Ok(client) = self.rpc() {
                    if client.get_blockchain_info().is_ok() {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "bitcoind RPC did not answer within {START_TIMEOUT:?}\n{}",
                    self.log_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn auth_ready(&self) -> bool {
        self.options.user_password.is_some() || self.cookie_file().exists()
    }

    /// The last `n` lines of the node's `debug.log`, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let log =
            std::fs::read_to_string(self.datadir.join("regtest/debug.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the node gracefully (RPC `stop`, then waits; kills it after a deadline).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if self.child.is_none() {
            return Ok(());
        }
        let _ = self.rpc().map(|c| c.stop());
        let deadline = Instant::now() + STOP_TIMEOUT;
        while let Some(child) = self.child.as_mut() {
            if child.try_wait()?.is_some() {
                self.child = None;
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                bail!("bitcoind did not stop within {STOP_TIMEOUT:?}; killed it");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Starts the node again on the same datadir and ports (after [`Bitcoind::stop`]), waiting
    /// for its RPC. Wallets created before are loaded again.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.spawn_and_wait()?;
        let wallet = self
            .default_wallet
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .clone();
        if let Some(name) = wallet {
            let _ = self.rpc()?.load_wallet(&name);
        }
        Ok(())
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    // === Accessors ===

    /// The folder holding `bitcoind` and `bitcoin-cli`.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The node's datadir (network files are under `regtest/`).
    pub fn datadir(&self) -> &Path {
        &self.datadir
    }

    /// RPC URL, e.g. `http://127.0.0.1:18443`.
    pub fn rpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rpc_port)
    }

    /// RPC port.
    pub fn rpc_port(&self) -> u16 {
        self.rpc_port
    }

    /// P2P port (bound on 127.0.0.1 only; `-listen=0`).
    pub fn p2p_port(&self) -> u16 {
        self.p2p_port
    }

    /// Cookie file (exists only with cookie authentication).
    pub fn cookie_file(&self) -> PathBuf {
        self.datadir.join("regtest/.cookie")
    }

    /// RPC user and password when started with [`Options::user_password`].
    pub fn user_password(&self) -> Option<(&str, &str)> {
        self.options
            .user_password
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// File holding the RPC password (only with [`Options::user_password`]).
    pub fn password_file(&self) -> Option<PathBuf> {
        self.options
            .user_password
            .as_ref()
            .map(|_| self.root.join("rpc-password"))
    }

    /// `zmqpubhashblock` endpoint.
    pub fn zmq_hashblock(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.zmq_hashblock_port)
    }

    /// `zmqpubsequence` endpoint.
    pub fn zmq_sequence(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.zmq_sequence_port)
    }

    fn auth(&self) -> Auth {
        match &self.options.user_password {
            Some((u, p)) => Auth::UserPass(u.clone(), p.clone()),
            None => Auth::CookieFile(self.cookie_file()),
        }
    }

    /// An RPC client on the node's base URL (bitcoind routes wallet calls to the only loaded
    /// wallet).
    pub fn rpc(&self) -> anyhow::Result<Client> {
        Client::new(&self.rpc_url(), self.auth()).context("creating RPC client")
    }

    /// An RPC client for the wallet `name`.
    pub fn wallet_rpc(&self, name: &str) -> anyhow::Result<Client> {
        Client::new(&format!("{}/wallet/{name}", self.rpc_url()), self.auth())
            .context("creating wallet RPC client")
    }

    // === Helpers ===

    /// Creates (or loads) wallet `name` and makes it the default for the helpers below.
    pub fn create_wallet(&self, name: &str) -> anyhow::Result<()> {
        let rpc = self.rpc()?;
        if let Err(e) = rpc.create_wallet(name, None, None, None, None) {
            rpc.load_wallet(name).with_context(|| {
                format!("createwallet {name} failed ({e}) and so did loadwallet")
            })?;
        }
        *self
            .default_wallet
            .lock()
            .map_err(|_| anyhow!("poisoned"))? = Some(name.to_string());
        Ok(())
    }

    /// Client of the default wallet, creating a wallet `default` if none exists yet.
    fn default_wallet_rpc(&self) -> anyhow::Result<Client> {
        let current = self
            .default_wallet
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .clone();
        let name = match current {
            Some(n) => n,
            None => {
                self.create_wallet("default")?;
                "default".to_string()
            }
        };
        self.wallet_rpc(&name)
    }

    /// A new address of the default wallet.
    pub fn new_address(&self) -> anyhow::Result<Address> {
        let addr = self
            .default_wallet_rpc()?
            .get_new_address(None, None)
            .context("getnewaddress")?;
        addr.require_network(bitcoincore_rpc::bitcoin::Network::Regtest)
            .context("address of another network")
    }

    /// Mines `n` blocks paying a new address of the default wallet.
    pub fn generate(&self, n: u64) -> anyhow::Result<Vec<BlockHash>> {
        let addr = self.new_address()?;
        self.generate_to(&addr, n)
    }

    /// Mines `n` blocks paying `addr`.
    pub fn generate_to(&self, addr: &Address, n: u64) -> anyhow::Result<Vec<BlockHash>> {
        self.rpc()?
            .generate_to_address(n, addr)
            .context("generatetoaddress")
    }

    /// Sends `sats` from the default wallet to `addr`.
    pub fn send_to_address(&self, addr: &Address, sats: u64) -> anyhow::Result<Txid> {
        // The wallet learns of newly mined (matured) coins asynchronously after
        // `generatetoaddress` returns: retry "Insufficient funds" for a while.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let sent = self.default_wallet_rpc()?.send_to_address(
                addr,
                Amount::from_sat(sats),
                None,
                None,
                None,
                None,
                None,
                None,
            );
            match sent {
                Err(bitcoincore_rpc::Error::JsonRpc(bitcoincore_rpc::jsonrpc::Error::Rpc(e)))
                    if e.code == -6 && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => return other.context("sendtoaddress"),
            }
        }
    }

    /// Sends `sats` from the default wallet to `addr` paying `sat_per_vb` (the wallet's funds
    /// must be spendable already: see [`Bitcoind::send_to_address`]).
    pub fn send_with_fee_rate(
        &self,
        addr: &Address,
        sats: u64,
        sat_per_vb: u64,
    ) -> anyhow::Result<Txid> {
        use serde_json::json;
        self.default_wallet_rpc()?
            .call(
                "sendtoaddress",
                &[
                    json!(addr.to_string()),
                    json!(Amount::from_sat(sats).to_btc()),
                    json!(""),
                    json!(""),
                    json!(false),
                    json!(true),
                    json!(null),
                    json!("unset"),
                    json!(false),
                    json!(sat_per_vb),
                ],
            )
            .context("sendtoaddress with fee_rate")
    }

    /// Runs `bitcoin-cli` against this node and returns its trimmed stdout.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = Command::new(self.bin_dir.join("bitcoin-cli"));
        cmd.arg("-regtest")
            .arg(format!("-datadir={}", self.datadir.display()))
            .arg(format!("-rpcport={}", self.rpc_port));
        if let Some((u, p)) = &self.options.user_password {
            cmd.arg(format!("-rpcuser={u}"))
                .arg(format!("-rpcpassword={p}"));
        }
        let out = cmd.args(args).output().context("running bitcoin-cli")?;
        if !out.status.success() {
            bail!(
                "bitcoin-cli {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    // === Configuration for jdc processes ===

    /// `(key, value)` pairs of the `[bitcoind]` section pointing at this node; values are
    /// TOML literals (strings quoted).
    pub fn config_pairs(&self) -> Vec<(String, String)> {
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let mut pairs = vec![("rpc_url".to_string(), q(&self.rpc_url()))];
        match (&self.options.user_password, self.password_file()) {
            (Some((user, _)), Some(file)) => {
                pairs.push(("rpc_user".into(), q(user)));
                pairs.push(("rpc_password_file".into(), q(&file.display().to_string())));
            }
            _ => pairs.push((
                "rpc_cookie_file".into(),
                q(&self.cookie_file().display().to_string()),
            )),
        }
        pairs.push(("zmq_hashblock".into(), q(&self.zmq_hashblock())));
        pairs.push(("zmq_sequence".into(), q(&self.zmq_sequence())));
        pairs
    }

    /// The `[bitcoind]` section of a jdc config file pointing at this node.
    pub fn config_toml(&self) -> String {
        let mut s = String::from("[bitcoind]\n");
        for (k, v) in self.config_pairs() {
            s.push_str(&format!("{k} = {v}\n"));
        }
        s
    }

    /// The same settings as `--set bitcoind.KEY=VALUE` arguments (flag and value interleaved).
    pub fn set_args(&self) -> Vec<String> {
        self.config_pairs()
            .into_iter()
            .flat_map(|(k, v)| ["--set".to_string(), format!("bitcoind.{k}={v}")])
            .collect()
    }
}

impl Drop for Bitcoind {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoincore_rpc::bitcoin::Network;

    #[test]
    fn starts_mines_sends_and_cleans_up() {
        let node = Bitcoind::start().unwrap();
        let info = node.rpc().unwrap().get_blockchain_info().unwrap();
        assert_eq!(info.chain, Network::Regtest);
        node.create_wallet("w").unwrap();
        let hashes = node.generate(101).unwrap();
        assert_eq!(hashes.len(), 101);
        let addr = node.new_address().unwrap();
        let txid = node.send_to_address(&addr, 50_000).unwrap();
        let mempool = node.rpc().unwrap().get_raw_mempool().unwrap();
        assert_eq!(mempool, vec![txid]);
        assert_eq!(node.cli(&["getblockcount"]).unwrap(), "101");
        let toml = node.config_toml();
        assert!(toml.contains(&node.zmq_sequence()), "{toml}");
        assert!(toml.contains(".cookie"), "{toml}");
        let root = node.root.clone();
        assert!(root.exists());
        drop(node);
        assert!(!root.exists());
    }

    #[test]
    fn user_password_and_restart() {
        let mut node = Bitcoind::start_with(Options {
            user_password: Some(("jdc".into(), "s3cret".into())),
            ..Options::default()
        })
        .unwrap();
        assert!(node.config_toml().contains("rpc_password_file"));
        let file = node.password_file().unwrap();
        assert_eq!(std::fs::read_to_string(file).unwrap(), "s3cret");
        node.generate(3).unwrap();
        node.restart().unwrap();
        assert!(node.is_running());
        assert_eq!(node.rpc().unwrap().get_block_count().unwrap(), 3);
        node.stop().unwrap();
        assert!(!node.is_running());
    }
}
