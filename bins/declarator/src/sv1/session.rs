//! One Stratum V1 device: its messages in, our answers and jobs out (no I/O here).
//!
//! Behind every V1 connection is an SV2 extended channel of the declarator's own
//! ([`Server::new_extended_channel`]): its extranonce prefix is the device's `extranonce1`
//! (from the allocator every SV2 channel uses, so they never collide), its rollable part is
//! `extranonce2`, its jobs become `mining.notify` (SRI's `stratum_translation`), and a
//! `mining.submit` becomes a `SubmitSharesExtended` judged by the very code that judges SV2
//! shares, then settled the same way (bus, pool, bitcoind).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use jdc_shared::bitcoin::Target;
use serde_json::{json, Value};
use stratum_core::channels_sv2::vardiff::{classic::VardiffState, Vardiff};
use stratum_core::mining_sv2::{
    NewExtendedMiningJobOwned, SetNewPrevHashOwned, SubmitSharesExtendedOwned,
};
use stratum_core::parsers_sv2::{AnyMessageOwned, MiningOwned};
use stratum_core::stratum_translation::sv2_to_sv1::{
    build_sv1_notify_from_sv2, build_sv1_set_difficulty_from_sv2_target,
};
use stratum_core::sv1_api::client_to_server::{Configure, Submit, Subscribe};
use stratum_core::sv1_api::json_rpc::{JsonRpcError, Message, Response, StandardRequest};
use stratum_core::sv1_api::methods::Client2Server;
use stratum_core::sv1_api::server_to_client::VersionRollingParams;
use stratum_core::sv1_api::utils::{Extranonce, HexU32Be};
use stratum_core::sv1_api::Method;

use super::{BadInput, Sv1Settings};
use crate::downstream::{channel::Channel, Server, WrittenJob};
use crate::work::WorkState;

/// Jobs whose header version we remember (a share names its job; V1 sends only rolled bits).
const JOBS_REMEMBERED: usize = 16;
/// Submits refused for flooding, in a row, before the device is dropped.
const FLOOD_STRIKES: u32 = 100;

/// Stratum V1 error codes (as pools answer them).
mod code {
    pub const OTHER: i32 = 20;
    pub const JOB_NOT_FOUND: i32 = 21;
    pub const DUPLICATE: i32 = 22;
    pub const LOW_DIFFICULTY: i32 = 23;
    pub const UNAUTHORIZED: i32 = 24;
    pub const NOT_SUBSCRIBED: i32 = 25;
}

/// What the connection must do after a line.
#[derive(Debug, Default)]
pub struct Step {
    /// Lines to write, in order (JSON, without the newline).
    pub out: Vec<String>,
    /// Close the connection after writing, for this reason.
    pub close: Option<String>,
    /// The job of new work (a new tip or template) among `out`, for the bus once written.
    /// The first job of a new device and re-sends after a difficulty change are not counted,
    /// as with SV2 devices.
    pub job: Option<WrittenJob>,
}

impl Step {
    fn reply(mut self, line: String) -> Self {
        self.out.push(line);
        self
    }
}

/// A token bucket for `mining.submit`.
#[derive(Debug)]
pub struct SubmitBudget {
    per_sec: f64,
    tokens: f64,
    at: Instant,
}

impl SubmitBudget {
    /// `per_sec` submits a second, bursts of twice that.
    pub fn new(per_sec: u32, now: Instant) -> Self {
        let per_sec = f64::from(per_sec.max(1));
        Self {
            per_sec,
            tokens: per_sec * 2.0,
            at: now,
        }
    }

    /// Takes one submit's token; false when the device is over its rate.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.per_sec * 2.0);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The header version a V1 share was mined with: the job's, with the negotiated rollable bits
/// replaced by the device's. Bits outside the mask are a protocol error (BIP310).
pub fn share_version(
    job_version: u32,
    mask: Option<u32>,
    version_bits: Option<u32>,
) -> Result<u32, &'static str> {
    match (mask, version_bits) {
        (_, None) => Ok(job_version),
        (None, Some(_)) => Err("version bits sent without version rolling negotiated"),
        (Some(mask), Some(bits)) if bits & !mask != 0 => {
            Err("version bits outside the negotiated mask")
        }
        (Some(mask), Some(bits)) => Ok((job_version & !mask) | (bits & mask)),
    }
}

