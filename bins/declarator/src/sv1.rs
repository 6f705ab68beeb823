//! The Stratum V1 server: devices that speak only V1 connect straight to the declarator.
//!
//! Each connection is a [`session::Session`] over newline-delimited JSON-RPC (SRI's `sv1_api`
//! messages), backed by an SV2 extended channel of the [`Server`] every SV2 device uses: the
//! same jobs, extranonce allocator, share validation, pool forwarding and block submission.
//! A connection's bad input (malformed JSON, an oversized line, unknown methods, a flood of
//! submits) is answered with an error or ends that connection only, and is counted in the
//! declarator's heartbeat counters (`sv1_bad_input_*`, exported by jdc-metrics).

pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, SinkExt, StreamExt};
use jdc_shared::bus::Publisher;
use jdc_shared::config::{ConfigError, DeclaratorConfig};
use jdc_shared::metric_names::counters;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;

use crate::downstream::Server;
use session::{Session, Step};

/// A device that does not take our writes within this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that has not subscribed and authorized within this long is dropped.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines handled before their answers are written.
const MAX_BATCH: usize = 256;
/// How often variable difficulty looks at a connection's share rate.
const VARDIFF_TICK: Duration = Duration::from_secs(5);

/// Settings of the V1 server, from `[declarator]`.
#[derive(Debug, Clone)]
pub struct Sv1Settings {
    /// Listening address.
    pub listen: String,
    /// Assumed hashrate of a new device, H/s.
    pub initial_hash_rate: f32,
    /// Version bits devices may roll (0: none).
    pub version_rolling_mask: u32,
    /// Longest accepted line, bytes.
    pub max_line_bytes: usize,
    /// Submits per second per device (bursts of twice that).
    pub max_submits_per_sec: u32,
    /// Share rate difficulty aims at, per minute.
    pub shares_per_minute: f32,
}

impl Sv1Settings {
    /// The settings, `None` when `sv1_listen` is empty (V1 off); errors name the key.
    pub fn from_config(c: &DeclaratorConfig) -> Result<Option<Self>, ConfigError> {
        if c.sv1_listen.trim().is_empty() {
            return Ok(None);
        }
        let bad = |key: &str, why: String| ConfigError::new(format!("declarator.{key}"), why);
        if c.sv1_listen.parse::<SocketAddr>().is_err() {
            return Err(bad(
                "sv1_listen",
                format!("{:?} is not host:port (e.g. 0.0.0.0:3333)", c.sv1_listen),
            ));
        }
        let mask = u32::from_str_radix(c.sv1_version_rolling_mask.trim_start_matches("0x"), 16)
            .map_err(|_| {
                bad(
                    "sv1_version_rolling_mask",
                    format!(
                        "{:?} is not a hex u32 (e.g. 1fffe000)",
                        c.sv1_version_rolling_mask
                    ),
                )
            })?;
        if !(c.sv1_initial_hash_rate.is_finite() && c.sv1_initial_hash_rate > 0.0) {
            return Err(bad(
                "sv1_initial_hash_rate",
                "must be a positive number of hashes per second".into(),
            ));
        }
        if c.sv1_max_line_bytes < 512 {
            return Err(bad(
                "sv1_max_line_bytes",
                "below 512 bytes V1 devices cannot even subscribe".into(),
            ));
        }
        if c.sv1_max_submits_per_sec == 0 {
            return Err(bad("sv1_max_submits_per_sec", "must be at least 1".into()));
        }
        Ok(Some(Self {
            listen: c.sv1_listen.clone(),
            initial_hash_rate: c.sv1_initial_hash_rate,
            version_rolling_mask: mask,
            max_line_bytes: c.sv1_max_line_bytes,
            max_submits_per_sec: c.sv1_max_submits_per_sec,
            shares_per_minute: c.shares_per_minute,
        }))
    }
}

/// Counts of bad input from V1 devices, kept in the declarator's heartbeat counters.
pub struct BadInput {
    bus: Publisher,
}

impl BadInput {
    /// Counters published through `bus`'s heartbeats.
    pub fn new(bus: Publisher) -> Self {
        Self { bus }
    }

    /// A line that is not JSON-RPC, or a request with bad parameters.
    pub fn malformed(&self) {
        self.bus.add_to_counter(counters::SV1_MALFORMED, 1);
    }

    /// A line longer than `sv1_max_line_bytes`.
    pub fn oversized(&self) {
        self.bus.add_to_counter(counters::SV1_OVERSIZED, 1);
    }

    /// A method V1 devices do not send.
    pub fn unknown_method(&self) {
        self.bus.add_to_counter(counters::SV1_UNKNOWN_METHOD, 1);
    }

    /// A submit over the device's rate.
    pub fn flood(&self) {
        self.bus.add_to_counter(counters::SV1_FLOOD, 1);
    }
}

/// Why a V1 connection ended.
#[derive(Debug, thiserror::Error)]
pub enum Sv1ConnectionError {
    /// Reading or writing failed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// The device sent a line over the limit.
    #[error("line longer than {0} bytes")]
    Oversized(usize),
    /// The device sent something that is not a line of text.
    #[error("unreadable input: {0}")]
    Unreadable(String),
    /// We dropped the device.
    #[error("{0}")]
    Dropped(String),
    /// The device stopped reading.
    #[error("device stopped reading: a write did not complete within {0:?}")]
    WriteTimeout(Duration),
    /// The device did not subscribe and authorize in time.
    #[error("not subscribed and authorized within {0:?}")]
    SetupTimeout(Duration),
}

