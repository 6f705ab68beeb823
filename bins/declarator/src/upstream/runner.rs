//! The upstream task while mining for a pool: declares each job our devices get, sets it as a
//! custom job on the pool channel, forwards the devices' shares with the pool's job ids (held
//! until the pool acknowledges the job), pushes found blocks to the JDS, and hands the work back
//! to solo mining when the upstream fails.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use jdc_shared::bitcoin::TxOut;

use jdc_shared::bitcoin::Target;
use jdc_shared::bus::{Publisher, Topic};
use jdc_shared::messages::Event;
use stratum_core::channels_sv2::server::jobs::factory::JobFactory;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::declare::{declaration, pool_outputs, Declaration};
use super::fallback::{Fallback, FallbackPolicy, RejectRate, Source, Trigger};
use super::held_shares::{HeldCounts, HeldShare, HeldShares};
use super::jds::{JdsClient, JdsEvent, Mode, Solution};
use super::pool::{PoolClient, PoolEvent, UpstreamShare};
use super::state::StateBoard;
use crate::downstream::channel::AcceptedShare;
use crate::work::{BlockBody, Catalog, WorkState};

/// Shares held per job until the pool acknowledges it.
const HELD_PER_JOB: usize = 100;

/// What the hub must do when the upstream changes.
#[derive(Debug)]
pub enum HubSwitch {
    /// Mine for another pool: its outputs (the devices' extranonce prefix is already moved).
    Pool {
        /// Which upstream.
        name: String,
        /// The pool's coinbase outputs, payout first.
        outputs: Vec<jdc_shared::bitcoin::TxOut>,
    },
    /// No upstream works: mine solo.
    Solo(String),
    /// Same pool, new extranonce prefix (already given to the device server): the current job
    /// again, so that devices move to it.
    Rebuild(String),
    /// Same pool, other coinbase outputs: those of the mining job token the next job is
    /// declared with (a pool rotating its payout script or changing its output set). Jobs
    /// built from now on pay them, so that what devices mine is what is declared.
    Outputs {
        /// The pool's coinbase outputs, payout first.
        outputs: Vec<jdc_shared::bitcoin::TxOut>,
        /// The current job again with them, at once (when it pays other outputs): a job
        /// that could not be declared as it is. Otherwise from the next job on.
        now: bool,
    },
}

/// What the runner needs from the rest of the declarator.
pub struct RunnerLinks {
    /// The work devices mine.
    pub work: watch::Receiver<Option<WorkState>>,
    /// Block bodies of the current jobs (for the transactions of a declaration).
    pub catalog: Arc<Mutex<Catalog>>,
    /// Accepted shares from the devices.
    pub shares: mpsc::Receiver<AcceptedShare>,
    /// Told when the upstream changes (another pool, or solo).
    pub switch: mpsc::UnboundedSender<HubSwitch>,
    /// The device server, whose extranonces move to a new pool's prefix.
    pub server: Arc<crate::downstream::Server>,
    /// The configured upstreams, to fall over to.
    pub specs: Vec<super::UpstreamSpec>,
    /// Coinbase tag of our jobs.
    pub coinbase_tag: String,
    /// When to fall back and come back.
    pub policy: FallbackPolicy,
    /// Summed nominal hashrate of our devices.
    pub hashrate: watch::Receiver<f32>,
    /// Bus, for operator events.
    pub bus: Publisher,
}

/// A connected upstream.
pub struct Upstream {
    /// Its position in the configured list.
    pub index: usize,
    /// Its name for logs (`upstream 1`).
    pub name: String,
    /// The pool side.
    pub pool: PoolClient,
    /// The JDS side.
    pub jds: JdsClient,
    /// Full-Template or Coinbase-only.
    pub mode: Mode,
    /// Builds the coinbase exactly as our device channels do.
    pub factory: JobFactory,
}

/// A job on its way to the pool.
struct InFlight {
    template_id: u64,
    declaration: Declaration,
    body: BlockBody,
}

/// How mining for one upstream ended.
enum Outcome {
    /// Shutdown, or the rest of the declarator is gone.
    Shutdown,
    /// The upstream failed.
    Failed(Trigger),
    /// An upstream to mine for is connected (a higher-ranked one healthy again, or the next
    /// one found while mining solo), and why we take it.
    Better(Box<(Upstream, Vec<TxOut>)>, String),
}

/// The background search for the next upstream after a failure: the first of the list that
/// works, and the failures met on the way.
type Seek = tokio::task::JoinHandle<(Option<(Upstream, Vec<TxOut>)>, Vec<super::Failure>)>;

