//! One downstream channel (standard or extended): SRI's `channels_sv2` server channel builds
//! the jobs from our work; our [`ShareBook`] validates and accounts the shares.

use jdc_shared::bitcoin::{BlockHash, Target};
use stratum_core::binary_sv2::{B032Owned, Str0255Owned, U256Owned};
use stratum_core::channels_sv2::seen_shares_budget;
use stratum_core::channels_sv2::server::{
    extended::ExtendedChannel,
    jobs::{extended::ExtendedJob, standard::StandardJob, JobOrigin},
    share_accounting::{ShareValidationError, ShareValidationResult},
    standard::StandardChannel,
};
use stratum_core::mining_sv2::{
    SetExtranoncePrefixOwned, SetNewPrevHashOwned, SubmitSharesErrorOwned,
    SubmitSharesExtendedOwned, SubmitSharesStandardOwned, SubmitSharesSuccessOwned,
};
use stratum_core::parsers_sv2::{AnyMessageOwned, MiningOwned};

use super::shares::{
    prefix_engine, Ack, JobCheck, RootSource, ShareBook, ShareFields, Verdict,
    ERROR_TOO_MANY_SHARES,
};
use crate::block::Solution;
use crate::work::WorkState;

/// Error codes we send that the SV2 crates do not name.
pub const ERROR_INVALID_CHANNEL_ID: &str = "invalid-channel-id";

/// SRI's channel object: it owns the channel's jobs, extranonce and target.
#[derive(Debug)]
pub enum SriChannel {
    /// Header-only mining, one merkle root per job.
    Standard(Box<StandardChannel>),
    /// Extended channel: the device rolls its part of the extranonce.
    Extended(Box<ExtendedChannel>),
}

/// A standard or extended channel: SRI's channel for jobs, our [`ShareBook`] for shares.
#[derive(Debug)]
pub struct Channel {
    sri: SriChannel,
    shares: ShareBook,
    /// Whether accepted shares are handed back for the pool (only when mining for one).
    forward: bool,
}

/// A share that solved a block: what the block submitter needs.
#[derive(Debug)]
pub struct FoundBlock {
    /// Template the job came from.
    pub template_id: u64,
    /// Full coinbase, with witness.
    pub coinbase: Vec<u8>,
    /// Header fields chosen by the device.
    pub solution: Solution,
    /// Block hash computed during validation.
    pub hash: BlockHash,
}

/// An accepted share, for the pool when mining for one: what it needs besides the pool's job id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedShare {
    /// Our template id of the share's job.
    pub template_id: u64,
    /// Header nonce.
    pub nonce: u32,
    /// Header time.
    pub ntime: u32,
    /// Header version.
    pub version: u32,
    /// The whole extranonce: the channel's prefix and the device's part.
    pub full_extranonce: Vec<u8>,
    /// The share's hash (internal byte order).
    pub hash: [u8; 32],
    /// Whether it is a block.
    pub is_block: bool,
}

/// The verdict on a share, and what to answer.
#[derive(Debug)]
pub struct ShareOutcome {
    /// Reply to send (success batch ack or error), if any.
    pub reply: Option<AnyMessageOwned>,
    /// `None` when accepted, else the SV2 error code.
    pub rejected: Option<&'static str>,
    /// Difficulty the share was credited with (0 when rejected).
    pub difficulty: f64,
    /// Set when the share is a block.
    pub block: Option<FoundBlock>,
    /// Set when the share was accepted.
    pub accepted: Option<AcceptedShare>,
    /// The channel must be closed (its share budget is exhausted).
    pub close: bool,
}

impl Channel {
    /// A standard channel acknowledging shares in batches of `batch_size`.
    pub fn standard(c: StandardChannel, batch_size: usize) -> Self {
        let budget = seen_shares_budget(f64::from(c.get_shares_per_minute()));
        Self {
            sri: SriChannel::Standard(Box::new(c)),
            shares: ShareBook::new(batch_size, budget),
            forward: false,
        }
    }

