//! Which upstream the declarator mines for, and when to change: an ordered list of upstreams
//! (pool + JDS each), solo mining as the last resort. A failure of the active upstream moves
//! to the next healthy one at once; an upstream that failed is probed with backoff and, once
//! healthy, taken back if it ranks higher, at most once per hold-down period.
//!
//! Pure logic (time is passed in), unit tested; the runner connects, switches and tells it.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// Where work comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The upstream at this position of the configured list.
    Upstream(usize),
    /// Solo mining to our own payout.
    Solo,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Upstream(i) => write!(f, "upstream {}", i + 1),
            Source::Solo => f.write_str("solo"),
        }
    }
}

/// What went wrong with an upstream.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// The connection to the pool or the JDS was lost, could not be made, or the peer broke
    /// the protocol (garbage, unexpected messages): the cause.
    Disconnected(String),
    /// The pool or the JDS did not answer in time (a stalled peer, or TCP keepalive found it
    /// gone): what we waited for.
    Timeout(String),
    /// `SetupConnection` was refused (e.g. the JDS does not support our mode).
    SetupRefused(String),
    /// The pool refused to open our channel.
    ChannelRefused(String),
    /// The pool closed our channel.
    ChannelClosed(String),
    /// The pool's extranonce leaves too little room for our devices.
    ExtranonceTooSmall(String),
    /// The pool changed our extranonce prefix (our devices' layout is built on the first).
    ExtranoncePrefixChanged,
    /// The pool gives another number of extranonce bytes than our devices' layout takes.
    LayoutMismatch(String),
    /// `DeclareMiningJob.Error` with this code.
    DeclareRejected(String),
    /// `SetCustomMiningJob.Error` with this code.
    CustomJobRejected(String),
    /// Too many of our shares were rejected.
    RejectRate {
        /// Rejected in the window.
        rejected: usize,
        /// Window size.
        of: usize,
    },
}

/// Error code of a job declared on a tip the JDS or pool has not seen yet (or has left): a
/// race, redeclared on the current tip, never a reason to fall back.
pub const STALE_CHAIN_TIP: &str = "stale-chain-tip";

/// Error codes of `DeclareMiningJob.Error` and `SetCustomMiningJob.Error` that SRI's JDS and
/// pool send (the spec leaves codes to implementations). Any other code is still a refusal,
/// logged as unknown.
pub const KNOWN_JOB_ERROR_CODES: &[&str] = &[
    STALE_CHAIN_TIP,
    "invalid-mining-job-token",
    "invalid-channel-id",
    "missing-txs",
    "invalid-coinbase-tx",
    "invalid-coinbase-tx-input",
    "invalid-coinbase-tx-outputs",
    "invalid-coinbase-prefix",
    "invalid-job",
    "invalid-job-param-value",
    "job-not-yet-validated",
    "invalid-min-ntime",
    "invalid-nbits",
    "invalid-version",
    "invalid-merkle-path",
    "jd-not-supported",
];

/// Whether a job refusal's code is one we know (`invalid-job-param-value-<field>` included).
pub fn is_known_job_error_code(code: &str) -> bool {
    KNOWN_JOB_ERROR_CODES
        .iter()
        .any(|k| code == *k || code.starts_with(&format!("{k}-")))
}

impl Trigger {
    /// Whether this is the tip race rather than a failure.
    pub fn is_race(&self) -> bool {
        matches!(self, Trigger::DeclareRejected(c) | Trigger::CustomJobRejected(c) if c == STALE_CHAIN_TIP)
    }
}

/// `(code)`, or `(code: an error code we do not know, taken as a refusal)`.
fn refusal(f: &mut fmt::Formatter<'_>, what: &str, code: &str) -> fmt::Result {
    if is_known_job_error_code(code) {
        write!(f, "{what} refused ({code})")
    } else {
        write!(
            f,
            "{what} refused ({code}: an error code we do not know, taken as a refusal)"
        )
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Disconnected(why) => write!(f, "connection lost ({why})"),
            Trigger::Timeout(why) => write!(f, "timed out ({why})"),
            Trigger::SetupRefused(why) => write!(f, "SetupConnection refused ({why})"),
            Trigger::ChannelRefused(why) => write!(f, "channel refused ({why})"),
            Trigger::ChannelClosed(c) => write!(f, "channel closed by the pool ({c})"),
            Trigger::ExtranonceTooSmall(why) => write!(f, "extranonce too small ({why})"),
            Trigger::ExtranoncePrefixChanged => {
                f.write_str("the pool changed our extranonce prefix")
            }
            Trigger::LayoutMismatch(why) => write!(f, "extranonce layout does not fit ({why})"),
            Trigger::DeclareRejected(c) => refusal(f, "DeclareMiningJob", c),
            Trigger::CustomJobRejected(c) => refusal(f, "SetCustomMiningJob", c),
            Trigger::RejectRate { rejected, of } => {
                write!(f, "{rejected} of the last {of} shares rejected")
            }
        }
    }
}