/// The V1 error for an SV2 share rejection code.
pub fn submit_error(sv2_code: &str) -> (i32, String) {
    match sv2_code {
        "stale-share" | "invalid-job-id" => (code::JOB_NOT_FOUND, "Job not found (stale)".into()),
        "duplicate-share" => (code::DUPLICATE, "Duplicate share".into()),
        "difficulty-too-low" => (code::LOW_DIFFICULTY, "Low difficulty share".into()),
        other => (code::OTHER, format!("Share rejected: {other}")),
    }
}

/// Hashrate at which `difficulty` gives `shares_per_minute`.
pub fn hashrate_for_difficulty(difficulty: f64, shares_per_minute: f32) -> f32 {
    (difficulty * 4_294_967_296.0 * f64::from(shares_per_minute) / 60.0) as f32
}

/// A V1 device's session.
pub struct Session {
    server: Arc<Server>,
    settings: Arc<Sv1Settings>,
    bad: Arc<BadInput>,
    peer: SocketAddr,
    channel: Option<Channel>,
    extranonce1: Vec<u8>,
    extranonce2_size: u16,
    version_mask: Option<u32>,
    extranonce_subscribed: bool,
    worker: Option<String>,
    /// The tip's `SetNewPrevHash` (for every notify on that tip).
    prev_hash: Option<SetNewPrevHashOwned>,
    /// Header versions of recent jobs, by job id.
    job_versions: VecDeque<(u32, u32)>,
    tip_seq: u64,
    template_id: u64,
    prefix_generation: u64,
    hashrate: f32,
    vardiff: Option<VardiffState>,
    budget: SubmitBudget,
    flood_strikes: u32,
    seq: u32,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(ch) = &self.channel {
            self.server.set_hashrate(ch.id(), None);
        }
    }
}

impl Session {
    /// A session for a device that just connected.
    pub fn new(
        server: Arc<Server>,
        settings: Arc<Sv1Settings>,
        bad: Arc<BadInput>,
        peer: SocketAddr,
        now: Instant,
    ) -> Self {
        let budget = SubmitBudget::new(settings.max_submits_per_sec, now);
        let hashrate = settings.initial_hash_rate;
        Self {
            server,
            settings,
            bad,
            peer,
            channel: None,
            extranonce1: Vec::new(),
            extranonce2_size: 0,
            version_mask: None,
            extranonce_subscribed: false,
            worker: None,
            prev_hash: None,
            job_versions: VecDeque::new(),
            tip_seq: 0,
            template_id: 0,
            prefix_generation: 0,
            hashrate,
            vardiff: VardiffState::new().ok(),
            budget,
            flood_strikes: 0,
            seq: 0,
        }
    }

    /// The device's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The worker name the device authorized with.
    pub fn worker(&self) -> Option<&str> {
        self.worker.as_deref()
    }