    /// An extended channel acknowledging shares in batches of `batch_size`.
    pub fn extended(c: ExtendedChannel, batch_size: usize) -> Self {
        let budget = seen_shares_budget(f64::from(c.get_shares_per_minute()));
        Self {
            sri: SriChannel::Extended(Box::new(c)),
            shares: ShareBook::new(batch_size, budget),
            forward: false,
        }
    }

    /// The channel id.
    pub fn id(&self) -> u32 {
        match &self.sri {
            SriChannel::Standard(c) => c.get_channel_id(),
            SriChannel::Extended(c) => c.get_channel_id(),
        }
    }

    /// `standard` or `extended`.
    pub fn kind(&self) -> &'static str {
        match self.sri {
            SriChannel::Standard(_) => "standard",
            SriChannel::Extended(_) => "extended",
        }
    }

    /// Current target.
    pub fn target(&self) -> Target {
        match &self.sri {
            SriChannel::Standard(c) => *c.get_target(),
            SriChannel::Extended(c) => *c.get_target(),
        }
    }

    /// Moves the channel's extranonce under a new pool prefix (keeping our part and the
    /// device's size); returns the `SetExtranoncePrefix` for the device.
    pub fn set_upstream_prefix(&mut self, prefix: &[u8]) -> Result<AnyMessageOwned, String> {
        let channel_id = self.id();
        let bytes = match &mut self.sri {
            SriChannel::Standard(c) => {
                c.set_upstream_extranonce_prefix(prefix)
                    .map_err(|e| format!("{e:?}"))?;
                c.get_extranonce_prefix().to_vec()
            }
            SriChannel::Extended(c) => {
                c.set_upstream_extranonce_prefix(prefix)
                    .map_err(|e| format!("{e:?}"))?;
                c.get_extranonce_prefix().to_vec()
            }
        };
        Ok(AnyMessageOwned::Mining(MiningOwned::SetExtranoncePrefix(
            SetExtranoncePrefixOwned {
                channel_id,
                extranonce_prefix: B032Owned::new(bytes)
                    .map_err(|e| format!("prefix does not fit B0_32: {e:?}"))?,
            },
        )))
    }

    /// Hands accepted shares back in [`ShareOutcome::accepted`] (for the pool), or not (solo:
    /// no per-share copy of the extranonce on the hot path).
    pub fn with_forwarding(mut self, forward: bool) -> Self {
        self.forward = forward;
        self
    }

    /// The device's nominal hashrate (H/s), as announced.
    pub fn nominal_hashrate(&self) -> f32 {
        match &self.sri {
            SriChannel::Standard(c) => c.get_nominal_hashrate(),
            SriChannel::Extended(c) => c.get_nominal_hashrate(),
        }
    }

    /// Accepted shares since the channel opened.
    pub fn accepted_shares(&self) -> u64 {
        self.shares.accepted_total()
    }

    /// `UpdateChannel` from the device: new nominal hashrate and maximum target. Returns the
    /// resulting target, or SRI's refusal (debug text).
    pub fn update(&mut self, nominal_hash_rate: f32, max_target: Target) -> Result<Target, String> {
        match &mut self.sri {
            SriChannel::Standard(c) => c
                .update_channel(nominal_hash_rate, Some(max_target))
                .map_err(|e| format!("{e:?}"))?,
            SriChannel::Extended(c) => c
                .update_channel(nominal_hash_rate, Some(max_target))
                .map_err(|e| format!("{e:?}"))?,
        }
        Ok(self.target())
    }

    /// Moves the channel to a new tip: the state's job as a future job, then the
    /// `SetNewPrevHash` activating it. Returns both messages in sending order.
    pub fn on_new_tip(&mut self, state: &WorkState) -> Result<Vec<AnyMessageOwned>, String> {
        let template_id = state.job.template_id;
        let snph = state.set_new_prev_hash();
        let channel_id = self.id();
        let target = self.target();
        let extranonce_len = self.sri.rollable_extranonce_len();
        // SRI's standard and extended channels have the same API but no common trait.
        macro_rules! future_job {
            ($c:expr, $variant:ident) => {{
                $c.on_new_template(state.future_template(), state.job.outputs.clone())
                    .map_err(|e| format!("{e:?}"))?;
                let job_id = $c
                    .get_future_job_id_from_template_id(template_id)
                    .ok_or("future job missing after on_new_template")?;
                let job = $c
                    .get_future_job(job_id)
                    .ok_or("future job missing")?
                    .get_job_message()
                    .clone();
                $c.on_set_new_prev_hash(snph)
                    .map_err(|e| format!("{e:?}"))?;
                let active = $c
                    .get_active_job()
                    .ok_or("job not active after SetNewPrevHash")?;
                (
                    MiningOwned::$variant(job),
                    job_id,
                    check_of(active, target, extranonce_len)?,
                )
            }};
        }
        let (job_msg, job_id, check) = match &mut self.sri {
            SriChannel::Standard(c) => future_job!(c, NewMiningJob),
            SriChannel::Extended(c) => future_job!(c, NewExtendedMiningJob),
        };
        self.shares.on_new_tip(state.tip.prev_hash, state.tip.nbits);
        self.shares.add_job(check);
        let prev = SetNewPrevHashOwned {
            channel_id,
            job_id,
            prev_hash: U256Owned::from(state.tip.prev_hash),
            min_ntime: state.tip.header_timestamp,
            nbits: state.tip.nbits,
        };
        Ok(vec![
            AnyMessageOwned::Mining(job_msg),
            AnyMessageOwned::Mining(MiningOwned::SetNewPrevHash(prev)),
        ])
    }

    /// A new job on the current tip, to mine at once.
    pub fn on_new_job(&mut self, state: &WorkState) -> Result<AnyMessageOwned, String> {
        let template = state.job.template.clone();
        let outputs = state.job.outputs.clone();
        let target = self.target();
        let extranonce_len = self.sri.rollable_extranonce_len();
        macro_rules! active_job {
            ($c:expr, $variant:ident) => {{
                $c.on_new_template(template, outputs)
                    .map_err(|e| format!("{e:?}"))?;
                let active = $c
                    .get_active_job()
                    .ok_or("active job missing after on_new_template")?;
                (
                    MiningOwned::$variant(active.get_job_message().clone()),
                    check_of(active, target, extranonce_len)?,
                )
            }};
        }
        let (msg, check) = match &mut self.sri {
            SriChannel::Standard(c) => active_job!(c, NewMiningJob),
            SriChannel::Extended(c) => active_job!(c, NewExtendedMiningJob),
        };
        self.shares.add_job(check);
        Ok(AnyMessageOwned::Mining(msg))
    }

    /// Validates an extended share.
    pub fn on_extended_share(&mut self, share: SubmitSharesExtendedOwned) -> ShareOutcome {
        let header = ShareHeader::new(
            share.channel_id,
            share.sequence_number,
            share.version,
            share.ntime,
            share.nonce,
        );
        if !matches!(self.sri, SriChannel::Extended(_)) {
            return header.reject(ERROR_INVALID_CHANNEL_ID);
        }
        let fields = ShareFields {
            job_id: share.job_id,
            version: share.version,
            ntime: share.ntime,
            nonce: share.nonce,
            extranonce: share.extranonce.as_ref(),
        };
        let verdict = self.shares.check(&fields);
        let device_extranonce = share.extranonce.as_ref().to_vec();
        self.settle(&header, verdict, &device_extranonce, |sri| match sri {
            SriChannel::Extended(c) => Some(c.validate_share(share)),
            SriChannel::Standard(_) => None,
        })
    }

    /// Validates a standard share.
    pub fn on_standard_share(&mut self, share: SubmitSharesStandardOwned) -> ShareOutcome {
        let header = ShareHeader::new(
            share.channel_id,
            share.sequence_number,
            share.version,
            share.ntime,
            share.nonce,
        );
        if !matches!(self.sri, SriChannel::Standard(_)) {
            return header.reject(ERROR_INVALID_CHANNEL_ID);
        }
        let fields = ShareFields {
            job_id: share.job_id,
            version: share.version,
            ntime: share.ntime,
            nonce: share.nonce,
            extranonce: &[],
        };
        let verdict = self.shares.check(&fields);
        self.settle(&header, verdict, &[], |sri| match sri {
            SriChannel::Standard(c) => Some(c.validate_share(share)),
            SriChannel::Extended(_) => None,
        })
    }

    /// Our verdict and SRI's on the same extended share, for the differential test.
    #[cfg(test)]
    pub(crate) fn both_verdicts(
        &mut self,
        share: SubmitSharesExtendedOwned,
    ) -> (
        Verdict,
        Option<Result<ShareValidationResult, ShareValidationError>>,
    ) {
        let fields = ShareFields {
            job_id: share.job_id,
            version: share.version,
            ntime: share.ntime,
            nonce: share.nonce,
            extranonce: share.extranonce.as_ref(),
        };
        let ours = self.shares.check(&fields);
        let sri = match &mut self.sri {
            SriChannel::Extended(c) => Some(c.validate_share(share)),
            SriChannel::Standard(_) => None,
        };
        (ours, sri)
    }

    /// Turns a verdict into the outcome. A block is confirmed by SRI's validation, which also
    /// gives the full coinbase.
    fn settle(
        &mut self,
        header: &ShareHeader,
        verdict: Verdict,
        device_extranonce: &[u8],
        sri_validate: impl FnOnce(
            &mut SriChannel,
        )
            -> Option<Result<ShareValidationResult, ShareValidationError>>,
    ) -> ShareOutcome {
        match verdict {
            Verdict::Rejected(code) => ShareOutcome {
                close: code == ERROR_TOO_MANY_SHARES,
                ..header.reject(code)
            },
            Verdict::Accepted {
                difficulty,
                template_id,
                hash,
            } => ShareOutcome {
                reply: self.shares.take_ack(false).map(|a| header.ack(a)),
                rejected: None,
                difficulty,
                block: None,
                accepted: self.accepted(header, template_id, hash, false, device_extranonce),
                close: false,
            },
            Verdict::Block {
                difficulty,
                template_id,
                hash,
            } => {
                let accepted = self.accepted(header, template_id, hash, true, device_extranonce);
                let reply = self.shares.take_ack(true).map(|a| header.ack(a));
                let block = match sri_validate(&mut self.sri) {
                    Some(Ok(ShareValidationResult::BlockFound(
                        hash,
                        Some(template_id),
                        coinbase,
                    ))) => Some(FoundBlock {
                        template_id,
                        coinbase,
                        solution: header.solution,
                        hash: BlockHash::from_raw_hash(hash),
                    }),
                    other => {
                        tracing::error!(
                            channel_id = header.channel_id,
                            sri = ?other,
                            "share meets the network target but SRI's validation does not confirm a block; not submitted"
                        );
                        None
                    }
                };
                ShareOutcome {
                    reply,
                    rejected: None,
                    difficulty,
                    block,
                    accepted,
                    close: false,
                }
            }
        }
    }
}