/// Mines for `first` (or solo when no upstream was usable at start). When it fails, devices
/// get solo work (our own payout) at once, without reconnecting, while the next configured
/// upstream that works is looked for in the background; devices move to it (its extranonce
/// prefix, without reconnecting) as soon as it is ready. Failed upstreams ranked higher are
/// probed with backoff and taken back after the hold-down. `layout` is the extranonce space
/// under a pool's prefix that our devices' layout takes (an upstream giving another size
/// cannot be used); `failures` are the upstreams that failed at start.
pub async fn run(
    first: Option<Upstream>,
    layout: u16,
    failures: Vec<super::Failure>,
    mut links: RunnerLinks,
    shutdown: CancellationToken,
) {
    let now = Instant::now();
    let mut fallback = Fallback::new(links.specs.len(), links.policy, now);
    let mut board = StateBoard::new(links.bus.clone(), &links.specs);
    for f in failures {
        fallback.on_failure(f.index, &f.trigger, now);
        board.failed(f.index, f.trigger.to_string());
    }
    match &first {
        Some(up) => {
            fallback.switched(Source::Upstream(up.index), now);
            let spec = links.specs.get(up.index);
            tracing::info!(
                upstream = %up.name,
                pool = %up.pool.name(),
                jds = %up.jds.name(),
                mode = ?up.mode,
                extranonce_prefix = %hex::encode(&up.pool.channel().extranonce_prefix),
                tokens_ahead = spec.map(|s| s.jds.tokens_ahead).unwrap_or_default(),
                "mining for the pool with our own templates"
            );
            publish(
                &links.bus,
                "info",
                "upstream-connected",
                format!("{}: mining for {} ({:?})", up.name, up.pool.name(), up.mode),
            );
        }
        None => {
            fallback.switched(Source::Solo, now);
            publish(
                &links.bus,
                "error",
                "fallback",
                "no upstream is usable; mining solo".into(),
            );
        }
    }
    board.publish(&fallback, "");
    let mut current = first;
    let mut seek: Option<Seek> = None;
    loop {
        let outcome = match current.as_mut() {
            Some(up) => {
                mine_for(up, &mut links, &shutdown, &mut fallback, &mut board, layout).await
            }
            None => {
                solo(
                    &mut links,
                    &shutdown,
                    &mut fallback,
                    &mut board,
                    layout,
                    &mut seek,
                )
                .await
            }
        };
        match outcome {
            Outcome::Shutdown => {
                if let Some(s) = seek.take() {
                    s.abort();
                }
                return;
            }
            Outcome::Better(better, why) => {
                if let Some(s) = seek.take() {
                    s.abort();
                }
                let (up, outputs) = *better;
                drop(current.take());
                current = switch_to(&mut links, &mut fallback, &mut board, up, outputs, &why);
            }
            Outcome::Failed(failure) => {
                let Some(failed) = current.take() else {
                    continue;
                };
                let why = format!("{}: {failure}", failed.name);
                fallback.on_failure(failed.index, &failure, Instant::now());
                board.failed(failed.index, failure.to_string());
                let failed_index = failed.index;
                drop(failed);
                // Devices get solo work now; the next upstream is looked for meanwhile.
                go_solo(&mut links, &mut fallback, &mut board, &why);
                let specs = links.specs.clone();
                let tag = links.coinbase_tag.clone();
                seek = Some(tokio::spawn(async move {
                    super::try_in_order(&specs, &tag, Some(layout), Some(failed_index)).await
                }));
            }
        }
    }
}

/// Records and announces a change of the source of work: one log line (from → to, reason), a
/// `fallback` event on the bus and the upstream state.
fn announce(
    links: &RunnerLinks,
    fallback: &mut Fallback,
    board: &mut StateBoard,
    to: Source,
    why: &str,
) {
    let from = fallback.active();
    fallback.switched(to, Instant::now());
    match to {
        Source::Solo => {
            tracing::warn!(from = %from, to = %to, reason = %why, "upstream switch");
            publish(
                &links.bus,
                "error",
                "fallback",
                format!("{from} → solo: {why}"),
            );
        }
        Source::Upstream(_) => {
            tracing::info!(from = %from, to = %to, reason = %why, "upstream switch");
            publish(
                &links.bus,
                "warn",
                "fallback",
                format!("{from} → {to}: {why}"),
            );
        }
    }
    board.publish(fallback, why);
}

/// Moves devices and the work book to `up`; `None` (and solo) if the devices cannot follow.
fn switch_to(
    links: &mut RunnerLinks,
    fallback: &mut Fallback,
    board: &mut StateBoard,
    up: Upstream,
    outputs: Vec<TxOut>,
    why: &str,
) -> Option<Upstream> {
    let prefix = up.pool.channel().extranonce_prefix.clone();
    if let Err(e) = links.server.set_upstream_prefix(&prefix) {
        let why = format!("{why}, but our devices cannot move to its extranonce prefix: {e}");
        if fallback.active() != Source::Solo {
            go_solo(links, fallback, board, &why);
        } else {
            tracing::error!(upstream = %up.name, reason = %why, "staying solo");
        }
        return None;
    }
    let _ = links.switch.send(HubSwitch::Pool {
        name: up.name.clone(),
        outputs,
    });
    announce(links, fallback, board, Source::Upstream(up.index), why);
    Some(up)
}