    /// Handles one line from the device.
    pub fn on_line(&mut self, line: &str, work: Option<&WorkState>, now: Instant) -> Step {
        let line = line.trim();
        if line.is_empty() {
            return Step::default();
        }
        let msg: Message = match serde_json::from_str(line) {
            Ok(m) => m,
            Err(e) => {
                self.bad.malformed();
                let text = format!("malformed JSON-RPC: {e}");
                return Step {
                    out: vec![error_line(Value::Null, code::OTHER, &text)],
                    close: Some(text),
                    ..Step::default()
                };
            }
        };
        let request = match msg {
            Message::StandardRequest(r) => r,
            // We ask devices nothing, so answers are unexpected; notifications from a device
            // are not part of V1. Neither harms: counted and ignored.
            Message::Notification(n) => {
                self.bad.unknown_method();
                tracing::debug!(peer = %self.peer, method = %n.method, "V1 notification from a device ignored");
                return Step::default();
            }
            Message::OkResponse(_) | Message::ErrorResponse(_) => {
                self.bad.unknown_method();
                tracing::debug!(peer = %self.peer, "V1 response from a device ignored");
                return Step::default();
            }
        };
        let id = request.id;
        if request.method == "mining.suggest_difficulty" {
            return self.suggest_difficulty(&request, work);
        }
        // Only requests reach SRI's parser (its response parsing is not for untrusted input).
        match Method::try_from(Message::StandardRequest(request)) {
            Ok(Method::Client2Server(m)) => match m {
                Client2Server::Configure(c) => Step::default().reply(self.configure(c)),
                Client2Server::Subscribe(s) => self.subscribe(s),
                Client2Server::ExtranonceSubscribe(e) => {
                    self.extranonce_subscribed = true;
                    Step::default().reply(to_line(&Message::OkResponse(e.respond())))
                }
                Client2Server::Authorize(a) => self.authorize(a.name.clone(), id, work),
                Client2Server::Submit(s) => self.submit(s, now),
                Client2Server::SuggestDifficulty() => Step::default(),
            },
            Ok(_) => {
                self.bad.unknown_method();
                Step::default().reply(error_line(json!(id), code::OTHER, "not a device request"))
            }
            Err(stratum_core::sv1_api::MethodError::MethodNotFound(method)) => {
                self.bad.unknown_method();
                tracing::debug!(peer = %self.peer, %method, "unknown V1 method");
                Step::default().reply(error_line(
                    json!(id),
                    code::OTHER,
                    &format!("unknown method {method}"),
                ))
            }
            Err(e) => {
                self.bad.malformed();
                let text = format!("bad parameters: {}", describe(&e));
                Step::default().reply(error_line(json!(id), code::OTHER, &text))
            }
        }
    }

    fn configure(&mut self, c: Configure) -> String {
        let server_mask = self.settings.version_rolling_mask;
        let version_rolling = match c.version_rolling_mask() {
            Some(device_mask) if server_mask != 0 => {
                let mask = device_mask.0 & server_mask;
                self.version_mask = Some(mask);
                Some(VersionRollingParams::new(HexU32Be(mask), HexU32Be(0)))
            }
            Some(_) => {
                self.version_mask = None;
                Some(VersionRollingParams::new(HexU32Be(0), HexU32Be(0)))
            }
            None => None,
        };
        tracing::debug!(peer = %self.peer, mask = ?self.version_mask, "mining.configure");
        to_line(&Message::OkResponse(c.respond(version_rolling, None)))
    }

    fn subscribe(&mut self, s: Subscribe) -> Step {
        if self.channel.is_some() {
            return Step::default().reply(error_line(
                json!(s.id),
                code::OTHER,
                "already subscribed",
            ));
        }
        let opened = self.server.new_extended_channel(
            self.peer,
            s.agent_signature.clone(),
            Target::from_le_bytes([0xff; 32]),
            self.hashrate,
            0,
        );
        let opened = match opened {
            Ok(o) => o,
            Err(code) => {
                return Step {
                    out: vec![error_line(
                        json!(s.id),
                        code::OTHER,
                        &format!("no channel: {code}"),
                    )],
                    close: Some(format!("no channel for the device: {code}")),
                    ..Step::default()
                }
            }
        };
        let Ok(extranonce1) = Extranonce::try_from(opened.extranonce_prefix.clone()) else {
            return Step {
                out: vec![],
                close: Some("extranonce prefix too long for V1".into()),
                ..Step::default()
            };
        };
        self.extranonce1 = opened.extranonce_prefix;
        self.extranonce2_size = opened.rollable;
        self.prefix_generation = self.server.upstream_prefix().0;
        let channel_id = opened.channel.id();
        self.server
            .channel_opened(channel_id, "sv1", String::new(), self.hashrate, self.peer);
        self.channel = Some(opened.channel);
        tracing::info!(peer = %self.peer, agent = %s.agent_signature, channel_id, extranonce2_size = self.extranonce2_size, "V1 device subscribed");
        let subscription = format!("{channel_id:08x}");
        let reply = s.respond(
            vec![
                ("mining.set_difficulty".into(), subscription.clone()),
                ("mining.notify".into(), subscription),
            ],
            extranonce1,
            usize::from(self.extranonce2_size),
        );
        Step::default().reply(to_line(&Message::OkResponse(reply)))
    }

