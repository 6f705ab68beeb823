//! A scripted SV2 mining device for tests that need to control exactly when a share is found
//! and when it is submitted (e.g. a block found on one pool's job, submitted after the
//! declarator moved to another pool). One extended channel; it records every job with the
//! extranonce prefix it was sent under, the current tip, and solves a job for a block on demand
//! (regtest: a couple of hashes).

use std::collections::HashMap;
use std::time::Duration;

use jdc_shared::bitcoin::block::{Header, Version};
use jdc_shared::bitcoin::hashes::{sha256d, Hash};
use jdc_shared::bitcoin::{BlockHash, CompactTarget, Target, TxMerkleNode};
use jdc_shared::sv2::{connect, parse_authority_public_key, Message, Sv2Reader, Sv2Writer};
use stratum_core::binary_sv2::{B032Owned, Str0255Owned, U256Owned};
use stratum_core::common_messages_sv2::{Protocol, SetupConnectionOwned};
use stratum_core::mining_sv2::{
    NewExtendedMiningJobOwned, OpenExtendedMiningChannelOwned, SubmitSharesExtendedOwned,
};
use stratum_core::parsers_sv2::{CommonMessagesOwned, MiningOwned};
use tokio::net::TcpStream;

/// A job as received, with the extranonce prefix in force when it arrived.
#[derive(Debug, Clone)]
pub struct DeviceJob {
    /// The job.
    pub job: NewExtendedMiningJobOwned,
    /// The channel's extranonce prefix for this job.
    pub prefix: Vec<u8>,
}

/// The chain tip the device mines on.
#[derive(Debug, Clone, Copy)]
pub struct DeviceTip {
    /// Previous block hash (internal order).
    pub prev_hash: [u8; 32],
    /// Header time floor.
    pub min_ntime: u32,
    /// Compact network target.
    pub nbits: u32,
}

/// A share that is also a block, ready to submit.
#[derive(Debug, Clone)]
pub struct Solution {
    /// The share.
    pub share: SubmitSharesExtendedOwned,
    /// The block's hash.
    pub block_hash: BlockHash,
}

/// A connected device with one extended channel.
pub struct TestDevice {
    reader: Sv2Reader,
    writer: Sv2Writer,
    /// The channel id.
    pub channel_id: u32,
    /// The channel's current extranonce prefix.
    pub prefix: Vec<u8>,
    /// Extranonce bytes the device rolls.
    pub extranonce_size: usize,
    /// Jobs received, by id.
    pub jobs: HashMap<u32, DeviceJob>,
    /// The current tip, once known.
    pub tip: Option<DeviceTip>,
    /// The job to mine now (activated by `SetNewPrevHash`, or sent for the current tip).
    pub active_job: Option<u32>,
    sequence: u32,
}

impl TestDevice {
    /// Connects to the declarator at `addr` (certificate signed by `authority`), sets up a
    /// Mining connection and opens an extended channel.
    pub async fn connect(addr: &str, authority: &str) -> anyhow::Result<TestDevice> {
        let key = parse_authority_public_key(authority)?;
        let tcp = TcpStream::connect(addr).await?;
        let (mut reader, mut writer) = connect(tcp, Some(key), Duration::from_secs(5)).await?;
        let s = |v: &str| Str0255Owned::try_from(v).map_err(|e| anyhow::anyhow!("{e:?}"));
        writer
            .send(Message::Common(CommonMessagesOwned::SetupConnection(
                SetupConnectionOwned {
                    protocol: Protocol::MiningProtocol,
                    min_version: 2,
                    max_version: 2,
                    flags: 0,
                    endpoint_host: s("127.0.0.1")?,
                    endpoint_port: 0,
                    vendor: s("jdc-tests")?,
                    hardware_version: s("scripted")?,
                    firmware: s("0")?,
                    device_id: s("device")?,
                },
            )))
            .await?;
        match recv(&mut reader).await? {
            Message::Common(CommonMessagesOwned::SetupConnectionSuccess(_)) => {}
            other => anyhow::bail!("expected SetupConnection.Success, got {other:?}"),
        }
        writer
            .send(Message::Mining(MiningOwned::OpenExtendedMiningChannel(
                OpenExtendedMiningChannelOwned {
                    request_id: 1,
                    user_identity: s("device")?,
                    nominal_hash_rate: 1e6,
                    max_target: U256Owned::from([0xff; 32]),
                    min_extranonce_size: 4,
                },
            )))
            .await?;
        let device = loop {
            if let Message::Mining(MiningOwned::OpenExtendedMiningChannelSuccess(ok)) =
                recv(&mut reader).await?
            {
                break TestDevice {
                    reader,
                    writer,
                    channel_id: ok.channel_id,
                    prefix: ok.extranonce_prefix.as_bytes().to_vec(),
                    extranonce_size: usize::from(ok.extranonce_size),
                    jobs: HashMap::new(),
                    tip: None,
                    active_job: None,
                    sequence: 0,
                };
            }
        };
        Ok(device)
    }