/// Devices get solo work (our own payout) from the current job on.
fn go_solo(links: &mut RunnerLinks, fallback: &mut Fallback, board: &mut StateBoard, why: &str) {
    let _ = links.switch.send(HubSwitch::Solo(why.to_string()));
    announce(links, fallback, board, Source::Solo, why);
}

/// A connection attempt to upstream `index` in the background.
type Probe = tokio::task::JoinHandle<Result<(Upstream, Vec<TxOut>), super::UpstreamError>>;

/// What a probe found: the connected upstream, or why not.
type ProbeResult = (usize, Result<(Upstream, Vec<TxOut>), Trigger>);

/// Probes failed upstreams one at a time, when [`Fallback::next_probe`] says, while the
/// runner mines (for a pool or solo).
#[derive(Default)]
struct Prober {
    probe: Option<(usize, Probe)>,
}

impl Prober {
    /// Resolves with a higher-ranked upstream that works again (to switch to); failed and
    /// lower-ranked probes are recorded on the way. Cancel-safe: a probe under way is kept.
    async fn better(
        &mut self,
        specs: &[super::UpstreamSpec],
        coinbase_tag: &str,
        fallback: &mut Fallback,
        board: &mut StateBoard,
        layout: u16,
    ) -> (Upstream, Vec<TxOut>) {
        loop {
            let Some((index, handle)) = &mut self.probe else {
                let Some((index, at)) = fallback.next_probe() else {
                    return std::future::pending().await;
                };
                tokio::time::sleep_until(at.into()).await;
                let Some(spec) = specs.get(index).cloned() else {
                    return std::future::pending().await;
                };
                let tag = coinbase_tag.to_string();
                tracing::debug!(upstream = index + 1, "probing a failed upstream");
                self.probe = Some((
                    index,
                    tokio::spawn(async move { super::connect_one(index, &spec, &tag).await }),
                ));
                continue;
            };
            let index = *index;
            let found = match handle.await {
                Ok(Ok(connected)) => (index, Ok(connected)),
                Ok(Err(e)) => (index, Err(e.trigger())),
                Err(e) => (
                    index,
                    Err(Trigger::Disconnected(format!("probe task failed: {e}"))),
                ),
            };
            self.probe = None;
            if let Some(better) = probe_verdict(fallback, board, found, layout) {
                return better;
            }
        }
    }
}

/// The probe's verdict: the connected upstream, if usable (same extranonce layout) and ranked
/// above the source in use (to switch back to). A usable lower-ranked one is only marked
/// healthy (standby) and let go; a failed probe backs off. Changes are published.
fn probe_verdict(
    fallback: &mut Fallback,
    board: &mut StateBoard,
    (index, result): ProbeResult,
    layout: u16,
) -> Option<(Upstream, Vec<TxOut>)> {
    let usable = result.and_then(
        |(up, outputs)| match super::layout_mismatch(&up, Some(layout)) {
            None => Ok((up, outputs)),
            Some(why) => Err(Trigger::LayoutMismatch(format!("{}: {why}", up.name))),
        },
    );
    fallback.on_probe(index, usable.is_ok(), Instant::now());
    match usable {
        Ok(up) if fallback.ranks_above_active(index) => Some(up),
        Ok(_) => {
            tracing::info!(upstream = index + 1, "works again; on standby");
            board.publish(fallback, "");
            None
        }
        Err(why) => {
            tracing::info!(upstream = index + 1, reason = %why, "still unusable");
            board.failed(index, why.to_string());
            board.publish(fallback, "");
            None
        }
    }
}