impl Channel {
    fn accepted(
        &self,
        header: &ShareHeader,
        template_id: u64,
        hash: [u8; 32],
        is_block: bool,
        device_extranonce: &[u8],
    ) -> Option<AcceptedShare> {
        if !self.forward {
            return None;
        }
        let prefix = match &self.sri {
            SriChannel::Standard(c) => c.get_extranonce_prefix(),
            SriChannel::Extended(c) => c.get_extranonce_prefix(),
        };
        let mut full_extranonce = prefix.to_vec();
        full_extranonce.extend_from_slice(device_extranonce);
        Some(AcceptedShare {
            template_id,
            nonce: header.solution.nonce,
            ntime: header.solution.ntime,
            version: header.solution.version,
            full_extranonce,
            hash,
            is_block,
        })
    }
}

/// The share-check data of a job SRI just made, with the channel's current target.
trait JobSource {
    fn check(&self, target: Target, extranonce_len: usize) -> Result<JobCheck, String>;
}

impl JobSource for ExtendedJob {
    fn check(&self, target: Target, extranonce_len: usize) -> Result<JobCheck, String> {
        let msg = self.get_job_message();
        let prefix = self.get_coinbase_tx_prefix_without_bip141();
        let template_id = match self.get_origin() {
            JobOrigin::NewTemplate(t) => t.template_id,
            JobOrigin::SetCustomMiningJob(_) => 0,
        };
        Ok(JobCheck {
            job_id: self.get_job_id(),
            template_id,
            version: self.get_version(),
            version_rolling_allowed: self.version_rolling_allowed(),
            min_ntime: self.get_min_ntime().ok_or("active job without min_ntime")?,
            target,
            difficulty: target.difficulty_float(),
            root: RootSource::Rolled {
                prefix: prefix_engine(&[&prefix, self.get_extranonce_prefix()]),
                suffix: self.get_coinbase_tx_suffix_without_bip141(),
                path: msg.merkle_path.iter().map(|h| h.to_array()).collect(),
                extranonce_len,
            },
        })
    }
}