    fn authorize(&mut self, name: String, id: u64, work: Option<&WorkState>) -> Step {
        if self.channel.is_none() {
            return Step::default().reply(error_line(
                json!(id),
                code::NOT_SUBSCRIBED,
                "subscribe first",
            ));
        }
        let first = self.worker.is_none();
        tracing::info!(peer = %self.peer, worker = %name, "V1 device authorized");
        if let Some(ch) = &self.channel {
            self.server.set_device_user(ch.id(), &name);
        }
        self.worker = Some(name);
        let mut step = Step::default().reply(to_line(&Message::OkResponse(Response {
            id,
            error: None,
            result: Value::Bool(true),
        })));
        if first {
            step.out.extend(self.difficulty_line());
            if let Some(state) = work {
                step.out.extend(self.on_work(state).out);
            }
        }
        step
    }

    fn suggest_difficulty(&mut self, r: &StandardRequest, work: Option<&WorkState>) -> Step {
        let difficulty = r
            .params
            .as_array()
            .and_then(|p| p.first())
            .and_then(Value::as_f64)
            .filter(|d| d.is_finite() && *d > 0.0);
        let Some(difficulty) = difficulty else {
            self.bad.malformed();
            return Step::default().reply(error_line(
                json!(r.id),
                code::OTHER,
                "mining.suggest_difficulty takes one positive number",
            ));
        };
        let hashrate = hashrate_for_difficulty(difficulty, self.settings.shares_per_minute);
        tracing::debug!(peer = %self.peer, difficulty, hashrate, "mining.suggest_difficulty");
        let mut step = Step::default().reply(to_line(&Message::OkResponse(Response {
            id: r.id,
            error: None,
            result: Value::Bool(true),
        })));
        step.out.extend(self.retarget(hashrate, work));
        step
    }

    /// A new hashrate estimate: new difficulty, and a job that carries it (V1 devices apply a
    /// difficulty from their next job).
    fn retarget(&mut self, hashrate: f32, work: Option<&WorkState>) -> Vec<String> {
        self.hashrate = hashrate;
        let Some(ch) = self.channel.as_mut() else {
            return vec![];
        };
        if let Err(e) = ch.update(hashrate, Target::from_le_bytes([0xff; 32])) {
            tracing::warn!(peer = %self.peer, error = %e, "difficulty change refused");
            return vec![];
        }
        self.server.set_hashrate(ch.id(), Some(hashrate));
        if self.worker.is_none() {
            return vec![];
        }
        let mut out = self.difficulty_line();
        if let Some(state) = work {
            out.extend(self.job(state, false));
        }
        out
    }

    fn difficulty_line(&self) -> Vec<String> {
        let Some(ch) = &self.channel else {
            return vec![];
        };
        match build_sv1_set_difficulty_from_sv2_target(ch.target()) {
            Ok(m) => vec![to_line(&m)],
            Err(e) => {
                tracing::error!(peer = %self.peer, error = ?e, "cannot express the target as a V1 difficulty");
                vec![]
            }
        }
    }

    /// New work from the work book: a `mining.notify` (clean on a new tip).
    pub fn on_work(&mut self, state: &WorkState) -> Step {
        let mut step = Step::default();
        if self.worker.is_none() || self.channel.is_none() {
            return step;
        }
        let new_tip = state.tip.seq != self.tip_seq || self.prev_hash.is_none();
        if !new_tip && state.job.template_id == self.template_id {
            return step;
        }
        let (generation, prefix) = self.server.upstream_prefix();
        if generation != self.prefix_generation {
            self.prefix_generation = generation;
            if let Some(line) = self.move_to_prefix(&prefix) {
                step.out.push(line);
            } else {
                step.close = Some(
                    "the pool changed and the device did not subscribe to extranonce changes: it must reconnect".into(),
                );
                return step;
            }
        }
        let lines = self.job(state, new_tip);
        if !lines.is_empty() {
            step.job = Some(WrittenJob::new(state, new_tip, 1));
        }
        step.out.extend(lines);
        step
    }