/// Solo mining: shares are not forwarded; the next upstream is looked for (`seek`, after a
/// failure) and failed upstreams are probed, until one is ready.
async fn solo(
    links: &mut RunnerLinks,
    shutdown: &CancellationToken,
    fallback: &mut Fallback,
    board: &mut StateBoard,
    layout: u16,
    seek: &mut Option<Seek>,
) -> Outcome {
    let mut prober = Prober::default();
    loop {
        let seeking = async {
            match seek.as_mut() {
                Some(handle) => handle.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Outcome::Shutdown,
            share = links.shares.recv() => {
                if share.is_none() {
                    return Outcome::Shutdown;
                }
            }
            found = seeking => {
                *seek = None;
                let (next, failures) = match found {
                    Ok(found) => found,
                    Err(e) => {
                        tracing::error!(error = %e, "the search for the next upstream failed");
                        (None, Vec::new())
                    }
                };
                let now = Instant::now();
                for f in failures {
                    fallback.on_failure(f.index, &f.trigger, now);
                    board.failed(f.index, f.trigger.to_string());
                }
                match next {
                    Some((up, outputs)) => {
                        let why = format!("{} is ready", up.name);
                        return Outcome::Better(Box::new((up, outputs)), why);
                    }
                    None => {
                        tracing::info!("no other upstream is usable yet: still mining solo; failed upstreams are probed");
                        board.publish(fallback, "");
                    }
                }
            }
            better = prober.better(&links.specs, &links.coinbase_tag, fallback, board, layout) => {
                let why = format!("{} is healthy again", better.0.name);
                return Outcome::Better(Box::new(better), why);
            }
        }
    }
}

fn publish(bus: &Publisher, level: &str, kind: &str, message: String) {
    let _ = bus.publish(
        Topic::Event,
        &Event {
            level: level.into(),
            kind: kind.into(),
            message,
        },
    );
}

/// Our jobs on their way to the pool.
#[derive(Default)]
struct Jobs {
    next_request_id: u32,
    /// Declarations sent to the JDS, by request id.
    declaring: HashMap<u32, InFlight>,
    /// Custom jobs sent to the pool, by request id → our template id.
    setting: HashMap<u32, u64>,
    /// The latest job, waiting for a mining job token.
    waiting: Option<WorkState>,
    /// Jobs declared on the current tip, by template id: transactions and tip detection time.
    info: HashMap<u64, (u32, u64)>,
    /// The last job declared again after `stale-chain-tip` (once per job).
    redeclared: Option<u64>,
    /// The pool outputs the hub was last told to build jobs with (see [`HubSwitch::Outputs`]).
    announced: Option<Vec<TxOut>>,
    /// Jobs of the current tip never to be declared: they pay other outputs than the token
    /// in hand, and were built again with its outputs. Their shares and blocks are not the
    /// pool's.
    superseded: HashSet<u64>,
}

impl Jobs {
    /// Publishes what became of job `template_id` (a `declaration` on the bus, for metrics and
    /// dashboards).
    fn report(
        &mut self,
        bus: &Publisher,
        up: &Upstream,
        template_id: u64,
        stage: &str,
        reason: &str,
    ) {
        let finished = stage != "declared";
        let info = if finished {
            self.info.remove(&template_id)
        } else {
            self.info.get(&template_id).copied()
        };
        let Some((tx_count, detected_at_us)) = info else {
            return;
        };
        let since_tip_us = if detected_at_us > 0 {
            jdc_shared::time::now_micros().saturating_sub(detected_at_us)
        } else {
            0
        };
        let _ = bus.publish(
            Topic::Declaration,
            &jdc_shared::messages::Declaration {
                template_id,
                upstream: u32::try_from(up.index + 1).unwrap_or(u32::MAX),
                stage: stage.into(),
                reason: reason.into(),
                tx_count,
                since_tip_us,
            },
        );
    }
}

/// What became of a job.
enum Declared {
    /// Declared to the JDS (Full-Template) or set on the pool (Coinbase-only).
    Sent,
    /// No token in hand: declare it when one arrives.
    NoToken,
    /// Cannot be declared (no block body, or the declaration cannot be built): logged.
    Skipped,
    /// Pays other outputs than the next token: the hub builds the job again with the token's
    /// outputs, and that job is declared when it comes.
    Rebuilding,
}

/// Tells the hub the pool outputs of the next token when they differ from those last told:
/// jobs built from now on (a new tip, a selection) pay them, so they are declared as they are,
/// without a rebuild and without delaying a tip.
fn announce_next_outputs(up: &Upstream, links: &RunnerLinks, jobs: &mut Jobs) {
    let Some(next) = up.jds.pool_outputs() else {
        return;
    };
    if jobs.announced.as_deref() == Some(next) {
        return;
    }
    tracing::debug!(upstream = %up.name, outputs = next.len(), "the next mining job token pays other outputs; jobs built from now on pay them");
    jobs.announced = Some(next.to_vec());
    let _ = links.switch.send(HubSwitch::Outputs {
        outputs: next.to_vec(),
        now: false,
    });
}

/// Declares the job of `state` (Full-Template) or sets it as a custom job (Coinbase-only).
async fn declare_job(
    up: &mut Upstream,
    links: &RunnerLinks,
    state: &WorkState,
    jobs: &mut Jobs,
    full_extranonce: usize,
) -> Result<Declared, super::UpstreamError> {
    let template_id = state.job.template_id;
    let body = links
        .catalog
        .lock()
        .ok()
        .and_then(|c| c.get(template_id))
        .map(|b| (*b).clone());
    let Some(body) = body else {
        tracing::warn!(upstream = %up.name, template_id, "no block body for the job; not declared");
        return Ok(Declared::Skipped);
    };
    let Some(next) = up.jds.next_token() else {
        return Ok(Declared::NoToken);
    };
    // What devices mine must be what is declared: a job paying other outputs than the token
    // it would be declared with (the pool changed its outputs) is built again with the
    // token's, and that job is declared instead. (Outputs that cannot take the reward fail
    // the declaration below.)
    let value = state.job.template.coinbase_tx_value_remaining;
    if pool_outputs(next, value).is_ok_and(|o| o != state.job.outputs) {
        let outputs = next.outputs.clone();
        tracing::info!(upstream = %up.name, template_id, "the pool's outputs changed with the next mining job token: our devices' job is built again with them");
        jobs.waiting = None;
        jobs.superseded.insert(template_id);
        jobs.announced = Some(outputs.clone());
        let _ = links.switch.send(HubSwitch::Outputs { outputs, now: true });
        return Ok(Declared::Rebuilding);
    }
    let Some(token) = up.jds.take_token().await? else {
        return Ok(Declared::NoToken);
    };
    announce_next_outputs(up, links, jobs);
    jobs.waiting = None;
    jobs.next_request_id = jobs.next_request_id.wrapping_add(1).max(1);
    let request_id = jobs.next_request_id;
    let d = match declaration(
        &up.factory,
        state,
        &body,
        &token,
        request_id,
        up.pool.channel().channel_id,
        full_extranonce,
    ) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(upstream = %up.name, error = %e, "cannot build the declaration");
            return Ok(Declared::Skipped);
        }
    };
    jobs.info.insert(
        template_id,
        (
            u32::try_from(body.txs().count()).unwrap_or(u32::MAX),
            state.tip.detected_at_us,
        ),
    );
    jobs.report(&links.bus, up, template_id, "declared", "");
    match up.mode {
        Mode::FullTemplate => {
            up.jds.declare(d.declare.clone()).await?;
            jobs.declaring.insert(
                request_id,
                InFlight {
                    template_id,
                    declaration: d,
                    body,
                },
            );
        }
        Mode::CoinbaseOnly => {
            up.pool
                .set_custom_job(d.custom.clone(), &token.token)
                .await?;
            jobs.setting.insert(request_id, template_id);
        }
    }
    Ok(Declared::Sent)
}