impl JobSource for StandardJob {
    fn check(&self, target: Target, _extranonce_len: usize) -> Result<JobCheck, String> {
        Ok(JobCheck {
            job_id: self.get_job_id(),
            template_id: self.get_template().template_id,
            version: self.get_version(),
            version_rolling_allowed: true,
            min_ntime: self.get_min_ntime().ok_or("active job without min_ntime")?,
            target,
            difficulty: target.difficulty_float(),
            root: RootSource::Fixed(self.get_merkle_root().to_array()),
        })
    }
}

fn check_of(
    job: &impl JobSource,
    target: Target,
    extranonce_len: usize,
) -> Result<JobCheck, String> {
    job.check(target, extranonce_len)
}

impl SriChannel {
    /// Bytes of extranonce a device sends with each share (0 on standard channels).
    fn rollable_extranonce_len(&self) -> usize {
        match self {
            SriChannel::Standard(_) => 0,
            SriChannel::Extended(c) => usize::from(c.get_rollable_extranonce_size()),
        }
    }
}

/// What every share carries besides its channel-specific fields.
struct ShareHeader {
    channel_id: u32,
    seq: u32,
    solution: Solution,
}

impl ShareHeader {
    fn new(channel_id: u32, seq: u32, version: u32, ntime: u32, nonce: u32) -> Self {
        Self {
            channel_id,
            seq,
            solution: Solution {
                version,
                ntime,
                nonce,
            },
        }
    }

