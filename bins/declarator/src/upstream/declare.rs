//! A job to declare: the coinbase with the pool's outputs, as `DeclareMiningJob` for the JDS and
//! `SetCustomMiningJob` for the pool, built by SRI's `JobFactory` from the same template so the
//! coinbase outputs are byte-identical in both (and in what our devices mine).

use jdc_shared::bitcoin::{Amount, TxOut};
use stratum_core::binary_sv2::{B0255Owned, B064KOwned, Seq064KOwned, U256Owned};
use stratum_core::channels_sv2::chain_tip::ChainTip;
use stratum_core::channels_sv2::server::jobs::factory::JobFactory;
use stratum_core::job_declaration_sv2::DeclareMiningJobOwned;
use stratum_core::mining_sv2::SetCustomMiningJobOwned;

use super::jds::Token;
use crate::work::{BlockBody, WorkState};

/// Why a job cannot be declared.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DeclareError {
    /// The pool's outputs claim more than the block pays.
    #[error(
        "the pool's coinbase outputs ask for {asked} sat, more than the block's {available} sat"
    )]
    OutputsExceedReward {
        /// Sum of the pool's non-payout outputs.
        asked: u64,
        /// Coinbase value of the block.
        available: u64,
    },
    /// The token came without outputs.
    #[error("the token carries no coinbase outputs (the first must be the pool's payout)")]
    NoPoolOutput,
    /// SRI's job factory refused (scriptSig too large, outputs do not add up, ...).
    #[error("cannot build the job: {0}")]
    Factory(String),
    /// A field does not fit its SV2 type.
    #[error("cannot encode {0}")]
    Encode(&'static str),
}

/// A job ready to declare and to set on the pool channel.
#[derive(Debug, Clone)]
pub struct Declaration {
    /// Our template id of the job.
    pub template_id: u64,
    /// For the JDS (Full-Template mode).
    pub declare: DeclareMiningJobOwned,
    /// For the pool; its token is the allocation token until the JDS hands out the declared
    /// one (`DeclareMiningJob.Success.new_mining_job_token`).
    pub custom: SetCustomMiningJobOwned,
    /// The coinbase outputs besides the template's (the pool's, reward in the first): what our
    /// devices' jobs must pay.
    pub outputs: Vec<TxOut>,
}

/// The pool's outputs from `token` with the block reward: the first (the pool's payout) gets
/// what the others leave of `coinbase_value`.
pub fn pool_outputs(token: &Token, coinbase_value: u64) -> Result<Vec<TxOut>, DeclareError> {
    outputs_with_reward(&token.outputs, coinbase_value)
}

/// [`pool_outputs`] from the outputs alone.
pub fn outputs_with_reward(
    pool: &[TxOut],
    coinbase_value: u64,
) -> Result<Vec<TxOut>, DeclareError> {
    let mut outputs = pool.to_vec();
    let asked: u64 = outputs.iter().skip(1).map(|o| o.value.to_sat()).sum();
    let Some(payout) = outputs.first_mut() else {
        return Err(DeclareError::NoPoolOutput);
    };
    let rest = coinbase_value
        .checked_sub(asked)
        .ok_or(DeclareError::OutputsExceedReward {
            asked,
            available: coinbase_value,
        })?;
    payout.value = Amount::from_sat(rest);
    Ok(outputs)
}

/// Builds the declaration of `state`'s job (whose transactions are `body`'s) with `token`.
/// `full_extranonce_size` is the pool's prefix plus the extranonce bytes under it.
pub fn declaration(
    factory: &JobFactory,
    state: &WorkState,
    body: &BlockBody,
    token: &Token,
    request_id: u32,
    pool_channel_id: u32,
    full_extranonce_size: usize,
) -> Result<Declaration, DeclareError> {
    let template = state.job.template.clone();
    let outputs = pool_outputs(token, template.coinbase_tx_value_remaining)?;
    let (prefix, suffix) = factory
        .new_coinbase_tx_prefix_and_suffix(template.clone(), outputs.clone(), full_extranonce_size)
        .map_err(|e| DeclareError::Factory(format!("{e:?}")))?;
    let wtxids: Vec<U256Owned> = body
        .template
        .as_ref()
        .map(|t| {
            body.order
                .iter()
                .filter_map(|&i| t.txs.get(i as usize))
                .map(|tx| U256Owned::from(tx.wtxid))
                .collect()
        })
        .unwrap_or_default();
    let mining_job_token =
        B0255Owned::new(token.token.clone()).map_err(|_| DeclareError::Encode("token"))?;
    let declare = DeclareMiningJobOwned {
        request_id,
        mining_job_token: mining_job_token.clone(),
        version: template.version,
        coinbase_tx_prefix: B064KOwned::new(prefix)
            .map_err(|_| DeclareError::Encode("coinbase prefix"))?,
        coinbase_tx_suffix: B064KOwned::new(suffix)
            .map_err(|_| DeclareError::Encode("coinbase suffix"))?,
        wtxid_list: Seq064KOwned::new(wtxids).map_err(|_| DeclareError::Encode("wtxid list"))?,
        excess_data: B064KOwned::new(Vec::new())
            .map_err(|_| DeclareError::Encode("excess data"))?,
    };
    let chain_tip = ChainTip::new(
        U256Owned::from(state.tip.prev_hash),
        state.tip.nbits,
        state.tip.header_timestamp,
    );
    let custom = factory
        .new_custom_job(
            pool_channel_id,
            request_id,
            mining_job_token,
            chain_tip,
            template,
            outputs.clone(),
            full_extranonce_size,
        )
        .map_err(|e| DeclareError::Factory(format!("{e:?}")))?;
    Ok(Declaration {
        template_id: state.job.template_id,
        declare,
        custom,
        outputs,
    })
}

#[cfg(test)]
mod tests;