/// Mines for `up` until it fails, `shutdown`, or a probe finds a higher-ranked upstream back.
async fn mine_for(
    up: &mut Upstream,
    links: &mut RunnerLinks,
    shutdown: &CancellationToken,
    fallback: &mut Fallback,
    board: &mut StateBoard,
    layout: u16,
) -> Outcome {
    let mut prober = Prober::default();
    let pool_prefix_len = up.pool.channel().extranonce_prefix.len();
    let full_extranonce = pool_prefix_len + usize::from(up.pool.channel().extranonce_size);
    let mut jobs = Jobs {
        // The hub builds jobs with the outputs of the token in hand at connection.
        announced: up.jds.pool_outputs().map(<[_]>::to_vec),
        ..Jobs::default()
    };
    // Our template id → the pool's job id.
    let mut job_ids: HashMap<u64, u32> = HashMap::new();
    let mut held = HeldShares::new(HELD_PER_JOB);
    let limits = links
        .specs
        .get(up.index)
        .map(|s| s.reject)
        .unwrap_or_default();
    let mut reject_rate = RejectRate::new(limits);
    let mut last_template: Option<u64> = None;
    let mut tip_seq: Option<u64> = None;
    let mut prev_hash = [0u8; 32];
    let mut nbits = 0u32;
    // Work may already be there; the pool must hear our hashrate.
    links.work.mark_changed();
    links.hashrate.mark_changed();
    // Hashrate last announced to the pool (the configured value at open).
    let mut announced: f32 = 0.0;
    let mut hashrate_open = true;
    let mut held_reported = HeldCounts::default();
    let failure: Trigger = 'run: loop {
        report_held(&links.bus, &mut held_reported, held.counts());
        // The pool and the JDS answer every request within the timeout, or we leave them.
        let deadline = [up.jds.deadline().map(|(at, _)| at), up.pool.deadline()]
            .into_iter()
            .flatten()
            .min();
        let overdue = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Outcome::Shutdown,
            better = prober.better(&links.specs, &links.coinbase_tag, fallback, board, layout) => {
                let why = format!("{} is healthy again", better.0.name);
                return Outcome::Better(Box::new(better), why);
            }
            _ = overdue => {
                let now = Instant::now();
                if let Some((at, what)) = up.jds.deadline() {
                    if at <= now {
                        break 'run up.jds.overdue(what).trigger();
                    }
                }
                if up.pool.deadline().is_some_and(|at| at <= now) {
                    break 'run up.pool.overdue().trigger();
                }
            }
            changed = links.work.changed() => {
                if changed.is_err() {
                    return Outcome::Shutdown;
                }
                let Some(state) = links.work.borrow_and_update().clone() else { continue };
                if last_template == Some(state.job.template_id) {
                    continue;
                }
                last_template = Some(state.job.template_id);
                if tip_seq != Some(state.tip.seq) {
                    tip_seq = Some(state.tip.seq);
                    held.on_new_tip();
                    job_ids.clear();
                    jobs.info.clear();
                    jobs.superseded.clear();
                    prev_hash = state.tip.prev_hash;
                    nbits = state.tip.nbits;
                }
                match declare_job(up, links, &state, &mut jobs, full_extranonce).await {
                    Ok(Declared::NoToken) => {
                        tracing::debug!(upstream = %up.name, template_id = state.job.template_id, "no mining job token in hand yet; the job is declared when one arrives");
                        jobs.waiting = Some(state);
                    }
                    Ok(Declared::Sent | Declared::Skipped | Declared::Rebuilding) => {}
                    Err(e) => break 'run e.trigger(),
                }
            }
            event = up.jds.next_event() => match event {
                Err(e) => break 'run e.trigger(),
                Ok(JdsEvent::TokenReady) => {
                    if let Some(state) = jobs.waiting.take() {
                        match declare_job(up, links, &state, &mut jobs, full_extranonce).await {
                            Ok(Declared::NoToken) => jobs.waiting = Some(state),
                            Ok(Declared::Sent | Declared::Skipped | Declared::Rebuilding) => {}
                            Err(e) => break 'run e.trigger(),
                        }
                    } else {
                        announce_next_outputs(up, links, &mut jobs);
                    }
                }
                Ok(JdsEvent::MissingTransactions { request_id, positions }) => {
                    let Some(job) = jobs.declaring.get(&request_id) else { continue };
                    let txs: Vec<&[u8]> = job.body.txs().collect();
                    let wanted = positions
                        .iter()
                        .filter_map(|&p| txs.get(usize::from(p)).map(|t| t.to_vec()))
                        .collect();
                    tracing::debug!(upstream = %up.name, request_id, count = positions.len(), "providing missing transactions");
                    if let Err(e) = up.jds.provide_transactions(request_id, wanted).await {
                        break 'run e.trigger();
                    }
                }
                Ok(JdsEvent::Declared { request_id, new_token }) => {
                    let Some(job) = jobs.declaring.remove(&request_id) else { continue };
                    if let Err(e) = up.pool.set_custom_job(job.declaration.custom, &new_token).await {
                        break 'run e.trigger();
                    }
                    jobs.setting.insert(request_id, job.template_id);
                }
                Ok(JdsEvent::DeclareRejected { request_id, code }) => {
                    let job = jobs.declaring.remove(&request_id);
                    if let Some(job) = &job {
                        jobs.report(&links.bus, up, job.template_id, "rejected", &code);
                    }
                    let trigger = Trigger::DeclareRejected(code);
                    if trigger.is_race() {
                        let template_id = job.map(|j| j.template_id);
                        if let Some(t) = template_id {
                            held.refuse(t);
                        }
                        tracing::info!(upstream = %up.name, request_id, ?template_id, "DeclareMiningJob raced a new tip (stale-chain-tip): no fallback, the job is declared again on the current tip");
                        if let Err(e) = redeclare(up, links, &mut jobs, template_id, last_template, full_extranonce).await {
                            break 'run e.trigger();
                        }
                        continue;
                    }
                    break 'run trigger;
                }
            },
            event = up.pool.recv() => match event {
                Err(e) => break 'run e.trigger(),
                Ok(PoolEvent::CustomJobAccepted { request_id, job_id }) => {
                    let Some(template_id) = jobs.setting.remove(&request_id) else { continue };
                    jobs.report(&links.bus, up, template_id, "accepted", "");
                    job_ids.insert(template_id, job_id);
                    tracing::debug!(upstream = %up.name, template_id, job_id, "custom job accepted");
                    for share in held.release(template_id, job_id) {
                        if let Err(e) = up.pool.submit_share(share).await {
                            break 'run e.trigger();
                        }
                    }
                }
                Ok(PoolEvent::CustomJobRejected { request_id, code }) => {
                    let template_id = jobs.setting.remove(&request_id);
                    if let Some(template_id) = template_id {
                        held.refuse(template_id);
                        jobs.report(&links.bus, up, template_id, "rejected", &code);
                    }
                    let trigger = Trigger::CustomJobRejected(code);
                    if trigger.is_race() {
                        tracing::info!(upstream = %up.name, request_id, ?template_id, "SetCustomMiningJob raced a new tip (stale-chain-tip): no fallback, the job is declared again on the current tip");
                        if let Err(e) = redeclare(up, links, &mut jobs, template_id, last_template, full_extranonce).await {
                            break 'run e.trigger();
                        }
                        continue;
                    }
                    break 'run trigger;
                }
                Ok(PoolEvent::SharesAccepted { count }) => {
                    links.bus.add_to_counter(POOL_SHARES_ACCEPTED, u64::from(count));
                    if let Some(t) = reject_rate.accepted(count) {
                        break 'run t;
                    }
                }
                Ok(PoolEvent::ShareRejected { code, .. }) => {
                    tracing::debug!(upstream = %up.name, %code, "share rejected by the pool");
                    links.bus.add_to_counter(pool_reject_counter(&code), 1);
                    // Shares in flight when the tip changes are stale: a race, not a sign of a
                    // broken upstream.
                    if code != "stale-share" {
                        if let Some(t) = reject_rate.rejected() {
                            break 'run t;
                        }
                    }
                }
                Ok(PoolEvent::Closed { reason }) => break 'run Trigger::ChannelClosed(reason),
                Ok(PoolEvent::ExtranoncePrefix(prefix)) => {
                    // Devices keep their extranonce sizes: a prefix of another length cannot
                    // be followed.
                    if prefix.len() != pool_prefix_len {
                        break 'run Trigger::ExtranoncePrefixChanged;
                    }
                    if let Err(e) = links.server.set_upstream_prefix(&prefix) {
                        tracing::error!(upstream = %up.name, error = %e, "cannot move our devices to the new prefix");
                        break 'run Trigger::ExtranoncePrefixChanged;
                    }
                    tracing::info!(upstream = %up.name, prefix = %hex::encode(&prefix), "pool changed our extranonce prefix; devices follow");
                    // Jobs declared on the old prefix would not match what devices now mine.
                    job_ids.clear();
                    held.on_new_tip();
                    let _ = links.switch.send(HubSwitch::Rebuild(format!("{}: new extranonce prefix", up.name)));
                }
                Ok(PoolEvent::Target(t)) => {
                    tracing::debug!(upstream = %up.name, target = %t, "pool target");
                }
                Ok(PoolEvent::Ignored(what)) => {
                    tracing::trace!(upstream = %up.name, what, "ignored (a JDC builds its own jobs)");
                }
            },
            changed = links.hashrate.changed(), if hashrate_open => {
                if changed.is_err() {
                    hashrate_open = false;
                    continue;
                }
                let total = *links.hashrate.borrow_and_update();
                // Announce meaningful changes only (devices come and go).
                if total > 0.0 && (total - announced).abs() > announced * 0.1 {
                    announced = total;
                    tracing::info!(upstream = %up.name, hashrate = total, "announcing our devices' hashrate to the pool");
                    if let Err(e) = up.pool.update_hashrate(total).await {
                        break 'run e.trigger();
                    }
                }
            }
            share = links.shares.recv() => {
                let Some(share) = share else { return Outcome::Shutdown };
                // A block also goes to the JDS (Full-Template only: in Coinbase-only mode the
                // JDS knows no job of ours, and `PushSolution` has no meaning there); our node
                // has it already (the block submitter), and neither the pool's share nor the
                // JDS's solution waits on the other: both are written at once.
                // A job never declared (superseded by one paying the token's outputs) is not
                // the pool's: neither its shares nor its blocks go upstream.
                let superseded = jobs.superseded.contains(&share.template_id);
                let solution = (share.is_block && up.mode == Mode::FullTemplate && !superseded).then(|| Solution {
                    full_extranonce: share.full_extranonce.clone(),
                    prev_hash,
                    nonce: share.nonce,
                    ntime: share.ntime,
                    nbits,
                    version: share.version,
                });
                // The pool takes shares that meet its target, and blocks whatever its target
                // (on test networks a block can be easier than the pool's share target).
                let pool_target: Target = up.pool.channel().target;
                let for_pool = share.is_block || Target::from_le_bytes(share.hash) <= pool_target;
                let extranonce = share
                    .full_extranonce
                    .get(pool_prefix_len..)
                    .map(<[u8]>::to_vec)
                    .filter(|_| for_pool && !superseded);
                let to_pool = match (extranonce, job_ids.get(&share.template_id)) {
                    (Some(extranonce), Some(&job_id)) => Some(UpstreamShare {
                        job_id,
                        nonce: share.nonce,
                        ntime: share.ntime,
                        version: share.version,
                        extranonce,
                    }),
                    (Some(extranonce), None) => {
                        held.hold(share.template_id, HeldShare {
                            nonce: share.nonce,
                            ntime: share.ntime,
                            version: share.version,
                            extranonce,
                            hash: share.hash,
                        });
                        None
                    }
                    (None, _) => None,
                };
                let (shared, pushed) = tokio::join!(
                    async {
                        match to_pool {
                            Some(s) => up.pool.submit_share(s).await.map(Some),
                            None => Ok(None),
                        }
                    },
                    async {
                        match solution {
                            Some(s) => up.jds.push_solution(s).await.map(Some),
                            None => Ok(None),
                        }
                    },
                );
                if let Err(e) = pushed {
                    tracing::warn!(upstream = %up.name, error = %e, "PushSolution failed (the block goes to our node regardless)");
                }
                if let Err(e) = shared {
                    break 'run e.trigger();
                }
            }
        }
    };
    report_held(&links.bus, &mut held_reported, held.counts());
    // Shares still waiting for their job's acknowledgement are lost with the upstream.
    let waiting = held.waiting() as u64;
    if waiting > 0 {
        links
            .bus
            .add_to_counter(HELD_DROPPED_UPSTREAM_LEFT, waiting);
    }
    tracing::debug!(upstream = %up.name, held = ?held.counts(), waiting, reason = %failure, "leaving the upstream");
    Outcome::Failed(failure)
}