/// Binds the V1 port.
pub async fn bind(settings: &Sv1Settings) -> std::io::Result<TcpListener> {
    TcpListener::bind(&settings.listen).await
}

/// Accepts V1 devices until `shutdown`.
pub async fn serve(
    server: Arc<Server>,
    listener: TcpListener,
    settings: Arc<Sv1Settings>,
    bad: Arc<BadInput>,
    shutdown: CancellationToken,
) {
    let stop = shutdown.clone();
    jdc_shared::net::accept_loop(listener, "Stratum V1", shutdown, move |stream, peer, _| {
        let Some(admitted) = server.admit() else {
            tracing::warn!(%peer, "V1 connection refused: too many devices");
            return None;
        };
        let session = Session::new(
            server.clone(),
            settings.clone(),
            bad.clone(),
            peer,
            Instant::now(),
        );
        let (server, settings, bad, shutdown) =
            (server.clone(), settings.clone(), bad.clone(), stop.clone());
        Some(async move {
            let _admitted = admitted;
            tracing::info!(%peer, "V1 device connected");
            match connection(server, settings, bad, stream, session, shutdown).await {
                Ok(()) => tracing::info!(%peer, "V1 device disconnected"),
                Err(e) => tracing::warn!(%peer, error = %e, "V1 device dropped"),
            }
        })
    })
    .await;
}

async fn connection(
    server: Arc<Server>,
    settings: Arc<Sv1Settings>,
    bad: Arc<BadInput>,
    stream: TcpStream,
    mut session: Session,
    shutdown: CancellationToken,
) -> Result<(), Sv1ConnectionError> {
    let mut framed = Framed::new(
        stream,
        LinesCodec::new_with_max_length(settings.max_line_bytes),
    );
    let mut work = server.work();
    let mut tick = tokio::time::interval(VARDIFF_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let setup_deadline = tokio::time::sleep(SETUP_TIMEOUT);
    tokio::pin!(setup_deadline);
    loop {
        let step = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            changed = work.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let state = work.borrow_and_update().clone();
                match state {
                    Some(state) => session.on_work(&state),
                    None => Step::default(),
                }
            }
            line = framed.next() => {
                let line = input(line, &bad, settings.max_line_bytes)?;
                let Some(line) = line else { return Ok(()) };
                let state = work.borrow().clone();
                let mut step = session.on_line(&line, state.as_ref(), Instant::now());
                // Lines already read are handled before answering: a burst of submits gets
                // one write, not one per share.
                for _ in 1..MAX_BATCH {
                    if step.close.is_some() {
                        break;
                    }
                    let Some(next) = framed.next().now_or_never() else { break };
                    match input(next, &bad, settings.max_line_bytes) {
                        Ok(Some(line)) => {
                            let more = session.on_line(&line, state.as_ref(), Instant::now());
                            step.out.extend(more.out);
                            step.close = more.close;
                        }
                        // Answer what came before, then end.
                        Ok(None) => {
                            step.close = Some("device closed the connection".into());
                        }
                        Err(e) => {
                            step.close = Some(e.to_string());
                        }
                    }
                }
                step
            }
            _ = tick.tick() => {
                let state = work.borrow().clone();
                Step { out: session.on_tick(state.as_ref()), ..Step::default() }
            }
            _ = &mut setup_deadline, if session.worker().is_none() => {
                return Err(Sv1ConnectionError::SetupTimeout(SETUP_TIMEOUT));
            }
        };
        if !step.out.is_empty() {
            tokio::time::timeout(WRITE_TIMEOUT, write_all(&mut framed, step.out))
                .await
                .map_err(|_| Sv1ConnectionError::WriteTimeout(WRITE_TIMEOUT))??;
        }
        // Written: on the bus like an SV2 device's job (`jdc_jobs_sent_total`, tip-to-job).
        if let Some(job) = step.job {
            server.job_written(session.peer(), job);
        }
        if let Some(reason) = step.close {
            return Err(Sv1ConnectionError::Dropped(reason));
        }
    }
}

/// Writes `lines` with one flush.
async fn write_all(
    framed: &mut Framed<TcpStream, LinesCodec>,
    lines: Vec<String>,
) -> Result<(), Sv1ConnectionError> {
    let codec_error = |e| match e {
        LinesCodecError::Io(e) => Sv1ConnectionError::Io(e),
        LinesCodecError::MaxLineLengthExceeded => {
            Sv1ConnectionError::Dropped("answer longer than the line limit".into())
        }
    };
    for line in lines {
        framed.feed(line).await.map_err(codec_error)?;
    }
    SinkExt::<String>::flush(framed).await.map_err(codec_error)
}

/// A line from the device, `None` when it closed the connection, or why it is dropped
/// (counted).
fn input(
    item: Option<Result<String, LinesCodecError>>,
    bad: &BadInput,
    max_line_bytes: usize,
) -> Result<Option<String>, Sv1ConnectionError> {
    match item {
        None => Ok(None),
        Some(Ok(line)) => Ok(Some(line)),
        Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
            bad.oversized();
            Err(Sv1ConnectionError::Oversized(max_line_bytes))
        }
        Some(Err(LinesCodecError::Io(e))) if e.kind() == std::io::ErrorKind::InvalidData => {
            bad.malformed();
            Err(Sv1ConnectionError::Unreadable(e.to_string()))
        }
        Some(Err(LinesCodecError::Io(e))) => Err(e.into()),
    }
}
