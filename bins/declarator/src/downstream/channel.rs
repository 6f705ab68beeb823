//! One downstream channel (standard or extended) on top of SRI's `channels_sv2` server
//! channels: jobs from our work, share validation, accounting.

use jdc_shared::bitcoin::{BlockHash, Target};
use stratum_core::binary_sv2::{Str0255Owned, U256Owned};
use stratum_core::channels_sv2::server::{
    extended::ExtendedChannel,
    share_accounting::{ShareValidationError, ShareValidationResult},
    standard::StandardChannel,
};
use stratum_core::mining_sv2::{
    SetNewPrevHashOwned, SubmitSharesErrorOwned, SubmitSharesExtendedOwned,
    SubmitSharesStandardOwned, SubmitSharesSuccessOwned,
};
use stratum_core::parsers_sv2::{AnyMessageOwned, MiningOwned};

use crate::block::Solution;
use crate::work::WorkState;

/// Error codes we send that the SV2 crates do not name.
pub const ERROR_INVALID_CHANNEL_ID: &str = "invalid-channel-id";

/// A standard or extended channel.
#[derive(Debug)]
pub enum Channel {
    /// Header-only mining, one merkle root per job.
    Standard(Box<StandardChannel>),
    /// Extended channel: the device rolls its part of the extranonce.
    Extended(Box<ExtendedChannel>),
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

/// The verdict on a share, and what to answer.
#[derive(Debug)]
pub struct ShareOutcome {
    /// Reply to send (success batch ack or error), if any.
    pub reply: Option<AnyMessageOwned>,
    /// `None` when accepted, else the SV2 error code.
    pub rejected: Option<&'static str>,
    /// Set when the share is a block.
    pub block: Option<FoundBlock>,
    /// The channel must be closed (its share budget is exhausted).
    pub close: bool,
}

impl Channel {
    /// The channel id.
    pub fn id(&self) -> u32 {
        match self {
            Channel::Standard(c) => c.get_channel_id(),
            Channel::Extended(c) => c.get_channel_id(),
        }
    }

    /// `standard` or `extended`.
    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Standard(_) => "standard",
            Channel::Extended(_) => "extended",
        }
    }

    /// Current target.
    pub fn target(&self) -> Target {
        match self {
            Channel::Standard(c) => *c.get_target(),
            Channel::Extended(c) => *c.get_target(),
        }
    }

    /// Moves the channel to a new tip: the state's job as a future job, then the
    /// `SetNewPrevHash` activating it. Returns both messages in sending order.
    pub fn on_new_tip(&mut self, state: &WorkState) -> Result<Vec<AnyMessageOwned>, String> {
        let template_id = state.job.template_id;
        let snph = state.set_new_prev_hash();
        let channel_id = self.id();
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
                (MiningOwned::$variant(job), job_id)
            }};
        }
        let (job_msg, job_id) = match self {
            Channel::Standard(c) => future_job!(c, NewMiningJob),
            Channel::Extended(c) => future_job!(c, NewExtendedMiningJob),
        };
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
        macro_rules! active_job {
            ($c:expr, $variant:ident) => {{
                $c.on_new_template(template, outputs)
                    .map_err(|e| format!("{e:?}"))?;
                MiningOwned::$variant(
                    $c.get_active_job()
                        .ok_or("active job missing after on_new_template")?
                        .get_job_message()
                        .clone(),
                )
            }};
        }
        let msg = match self {
            Channel::Standard(c) => active_job!(c, NewMiningJob),
            Channel::Extended(c) => active_job!(c, NewExtendedMiningJob),
        };
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
        match self {
            Channel::Extended(c) => {
                let result = c.validate_share(share);
                header.settle(result, c.get_share_accounting())
            }
            Channel::Standard(_) => header.reject(ERROR_INVALID_CHANNEL_ID),
        }
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
        match self {
            Channel::Standard(c) => {
                let result = c.validate_share(share);
                header.settle(result, c.get_share_accounting())
            }
            Channel::Extended(_) => header.reject(ERROR_INVALID_CHANNEL_ID),
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

    /// The outcome of a validation, with the acknowledgement the accounting calls for.
    fn settle(
        &self,
        result: Result<ShareValidationResult, ShareValidationError>,
        accounting: &stratum_core::channels_sv2::server::share_accounting::ShareAccounting,
    ) -> ShareOutcome {
        let ack = ack_message(self.channel_id, self.seq, accounting);
        outcome(result, ack, self.channel_id, self.seq, self.solution)
    }

    fn reject(&self, code: &'static str) -> ShareOutcome {
        reject(self.channel_id, self.seq, code)
    }
}

fn ack_message(
    channel_id: u32,
    seq: u32,
    accounting: &stratum_core::channels_sv2::server::share_accounting::ShareAccounting,
) -> Option<AnyMessageOwned> {
    accounting.should_acknowledge().then(|| {
        AnyMessageOwned::Mining(MiningOwned::SubmitSharesSuccess(SubmitSharesSuccessOwned {
            channel_id,
            last_sequence_number: seq,
            new_submits_accepted_count: accounting.get_last_batch_accepted(),
            new_shares_sum: accounting.get_last_batch_work_sum(),
        }))
    })
}

/// A rejection reply for `code`.
pub fn reject(channel_id: u32, seq: u32, code: &'static str) -> ShareOutcome {
    ShareOutcome {
        reply: error_reply(channel_id, seq, code),
        rejected: Some(code),
        block: None,
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

fn outcome(
    result: Result<ShareValidationResult, ShareValidationError>,
    ack: Option<AnyMessageOwned>,
    channel_id: u32,
    seq: u32,
    solution: Solution,
) -> ShareOutcome {
    match result {
        Ok(ShareValidationResult::Valid(_)) => ShareOutcome {
            reply: ack,
            rejected: None,
            block: None,
            close: false,
        },
        Ok(ShareValidationResult::BlockFound(hash, template_id, coinbase)) => ShareOutcome {
            // A block is always acknowledged at once.
            reply: ack.or(Some(AnyMessageOwned::Mining(
                MiningOwned::SubmitSharesSuccess(SubmitSharesSuccessOwned {
                    channel_id,
                    last_sequence_number: seq,
                    new_submits_accepted_count: 1,
                    new_shares_sum: 1,
                }),
            ))),
            rejected: None,
            block: template_id.map(|template_id| FoundBlock {
                template_id,
                coinbase,
                solution,
                hash: BlockHash::from_raw_hash(hash),
            }),
            close: false,
        },
        Err(e) => {
            let (code, close) = match e {
                ShareValidationError::Invalid(c)
                | ShareValidationError::Stale(c)
                | ShareValidationError::InvalidJobId(c)
                | ShareValidationError::DoesNotMeetTarget(c)
                | ShareValidationError::VersionRollingNotAllowed(c)
                | ShareValidationError::DuplicateShare(c)
                | ShareValidationError::BadExtranonceSize(c) => (c, false),
                ShareValidationError::InvalidCoinbase => ("invalid-share", false),
                ShareValidationError::NoChainTip => ("stale-share", false),
                ShareValidationError::SeenSharesBudgetExhausted => ("too-many-shares", true),
            };
            ShareOutcome {
                reply: error_reply(channel_id, seq, code),
                rejected: Some(code),
                block: None,
                close,
            }
        }
    }
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