/// Heartbeat counter of the shares the pool accepted (`jdc_pool_shares_total`).
const POOL_SHARES_ACCEPTED: &str = "pool_shares_accepted";
/// Heartbeat counter of held shares lost when we leave the upstream (`jdc_held_shares_total`).
const HELD_DROPPED_UPSTREAM_LEFT: &str = "held_shares_dropped_upstream_left";

/// The heartbeat counter of a share the pool rejected with `code`: one per code the spec and
/// SRI name, `other` for the rest (bounded label values).
pub(crate) fn pool_reject_counter(code: &str) -> &'static str {
    jdc_shared::metric_names::POOL_SHARE_COUNTERS
        .iter()
        .find(|(_, result, reason)| *result == "rejected" && *reason == code)
        .map_or("pool_shares_rejected_other", |(name, _, _)| *name)
}

/// Adds what the held-share counters grew by since `reported` to the heartbeat counters
/// (`jdc_held_shares_total`).
fn report_held(bus: &Publisher, reported: &mut HeldCounts, now: HeldCounts) {
    if now == *reported {
        return;
    }
    for (name, grown) in held_growth(reported, &now) {
        bus.add_to_counter(name, grown);
    }
    *reported = now;
}

/// The held-share heartbeat counters that grew from `was` to `is`, and by how much.
fn held_growth(was: &HeldCounts, is: &HeldCounts) -> Vec<(&'static str, u64)> {
    [
        ("held_shares_held", was.held, is.held),
        ("held_shares_forwarded", was.released, is.released),
        (
            "held_shares_dropped_new_tip",
            was.dropped_tip,
            is.dropped_tip,
        ),
        (
            "held_shares_dropped_overflow",
            was.dropped_full,
            is.dropped_full,
        ),
        (
            "held_shares_dropped_refused",
            was.dropped_refused,
            is.dropped_refused,
        ),
    ]
    .into_iter()
    .filter(|(_, was, is)| is > was)
    .map(|(name, was, is)| (name, is - was))
    .collect()
}