    /// `SubmitShares.Success` for a batch ending with this share.
    fn ack(&self, ack: Ack) -> AnyMessageOwned {
        AnyMessageOwned::Mining(MiningOwned::SubmitSharesSuccess(SubmitSharesSuccessOwned {
            channel_id: self.channel_id,
            last_sequence_number: self.seq,
            new_submits_accepted_count: ack.accepted,
            new_shares_sum: ack.work,
        }))
    }

    fn reject(&self, code: &'static str) -> ShareOutcome {
        reject(self.channel_id, self.seq, code)
    }
}

/// A rejection reply for `code`.
pub fn reject(channel_id: u32, seq: u32, code: &'static str) -> ShareOutcome {
    ShareOutcome {
        reply: error_reply(channel_id, seq, code),
        rejected: Some(code),
        difficulty: 0.0,
        block: None,
        accepted: None,
        close: false,
    }
}

fn error_reply(channel_id: u32, seq: u32, code: &'static str) -> Option<AnyMessageOwned> {
    let error_code = sv2_str(code)?;
    Some(AnyMessageOwned::Mining(MiningOwned::SubmitSharesError(
        SubmitSharesErrorOwned {
            channel_id,
            sequence_number: seq,
            error_code,
        },
    )))
}

/// An SV2 `STR0_255` from text (cut to 255 bytes).
pub fn sv2_str(text: &str) -> Option<Str0255Owned> {
    let bytes = text.as_bytes();
    Str0255Owned::new(bytes[..bytes.len().min(255)].to_vec()).ok()
}

/// Difficulty of a target relative to the difficulty-1 target.
pub fn difficulty(target: &Target) -> f64 {
    target.difficulty_float()
}
