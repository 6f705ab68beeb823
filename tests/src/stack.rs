//! Runs the jdc binaries as real processes against a [`Bitcoind`]: one config file, free ports,
//! captured output, and helpers to wait for log lines and sim-miner events.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use crate::bitcoind::{free_port, Bitcoind};

/// The folder holding the workspace's built binaries (`target/<profile>`), found from the
/// running test executable (`target/<profile>/deps/<test>`).
pub fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    let mut dir = exe.parent().map(Path::to_path_buf);
    while let Some(d) = dir {
        if d.join("jdc-declarator").exists() {
            return Ok(d);
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    bail!(
        "jdc binaries not found above {}: run `cargo build --workspace --bins` first (scripts/test does)",
        exe.display()
    )
}

/// Output lines of a process, shared with the threads reading its pipes.
#[derive(Default)]
struct Lines {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
}

impl Lines {
    fn push(&self, line: String) {
        if let Ok(mut l) = self.lines.lock() {
            l.push(line);
        }
        self.grew.notify_all();
    }

    /// Waits until a line after `from` satisfies `pred`; returns its index and text.
    fn wait(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<(usize, String)> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lines.lock().ok()?;
        loop {
            if let Some((i, l)) = guard.iter().enumerate().skip(from).find(|(_, l)| pred(l)) {
                return Some((i, l.clone()));
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            guard = self.grew.wait_timeout(guard, deadline - now).ok()?.0;
        }
    }

    fn snapshot(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// A running process with captured stdout and stderr (each line also written to a log file).
pub struct Proc {
    name: String,
    child: Child,
    stdout: Arc<Lines>,
    stderr: Arc<Lines>,
    log_path: PathBuf,
}

impl Proc {
    /// Spawns `program` with `args`, logging to `<log_dir>/<name>.log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log_dir: &Path,
    ) -> anyhow::Result<Proc> {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env(
                "RUST_LOG",
                std::env::var("JDCTEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("JDC_NETWORK");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", program.display()))?;
        let log_path = log_dir.join(format!("{name}.log"));
        let log = Arc::new(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .with_context(|| format!("opening {}", log_path.display()))?,
        ));
        let stdout = Arc::new(Lines::default());
        let stderr = Arc::new(Lines::default());
        if let Some(out) = child.stdout.take() {
            pipe(out, stdout.clone(), log.clone(), "out");
        }
        if let Some(err) = child.stderr.take() {
            pipe(err, stderr.clone(), log, "err");
        }
        Ok(Proc {
            name: name.to_string(),
            child,
            stdout,
            stderr,
            log_path,
        })
    }

    /// Name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a stderr (log) line containing `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        self.stderr
            .wait(0, timeout, |l| l.contains(needle))
            .map(|(_, l)| l)
            .ok_or_else(|| {
                anyhow!(
                    "{}: no log line containing {needle:?} within {timeout:?}; see {}",
                    self.name,
                    self.log_path.display()
                )
            })
    }

    /// Number of stderr lines so far (to wait for lines after this point).
    pub fn log_len(&self) -> usize {
        self.stderr.snapshot().len()
    }

    /// Waits for a stderr line after position `from` containing `needle`.
    pub fn wait_for_log_after(
        &self,
        from: usize,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        self.stderr
            .wait(from, timeout, |l| l.contains(needle))
            .map(|(_, l)| l)
            .ok_or_else(|| {
                anyhow!(
                    "{}: no new log line containing {needle:?} within {timeout:?}; see {}",
                    self.name,
                    self.log_path.display()
                )
            })
    }

    /// All stderr lines so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.stderr.snapshot()
    }

    /// stdout lines parsed as JSON (sim-miner events); other lines skipped.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.stdout
            .snapshot()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for a JSON stdout event for which `pred` holds, at or after event line `from`.
    pub fn wait_for_event(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<(usize, serde_json::Value)> {
        self.stdout
            .wait(from, timeout, |l| {
                serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| pred(&v))
            })
            .and_then(|(i, l)| serde_json::from_str(&l).ok().map(|v| (i, v)))
            .ok_or_else(|| {
                anyhow!(
                    "{}: expected event not seen within {timeout:?}; see {}",
                    self.name,
                    self.log_path.display()
                )
            })
    }

    /// Number of stdout lines so far.
    pub fn stdout_len(&self) -> usize {
        self.stdout.snapshot().len()
    }

    /// SIGKILL (like `kill -9`) and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to `timeout` for the exit status (SIGKILL after).
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        None
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                // Give the pipe threads a moment to drain what the process wrote last.
                let _ = self
                    .stderr
                    .wait(usize::MAX, Duration::from_millis(100), |_| false);
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{} did not exit within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Resident set size in KiB from /proc.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn pipe(
    stream: impl std::io::Read + Send + 'static,
    lines: Arc<Lines>,
    log: Arc<Mutex<std::fs::File>>,
    tag: &'static str,
) {
    std::thread::spawn(move || {
        use std::io::Write;
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut f) = log.lock() {
                let _ = writeln!(f, "[{tag}] {line}");
            }
            lines.push(line);
        }
    });
}