/// After a `stale-chain-tip` answer for the job of `template_id`: declares the current job
/// again (a new token, on the tip our devices mine now), once per job, if the refused job is
/// the current one (a newer job is declared anyway when it comes).
async fn redeclare(
    up: &mut Upstream,
    links: &RunnerLinks,
    jobs: &mut Jobs,
    template_id: Option<u64>,
    current: Option<u64>,
    full_extranonce: usize,
) -> Result<(), super::UpstreamError> {
    let Some(template_id) = template_id.filter(|t| Some(*t) == current) else {
        return Ok(());
    };
    if jobs.redeclared == Some(template_id) {
        tracing::info!(upstream = %up.name, template_id, "the job was refused as stale-chain-tip twice; the next job is declared when it comes");
        return Ok(());
    }
    let state = links.work.borrow().clone();
    let Some(state) = state.filter(|s| s.job.template_id == template_id) else {
        return Ok(());
    };
    jobs.redeclared = Some(template_id);
    match declare_job(up, links, &state, jobs, full_extranonce).await? {
        Declared::NoToken => jobs.waiting = Some(state),
        Declared::Sent | Declared::Skipped | Declared::Rebuilding => {}
    }
    Ok(())
}

#[cfg(test)]
mod counter_tests {
    use super::*;
    use jdc_shared::metric_names::{HELD_SHARE_COUNTERS, POOL_SHARE_COUNTERS};