    /// `mining.set_extranonce` for a new pool prefix, if the device takes it.
    fn move_to_prefix(&mut self, prefix: &[u8]) -> Option<String> {
        let ch = self.channel.as_mut()?;
        let msg = ch.set_upstream_prefix(prefix).ok()?;
        let AnyMessageOwned::Mining(MiningOwned::SetExtranoncePrefix(p)) = msg else {
            return None;
        };
        if !self.extranonce_subscribed {
            return None;
        }
        self.extranonce1 = p.extranonce_prefix.as_ref().to_vec();
        let en1 = hex::encode(&self.extranonce1);
        Some(
            json!({"id": null, "method": "mining.set_extranonce", "params": [en1, self.extranonce2_size]})
                .to_string(),
        )
    }

    fn job(&mut self, state: &WorkState, new_tip: bool) -> Vec<String> {
        let Some(ch) = self.channel.as_mut() else {
            return vec![];
        };
        let built = if new_tip {
            ch.on_new_tip(state)
        } else {
            ch.on_new_job(state).map(|m| vec![m])
        };
        let msgs = match built {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(peer = %self.peer, error = %e, "cannot build a job for the V1 device");
                return vec![];
            }
        };
        let mut job: Option<NewExtendedMiningJobOwned> = None;
        for m in msgs {
            match m {
                AnyMessageOwned::Mining(MiningOwned::NewExtendedMiningJob(j)) => job = Some(j),
                AnyMessageOwned::Mining(MiningOwned::SetNewPrevHash(p)) => self.prev_hash = Some(p),
                _ => {}
            }
        }
        let (Some(job), Some(prev_hash)) = (job, self.prev_hash.clone()) else {
            return vec![];
        };
        if new_tip {
            self.job_versions.clear();
        }
        if self.job_versions.len() == JOBS_REMEMBERED {
            self.job_versions.pop_front();
        }
        self.job_versions.push_back((job.job_id, job.version));
        self.tip_seq = state.tip.seq;
        self.template_id = state.job.template_id;
        match build_sv1_notify_from_sv2(prev_hash, job, new_tip) {
            Ok(notify) => vec![to_line(&Message::from(notify))],
            Err(e) => {
                tracing::error!(peer = %self.peer, error = ?e, "cannot translate the job to mining.notify");
                vec![]
            }
        }
    }

    fn submit(&mut self, s: Submit, now: Instant) -> Step {
        let id = s.id;
        if !self.budget.take(now) {
            self.bad.flood();
            self.flood_strikes += 1;
            let step = Step::default().reply(error_line(
                json!(id),
                code::OTHER,
                "too many submits: slow down",
            ));
            if self.flood_strikes >= FLOOD_STRIKES {
                return Step {
                    close: Some(format!(
                        "{FLOOD_STRIKES} submits in a row over the limit of {} a second",
                        self.settings.max_submits_per_sec
                    )),
                    ..step
                };
            }
            return step;
        }
        self.flood_strikes = 0;
        if self.worker.is_none() {
            return Step::default().reply(error_line(
                json!(id),
                code::UNAUTHORIZED,
                "Unauthorized worker",
            ));
        }
        self.seq = self.seq.wrapping_add(1);
        let share = match self.share_of(&s) {
            Ok(share) => share,
            Err((code, text, reason)) => {
                // Counted like any rejected share, with the reason.
                if let Some(ch) = &self.channel {
                    let mut outcome = crate::downstream::channel::reject(ch.id(), self.seq, reason);
                    self.server
                        .settle_share(self.peer, ch.id(), "sv1", &mut outcome);
                }
                return Step::default().reply(error_line(json!(id), code, &text));
            }
        };
        let Some(ch) = self.channel.as_mut() else {
            return Step::default().reply(error_line(
                json!(id),
                code::NOT_SUBSCRIBED,
                "Not subscribed",
            ));
        };
        let channel_id = ch.id();
        let mut outcome = ch.on_extended_share(share);
        self.server
            .settle_share(self.peer, channel_id, "sv1", &mut outcome);
        if outcome.close {
            let (code, text) = submit_error(outcome.rejected.unwrap_or("too-many-shares"));
            return Step {
                out: vec![error_line(json!(id), code, &text)],
                close: Some(
                    "share budget of the tip exhausted (far more shares than the difficulty allows)"
                        .into(),
                ),
                ..Step::default()
            };
        }
        match outcome.rejected {
            None => {
                if let Some(v) = self.vardiff.as_mut() {
                    v.increment_shares_since_last_update();
                }
                Step::default().reply(to_line(&Message::OkResponse(Response {
                    id,
                    error: None,
                    result: Value::Bool(true),
                })))
            }
            Some(sv2_code) => {
                let (code, text) = submit_error(sv2_code);
                Step::default().reply(error_line(json!(id), code, &text))
            }
        }
    }

    /// The SV2 share a `mining.submit` stands for, or why it cannot be one: the V1 error code,
    /// its text, and the reason it is counted under.
    fn share_of(
        &self,
        s: &Submit,
    ) -> Result<SubmitSharesExtendedOwned, (i32, String, &'static str)> {
        let Some(ch) = self.channel.as_ref() else {
            return Err((
                code::NOT_SUBSCRIBED,
                "Not subscribed".into(),
                "not-subscribed",
            ));
        };
        let job = s
            .job_id
            .parse::<u32>()
            .ok()
            .and_then(|job_id| self.job_versions.iter().find(|(j, _)| *j == job_id));
        let Some(&(job_id, job_version)) = job else {
            return Err((
                code::JOB_NOT_FOUND,
                "Job not found (stale)".into(),
                "invalid-job-id",
            ));
        };
        let version = share_version(
            job_version,
            self.version_mask,
            s.version_bits.as_ref().map(|v| v.0),
        )
        .map_err(|text| (code::OTHER, text.to_string(), "invalid-version-bits"))?;
        let extranonce2: Vec<u8> = s.extra_nonce2.clone().into();
        if extranonce2.len() != usize::from(self.extranonce2_size) {
            return Err((
                code::OTHER,
                format!(
                    "extranonce2 is {} bytes, expected {}",
                    extranonce2.len(),
                    self.extranonce2_size
                ),
                "invalid-extranonce-size",
            ));
        }
        let extranonce = extranonce2.try_into().map_err(|_| {
            (
                code::OTHER,
                "extranonce2 too long".to_string(),
                "invalid-extranonce-size",
            )
        })?;
        Ok(SubmitSharesExtendedOwned {
            channel_id: ch.id(),
            sequence_number: self.seq,
            job_id,
            nonce: s.nonce.0,
            ntime: s.time.0,
            version,
            extranonce,
        })
    }

    /// Periodic variable-difficulty check (SRI's classic vardiff: it acts at most every 15 s).
    pub fn on_tick(&mut self, work: Option<&WorkState>) -> Vec<String> {
        let (Some(ch), Some(vardiff)) = (self.channel.as_ref(), self.vardiff.as_mut()) else {
            return vec![];
        };
        if self.worker.is_none() {
            return vec![];
        }
        let target = ch.target();
        match vardiff.try_vardiff(self.hashrate, &target, self.settings.shares_per_minute) {
            Ok(Some(hashrate)) => {
                tracing::debug!(peer = %self.peer, from = self.hashrate, to = hashrate, "V1 vardiff");
                self.retarget(hashrate, work)
            }
            Ok(None) => vec![],
            Err(e) => {
                tracing::debug!(peer = %self.peer, error = ?e, "vardiff failed");
                vec![]
            }
        }
    }
}

fn to_line(msg: &Message) -> String {
    serde_json::to_string(msg).unwrap_or_else(|e| {
        error_line(
            Value::Null,
            code::OTHER,
            &format!("internal error encoding the answer: {e}"),
        )
    })
}

/// A JSON-RPC error answer (`id` may be null when the request could not be read).
fn error_line(id: Value, code: i32, message: &str) -> String {
    let error = JsonRpcError {
        code,
        message: message.to_string(),
        data: None,
    };
    json!({"id": id, "result": null, "error": error}).to_string()
}

fn describe(e: &stratum_core::sv1_api::MethodError) -> String {
    use stratum_core::sv1_api::MethodError as E;
    match e {
        E::ParsingMethodError((p, _)) => format!("{p:?}"),
        E::MethodNotFound(m) => format!("unknown method {m}"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests;