/// Free ports of one stack.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// watcher bus stream.
    pub watcher: u16,
    /// selector bus stream.
    pub selector: u16,
    /// declarator bus stream.
    pub declarator: u16,
    /// SV2 downstream port.
    pub sv2: u16,
    /// Stratum V1 downstream port.
    pub sv1: u16,
    /// metrics HTTP port.
    pub metrics: u16,
}

impl Ports {
    /// Picks free ports.
    pub fn free() -> Ports {
        Ports {
            watcher: free_port(),
            selector: free_port(),
            declarator: free_port(),
            sv2: free_port(),
            sv1: free_port(),
            metrics: free_port(),
        }
    }
}

/// One jdc stack (config file, key dir, processes) for a test.
pub struct Stack {
    /// Folder of the config, keys and logs.
    pub dir: PathBuf,
    /// The config file.
    pub config: PathBuf,
    /// Ports in use.
    pub ports: Ports,
    bin: PathBuf,
    procs: HashMap<String, Proc>,
}

impl Stack {
    /// Writes a config for `bitcoind` paying `payout` (address or hex script); `extra_toml` is
    /// appended (e.g. `[tx_selector]` settings).
    pub fn new(bitcoind: &Bitcoind, payout: &str, extra_toml: &str) -> anyhow::Result<Stack> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "jdc-stack-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let ports = Ports::free();
        let config = dir.join("jdc.toml");
        let toml = format!(
            r#"network = "regtest"
{bitcoind_section}
[bus]
watcher = "tcp://127.0.0.1:{w}"
selector = "tcp://127.0.0.1:{s}"
declarator = "tcp://127.0.0.1:{d}"
resend_interval_ms = 500
silence_timeout_ms = 1500

[declarator]
listen = "127.0.0.1:{sv2}"
sv1_listen = "127.0.0.1:{sv1}"
key_dir = "{keys}"
coinbase_tag = "jdc-test"

[[declarator.payout]]
destination = "{payout}"

[metrics]
listen = "127.0.0.1:{m}"
{extra_toml}
"#,
            bitcoind_section = bitcoind.config_toml(),
            w = ports.watcher,
            s = ports.selector,
            d = ports.declarator,
            sv2 = ports.sv2,
            sv1 = ports.sv1,
            m = ports.metrics,
            keys = dir.join("keys").display(),
        );
        std::fs::write(&config, toml)?;
        Ok(Stack {
            dir,
            config,
            ports,
            bin: target_dir()?,
            procs: HashMap::new(),
        })
    }

    /// Path of a built binary.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// Starts `jdc-<component>` with the stack's config (plus `args`) and waits for
    /// `ready_log` in its log. Replaces a previous process of that name.
    pub fn start(
        &mut self,
        component: &str,
        args: &[&str],
        ready_log: &str,
    ) -> anyhow::Result<&Proc> {
        let mut all = vec!["-c".to_string(), self.config.display().to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        let program = self.bin(&format!("jdc-{component}"));
        let proc = Proc::spawn(component, &program, &all, &[], &self.dir)?;
        proc.wait_for_log(ready_log, Duration::from_secs(30))?;
        self.procs.insert(component.to_string(), proc);
        self.procs
            .get(component)
            .ok_or_else(|| anyhow!("{component} vanished"))
    }

    /// Starts any `program` with `args` (the stack's config is not passed) as the stack process
    /// `name`, e.g. a third-party tx-selector in place of ours, and waits for `ready_log` in
    /// its stderr. Replaces a previous process of that name.
    pub fn start_command(
        &mut self,
        name: &str,
        program: &Path,
        args: &[String],
        ready_log: &str,
    ) -> anyhow::Result<&Proc> {
        let proc = Proc::spawn(name, program, args, &[], &self.dir)?;
        proc.wait_for_log(ready_log, Duration::from_secs(30))?;
        self.procs.insert(name.to_string(), proc);
        self.get(name)
    }

    /// Starts the four services: watcher, selector, declarator, metrics.
    pub fn start_services(&mut self) -> anyhow::Result<()> {
        self.start("declarator", &[], "SV2 mining server listening")?;
        self.start_template_source()?;
        self.start("metrics", &[], "listening")?;
        Ok(())
    }

    /// Starts the tx-selector and the template-watcher (for a declarator started on its own).
    pub fn start_template_source(&mut self) -> anyhow::Result<()> {
        self.start("tx-selector", &[], "bus publisher bound")?;
        self.start("template-watcher", &[], "bus publisher bound")?;
        Ok(())
    }

    /// Turns on the template-watcher's Template Distribution server on `port` (every refresh
    /// sent: no fee delta; mempool refreshes every 200 ms) before it starts; returns the file
    /// its key with [`Stack::tdp_key`] once it runs.
    pub fn enable_tdp(&self, port: u16) -> anyhow::Result<()> {
        self.enable_tdp_with_fee_delta(port, 0)
    }

    /// [`Stack::enable_tdp`] with refreshes sent only when fees rose by `fee_delta_sats`.
    pub fn enable_tdp_with_fee_delta(&self, port: u16, fee_delta_sats: u64) -> anyhow::Result<()> {
        let keys = self.dir.join("tdp-keys");
        let config = std::fs::read_to_string(&self.config)?;
        std::fs::write(
            &self.config,
            format!(
                "{config}\n[template_watcher]\ntdp_listen = \"127.0.0.1:{port}\"\ntdp_key_dir = \"{}\"\ntdp_fee_delta_sats = {fee_delta_sats}\nmempool_refresh_min_interval_ms = 200\n",
                keys.display()
            ),
        )?;
        Ok(())
    }

    /// The TDP server's authority public key, once the template-watcher (started) says its
    /// server listens: the key file is written just before.
    pub fn tdp_key(&self) -> anyhow::Result<String> {
        self.get("template-watcher")?.wait_for_log(
            "Template Distribution server listening",
            Duration::from_secs(30),
        )?;
        let path = self.dir.join("tdp-keys").join("authority_public_key");
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_string())
    }

    /// The authority public key the declarator generated.
    pub fn authority_key(&self) -> anyhow::Result<String> {
        let path = self.dir.join("keys").join("authority_public_key");
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_string())
    }

    /// Starts a sim-miner against the declarator (extra `args` appended) and waits for its
    /// channel to open.
    pub fn start_miner(&mut self, name: &str, args: &[&str]) -> anyhow::Result<&Proc> {
        let mut all = vec![
            "--connect".to_string(),
            format!("127.0.0.1:{}", self.ports.sv2),
            "--authority-public-key".to_string(),
            self.authority_key()?,
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        let proc = Proc::spawn(name, &self.bin("jdc-sim-miner"), &all, &[], &self.dir)?;
        proc.wait_for_event(0, Duration::from_secs(30), |e| {
            e["event"] == "channel-opened"
        })?;
        self.procs.insert(name.to_string(), proc);
        self.get(name)
    }

    /// Subscribes to the watcher, selector and declarator bus streams for `topics`; cancel the
    /// token to stop.
    pub fn subscribe(
        &self,
        topics: Vec<jdc_shared::bus::Topic>,
    ) -> (
        tokio::sync::mpsc::Receiver<jdc_shared::bus::Received>,
        tokio_util::sync::CancellationToken,
    ) {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stream = |name: &str, port: u16| (name.to_string(), format!("tcp://127.0.0.1:{port}"));
        let (inbox, _tasks) = jdc_shared::bus::subscribe(
            jdc_shared::bus::SubscribeOptions {
                streams: vec![
                    stream("watcher", self.ports.watcher),
                    stream("selector", self.ports.selector),
                    stream("declarator", self.ports.declarator),
                ],
                topics,
                silence_timeout: Duration::from_secs(5),
            },
            std::sync::Arc::new(jdc_shared::bus::BusStats::default()),
            shutdown.clone(),
        );
        (inbox, shutdown)
    }

    /// Collects the declarator's upstream states from the bus, in order, without re-sends
    /// (until the runtime stops).
    pub fn record_upstream_states(&self) -> Arc<Mutex<Vec<jdc_shared::messages::UpstreamState>>> {
        let states: Arc<Mutex<Vec<jdc_shared::messages::UpstreamState>>> = Arc::default();
        let (mut inbox, stop) = self.subscribe(vec![jdc_shared::bus::Topic::Upstream]);
        let sink = states.clone();
        tokio::spawn(async move {
            let _stop = stop.drop_guard();
            while let Some(msg) = inbox.recv().await {
                if let Ok(state) = msg.decode::<jdc_shared::messages::UpstreamState>() {
                    let mut all = sink.lock().unwrap_or_else(|p| p.into_inner());
                    if all.last().map(|s| s.id) != Some(state.id) {
                        all.push(state);
                    }
                }
            }
        });
        states
    }

    /// Connects a scripted SV2 device to this stack's declarator (one extended channel).
    pub async fn connect_device(&self) -> anyhow::Result<crate::device::TestDevice> {
        crate::device::TestDevice::connect(
            &format!("127.0.0.1:{}", self.ports.sv2),
            &self.authority_key()?,
        )
        .await
    }

    /// A running process by name.
    pub fn get(&self, name: &str) -> anyhow::Result<&Proc> {
        self.procs
            .get(name)
            .ok_or_else(|| anyhow!("no process {name}"))
    }

    /// A running process by name, mutably.
    pub fn get_mut(&mut self, name: &str) -> anyhow::Result<&mut Proc> {
        self.procs
            .get_mut(name)
            .ok_or_else(|| anyhow!("no process {name}"))
    }

    /// Removes a process from the stack (it is killed when dropped).
    pub fn take(&mut self, name: &str) -> Option<Proc> {
        self.procs.remove(name)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for (_, mut p) in self.procs.drain() {
            p.kill9();
        }
        if !std::thread::panicking() && std::env::var_os("JDCTEST_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("stack logs kept in {}", self.dir.display());
        }
    }
}