    #[test]
    fn pool_rejections_count_under_their_code_or_other() {
        assert_eq!(
            pool_reject_counter("stale-share"),
            "pool_shares_rejected_stale_share"
        );
        assert_eq!(
            pool_reject_counter("invalid-share"),
            "pool_shares_rejected_invalid_share"
        );
        assert_eq!(
            pool_reject_counter("gremlins-ate-it"),
            "pool_shares_rejected_other"
        );
        // An empty code is not the accepted counter.
        assert_eq!(pool_reject_counter(""), "pool_shares_rejected_other");
        // Every counter the runner writes is one jdc-metrics reads.
        for name in [POOL_SHARES_ACCEPTED, pool_reject_counter("other")] {
            assert!(POOL_SHARE_COUNTERS.iter().any(|(n, _, _)| *n == name));
        }
    }

    #[test]
    fn held_share_counters_grow_by_what_the_holder_counted() {
        let was = HeldCounts {
            held: 5,
            released: 2,
            dropped_full: 0,
            dropped_tip: 1,
            dropped_refused: 0,
        };
        let is = HeldCounts {
            held: 9,
            released: 2,
            dropped_full: 3,
            dropped_tip: 2,
            dropped_refused: 0,
        };
        assert_eq!(
            held_growth(&was, &is),
            vec![
                ("held_shares_held", 4),
                ("held_shares_dropped_new_tip", 1),
                ("held_shares_dropped_overflow", 3),
            ]
        );
        assert!(held_growth(&is, &is).is_empty());
        let all = HeldCounts {
            held: 1,
            released: 1,
            dropped_full: 1,
            dropped_tip: 1,
            dropped_refused: 1,
        };
        let mut written: Vec<&str> = held_growth(&HeldCounts::default(), &all)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        written.push(HELD_DROPPED_UPSTREAM_LEFT);
        let read: Vec<&str> = HELD_SHARE_COUNTERS.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            written, read,
            "the runner and jdc-metrics name the same counters"
        );
    }
}