    /// Receives the next Mining message (within `timeout`), recording jobs, tips and prefix
    /// changes.
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<MiningOwned> {
        let msg = tokio::time::timeout(timeout, recv(&mut self.reader))
            .await
            .map_err(|_| anyhow::anyhow!("no message from the declarator within {timeout:?}"))??;
        let Message::Mining(m) = msg else {
            anyhow::bail!("unexpected message {msg:?}");
        };
        match &m {
            MiningOwned::NewExtendedMiningJob(j) => {
                if j.min_ntime.clone().into_inner().is_some() {
                    self.active_job = Some(j.job_id);
                }
                self.jobs.insert(
                    j.job_id,
                    DeviceJob {
                        job: j.clone(),
                        prefix: self.prefix.clone(),
                    },
                );
            }
            MiningOwned::SetNewPrevHash(p) => {
                self.active_job = Some(p.job_id);
                self.tip = Some(DeviceTip {
                    prev_hash: p.prev_hash.to_array(),
                    min_ntime: p.min_ntime,
                    nbits: p.nbits,
                });
            }
            MiningOwned::SetExtranoncePrefix(p) => {
                self.prefix = p.extranonce_prefix.as_bytes().to_vec();
            }
            _ => {}
        }
        Ok(m)
    }

    /// Receives until `pred` holds for a message (recording all of them), within `timeout`.
    pub async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&TestDevice, &MiningOwned) -> bool,
    ) -> anyhow::Result<MiningOwned> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = self
                .next(left)
                .await
                .map_err(|e| anyhow::anyhow!("waiting for {what}: {e}"))?;
            if pred(self, &m) {
                return Ok(m);
            }
        }
    }

    /// Whether the device has a tip and mines a job sent under an extranonce prefix starting
    /// with `tag`.
    pub fn mines_under(&self, tag: &[u8]) -> bool {
        self.tip.is_some()
            && self
                .active_job
                .and_then(|id| self.jobs.get(&id))
                .is_some_and(|j| j.prefix.starts_with(tag))
    }

    /// Whether `m` is new work (a job or a tip) after which the device mines under `tag`.
    pub fn new_work_under(&self, m: &MiningOwned, tag: &[u8]) -> bool {
        matches!(
            m,
            MiningOwned::NewExtendedMiningJob(_) | MiningOwned::SetNewPrevHash(_)
        ) && self.mines_under(tag)
    }

    /// Finds a header for `job_id` on the current tip that meets the network target.
    pub fn solve(&mut self, job_id: u32) -> anyhow::Result<Solution> {
        let job = self
            .jobs
            .get(&job_id)
            .ok_or_else(|| anyhow::anyhow!("no job {job_id}"))?;
        let tip = self.tip.ok_or_else(|| anyhow::anyhow!("no tip yet"))?;
        let j = &job.job;
        let extranonce = vec![0x5a; self.extranonce_size];
        let mut coinbase = j.coinbase_tx_prefix.as_ref().to_vec();
        coinbase.extend_from_slice(&job.prefix);
        coinbase.extend_from_slice(&extranonce);
        coinbase.extend_from_slice(j.coinbase_tx_suffix.as_ref());
        let mut root = sha256d::Hash::hash(&coinbase).to_byte_array();
        for node in j.merkle_path.iter().map(|h| h.to_array()) {
            let mut both = root.to_vec();
            both.extend_from_slice(&node);
            root = sha256d::Hash::hash(&both).to_byte_array();
        }
        let ntime = tip
            .min_ntime
            .max(j.min_ntime.clone().into_inner().unwrap_or(0));
        let target = Target::from_compact(CompactTarget::from_consensus(tip.nbits));
        let mut header = Header {
            version: Version::from_consensus(j.version as i32),
            prev_blockhash: BlockHash::from_byte_array(tip.prev_hash),
            merkle_root: TxMerkleNode::from_byte_array(root),
            time: ntime,
            bits: CompactTarget::from_consensus(tip.nbits),
            nonce: 0,
        };
        while !target.is_met_by(header.block_hash()) {
            header.nonce = header
                .nonce
                .checked_add(1)
                .ok_or_else(|| anyhow::anyhow!("no nonce meets the network target"))?;
        }
        self.sequence += 1;
        Ok(Solution {
            share: SubmitSharesExtendedOwned {
                channel_id: self.channel_id,
                sequence_number: self.sequence,
                job_id,
                nonce: header.nonce,
                ntime,
                version: j.version,
                extranonce: B032Owned::new(extranonce)
                    .map_err(|e| anyhow::anyhow!("extranonce: {e:?}"))?,
            },
            block_hash: header.block_hash(),
        })
    }

    /// Sends a share.
    pub async fn submit(&mut self, share: SubmitSharesExtendedOwned) -> anyhow::Result<()> {
        self.writer
            .send(Message::Mining(MiningOwned::SubmitSharesExtended(share)))
            .await?;
        Ok(())
    }
}

async fn recv(reader: &mut Sv2Reader) -> anyhow::Result<Message> {
    Ok(reader.recv().await?)
}
