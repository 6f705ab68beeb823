//! `jdc-tx-selector`: chooses the transactions of the next block.
//!
//! Subscribes to the `template` topic of the watcher's stream, applies the configured policy
//! ([`select`], a pure function) and publishes a `selection` on its own `selector` stream.
//!
//! - [`select`]: the pure core (policies, invariants, speed notes).
//! - [`rules`]: exclusions, priorities and data-carrier filters.
//! - [`txscan`]: a zero-copy reader of the template's transactions for the rules.
//! - [`Selector`]: the per-message logic of the shell (decode, dedup, select, fresh ids),
//!   free of sockets so it is tested directly.
//! - [`run`]: the I/O shell: bus sockets, the receive loop and shutdown.
#![forbid(unsafe_code)]

pub mod rules;
pub mod select;
pub mod txscan;

use std::sync::Arc;
use std::time::Duration;

use jdc_shared::bus::{self, BusError, BusStats, Dedup, Publisher, Received, Topic};
use jdc_shared::config::{Config, ConfigError};
use jdc_shared::messages::{Event, Selection, Template};
use jdc_shared::time::now_micros;
use tokio_util::sync::CancellationToken;

pub use select::{select, Policy, PolicyKind, SelectError};

/// Name of this process on the bus (its stream).
pub const STREAM: &str = "selector";

/// Why the selector stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is unusable (exit code 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The bus could not be set up.
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// What became of one received message.
#[derive(Debug)]
pub enum Handled {
    /// A new template: here is its selection, to publish.
    Selected(Box<Selection>),
    /// A template already selected from (a periodic re-send).
    Duplicate,
    /// Not a template topic; ignored.
    Ignored,
    /// The message was refused (counted as malformed); the reason, for logs and events.
    Refused(String),
}

/// The selector's message handling, without sockets.
#[derive(Debug)]
pub struct Selector {
    policy: Policy,
    dedup: Dedup,
    last_id: u64,
}

impl Selector {
    /// A selector applying `policy`.
    pub fn new(policy: Policy) -> Selector {
        Selector {
            policy,
            dedup: Dedup::default(),
            last_id: 0,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Handles one bus message. A body that does not decode or a template that cannot be
    /// selected from is counted as malformed in `stats` and refused.
    pub fn handle(&mut self, msg: &Received, stats: &BusStats) -> Handled {
        if msg.topic != Topic::Template {
            return Handled::Ignored;
        }
        let template: Template = match msg.decode() {
            Ok(t) => t,
            Err(e) => {
                stats.count_malformed();
                return Handled::Refused(e.to_string());
            }
        };
        self.handle_template(template, stats)
    }

    /// Handles one decoded template.
    pub fn handle_template(&mut self, template: Template, stats: &BusStats) -> Handled {
        if !self.dedup.is_new(Topic::Template, template.id) {
            return Handled::Duplicate;
        }
        match select::select(&template, &self.policy) {
            Ok(mut selection) => {
                selection.id = self.next_id();
                Handled::Selected(Box::new(selection))
            }
            Err(e) => {
                stats.count_malformed();
                Handled::Refused(e.to_string())
            }
        }
    }

    /// A selection id: the microsecond clock, strictly increasing within this process, so ids
    /// stay unique across restarts too.
    fn next_id(&mut self) -> u64 {
        self.last_id = now_micros().max(self.last_id + 1);
        self.last_id
    }
}

/// Runs the selector until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    // All of this process is bulk work (choosing transactions): the tip path of the other processes
    // runs first when the CPU is short.
    jdc_shared::priority::lower_process(jdc_shared::priority::BULK_NICE);
    let policy = Policy::from_config(&config.tx_selector, config.network()?)?;
    let ignored = select::ignored_by_pass_through(&config.tx_selector);
    if !ignored.is_empty() {
        tracing::warn!(
            keys = %ignored.join(", "),
            "policy pass-through ignores these keys (they apply to policy fee-rate only)"
        );
    }
    let endpoint = config.bus.bind_endpoint(STREAM, &config.bus.selector)?;
    let stats = Arc::new(BusStats::default());
    let (publisher, publisher_task) = Publisher::bind(
        &endpoint,
        config.bus.publisher_options(STREAM),
        stats.clone(),
        shutdown.clone(),
    )
    .await?;
    publisher.set_state("waiting-for-template");
    let (mut rx, subscriber_tasks) = bus::subscribe(
        config
            .bus
            .subscribe_options(&["watcher"], &[Topic::Template]),
        stats.clone(),
        shutdown.clone(),
    );
    tracing::info!(
        policy = policy.kind.as_str(),
        min_fee_rate_sat_vb = policy.min_fee_rate_sat_vb,
        max_block_weight = policy.max_block_weight,
        coinbase_reserve_weight = policy.coinbase_reserve_weight,
        coinbase_reserve_sigops = policy.coinbase_reserve_sigops,
        max_block_sigops = policy.max_block_sigops,
        rules = %policy.rules,
        watcher = %config.bus.watcher,
        publishing_on = %endpoint,
        "tx-selector started"
    );
    let mut selector = Selector::new(policy);
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = shutdown.cancelled() => None,
        };
        let Some(msg) = msg else { break };
        let started = std::time::Instant::now();
        match selector.handle(&msg, &stats) {
            Handled::Selected(selection) => {
                if let Err(e) = publisher.publish(Topic::Selection, &*selection) {
                    tracing::error!(error = %e, "cannot publish the selection; stopping");
                    break;
                }
                publisher.set_state("ok");
                log_selection(&selection, started.elapsed());
            }
            Handled::Refused(why) => {
                tracing::warn!(stream = %msg.stream, "skipping template: {why}");
                let event = Event {
                    level: "warn".into(),
                    kind: "template-refused".into(),
                    message: why,
                };
                if let Err(e) = publisher.publish(Topic::Event, &event) {
                    tracing::warn!(error = %e, "cannot publish event");
                }
            }
            Handled::Duplicate | Handled::Ignored => {}
        }
    }
    tracing::info!("tx-selector stopping");
    shutdown.cancel();
    drop(publisher);
    for task in subscriber_tasks.into_iter().chain([publisher_task]) {
        if tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .is_err()
        {
            tracing::warn!("a bus task did not stop within 5 s");
        }
    }
    Ok(())
}

fn log_selection(s: &Selection, took: Duration) {
    let dropped: Vec<String> = s
        .dropped
        .iter()
        .map(|d| format!("{}={} ({} sat)", d.reason, d.count, d.fee))
        .collect();
    tracing::info!(
        selection_id = s.id,
        template_id = s.template_id,
        height = s.height,
        policy = %s.policy,
        txs = s.txids.len(),
        fees = s.fees,
        weight = s.weight,
        sigops = s.sigops,
        dropped = %if dropped.is_empty() { "none".to_string() } else { dropped.join(", ") },
        took_us = took.as_micros() as u64,
        "selection published"
    );
}