/// Timing of the policy.
#[derive(Debug, Clone, Copy)]
pub struct FallbackPolicy {
    /// Least time between two switches back to a higher-ranked upstream.
    pub hold_down: Duration,
    /// First probe of a failed upstream after this long, then doubling...
    pub probe_min: Duration,
    /// ... up to this.
    pub probe_max: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Down {
    next_probe: Instant,
    backoff: Duration,
}

/// The fallback state.
#[derive(Debug)]
pub struct Fallback {
    policy: FallbackPolicy,
    active: Source,
    last_switch: Instant,
    down: Vec<Option<Down>>,
}

impl Fallback {
    /// `upstreams` configured upstreams, the first active (solo if there are none).
    pub fn new(upstreams: usize, policy: FallbackPolicy, now: Instant) -> Self {
        Self {
            policy,
            active: if upstreams == 0 {
                Source::Solo
            } else {
                Source::Upstream(0)
            },
            last_switch: now,
            down: vec![None; upstreams],
        }
    }

    /// The source in use.
    pub fn active(&self) -> Source {
        self.active
    }

    /// Upstream `idx` failed (the tip race is not a failure): it is down and probed with
    /// backoff from now on. The caller moves the work and records it with
    /// [`Fallback::switched`].
    pub fn on_failure(&mut self, idx: usize, trigger: &Trigger, now: Instant) {
        if trigger.is_race() {
            return;
        }
        if let Some(slot) = self.down.get_mut(idx) {
            *slot = Some(Down {
                next_probe: now + self.policy.probe_min,
                backoff: self.policy.probe_min,
            });
        }
    }

    /// The result of probing upstream `idx`: a failure backs its next probe off; success
    /// marks it healthy (standby).
    pub fn on_probe(&mut self, idx: usize, ok: bool, now: Instant) {
        let Some(slot) = self.down.get_mut(idx) else {
            return;
        };
        if ok {
            *slot = None;
        } else if let Some(d) = slot {
            d.backoff = (d.backoff * 2).min(self.policy.probe_max);
            d.next_probe = now + d.backoff;
        }
    }

    /// Whether upstream `idx` ranks above the source in use (solo ranks below every upstream).
    pub fn ranks_above_active(&self, idx: usize) -> bool {
        match self.active {
            Source::Upstream(i) => idx < i,
            Source::Solo => idx < self.down.len(),
        }
    }

    /// When and which failed upstream to probe next: its backoff has run out and, if it ranks
    /// above the source in use (a probe that works means switching back to it), the
    /// hold-down since the last switch has passed too. Lower-ranked ones are probed so their
    /// state is known when it matters.
    pub fn next_probe(&self) -> Option<(usize, Instant)> {
        let earliest_return = self.last_switch + self.policy.hold_down;
        self.down
            .iter()
            .enumerate()
            .filter_map(|(i, d)| {
                let d = (*d)?;
                Some(if self.ranks_above_active(i) {
                    (i, d.next_probe.max(earliest_return))
                } else {
                    (i, d.next_probe)
                })
            })
            .min_by_key(|(_, at)| *at)
    }

    /// Whether upstream `idx` is not known to be down.
    pub fn is_healthy(&self, idx: usize) -> bool {
        self.down.get(idx).is_some_and(Option::is_none)
    }

    /// Records a switch the caller made (to an upstream it connected to, or solo).
    pub fn switched(&mut self, to: Source, now: Instant) {
        if let Source::Upstream(i) = to {
            if let Some(slot) = self.down.get_mut(i) {
                *slot = None;
            }
        }
        self.active = to;
        self.last_switch = now;
    }
}

/// When the rejected-share rate makes us leave a pool (`declarator.upstream_reject_window`,
/// `declarator.upstream_reject_max_fraction`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RejectLimits {
    /// Share results (accepted or rejected shares, not messages) the rate is taken over.
    pub window: usize,
    /// Leave when more than this fraction of the window was rejected (1 never leaves).
    pub max_fraction: f64,
}

impl Default for RejectLimits {
    fn default() -> Self {
        Self {
            window: 50,
            max_fraction: 0.5,
        }
    }
}

/// Rejected-share rate over a sliding window of share results.
#[derive(Debug)]
pub struct RejectRate {
    window: usize,
    max_rejected: f64,
    results: VecDeque<bool>,
}

impl RejectRate {
    /// Triggers when more than `limits.max_fraction` of the last `limits.window` shares were
    /// rejected.
    pub fn new(limits: RejectLimits) -> Self {
        Self {
            window: limits.window.max(1),
            max_rejected: limits.max_fraction,
            results: VecDeque::new(),
        }
    }

    /// Records `count` shares the pool accepted (`SubmitShares.Success` acknowledges a batch:
    /// its `new_submits_accepted_count`); returns the trigger when the rate is exceeded.
    pub fn accepted(&mut self, count: u32) -> Option<Trigger> {
        // More than a window's worth only pushes older results out.
        let n = usize::try_from(count)
            .unwrap_or(usize::MAX)
            .min(self.window);
        let mut trigger = None;
        for _ in 0..n {
            trigger = trigger.or(self.record(true));
        }
        trigger
    }

    /// Records one share the pool rejected; returns the trigger when the rate is exceeded.
    pub fn rejected(&mut self) -> Option<Trigger> {
        self.record(false)
    }

    /// Records one share result; returns the trigger when the rate is exceeded (and starts
    /// a new window).
    fn record(&mut self, accepted: bool) -> Option<Trigger> {
        if self.results.len() == self.window {
            self.results.pop_front();
        }
        self.results.push_back(accepted);
        if self.results.len() < self.window {
            return None;
        }
        let rejected = self.results.iter().filter(|ok| !**ok).count();
        if rejected as f64 > self.max_rejected * self.window as f64 {
            self.results.clear();
            return Some(Trigger::RejectRate {
                rejected,
                of: self.window,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests;
