//! A Template Distribution client on SRI's crates, for tests and benches of the
//! template-watcher's TDP server: Noise with the server's key, `SetupConnection`, messages in
//! and out, and what a client builds from a template (its coinbase, a solved header).

use std::time::{Duration, Instant};

use anyhow::Context;
use jdc_shared::bitcoin::{
    absolute::LockTime,
    block::{Header, Version},
    consensus::deserialize,
    hashes::{sha256d, Hash},
    transaction, Amount, BlockHash, CompactTarget, OutPoint, ScriptBuf, Sequence, Transaction,
    TxIn, TxMerkleNode, TxOut, Witness,
};
use jdc_shared::sv2::{connect, parse_authority_public_key, Sv2Reader, Sv2Writer};
use stratum_core::binary_sv2::Str0255Owned;
use stratum_core::common_messages_sv2::{Protocol, SetupConnectionOwned};
use stratum_core::parsers_sv2::{
    AnyMessageOwned as Message, CommonMessagesOwned, TemplateDistributionOwned as Tdp,
};
use stratum_core::template_distribution_sv2::{
    CoinbaseOutputConstraints, NewTemplateOwned, SetNewPrevHashOwned,
};
use tokio::net::TcpStream;

/// A connected TDP client.
pub struct Client {
    /// Receiving half.
    pub reader: Sv2Reader,
    /// Sending half.
    pub writer: Sv2Writer,
}

/// A `SetupConnection` for `protocol`.
pub fn setup(protocol: Protocol) -> anyhow::Result<Message> {
    let s = |v: &str| Str0255Owned::try_from(v).map_err(|e| anyhow::anyhow!("{e:?}"));
    Ok(Message::Common(CommonMessagesOwned::SetupConnection(
        SetupConnectionOwned {
            protocol,
            min_version: 2,
            max_version: 2,
            flags: 0,
            endpoint_host: s("127.0.0.1")?,
            endpoint_port: 0,
            vendor: s("jdc-tests")?,
            hardware_version: s("tdp-client")?,
            firmware: s("0")?,
            device_id: s("tdp")?,
        },
    )))
}

impl Client {
    /// Connects (verifying `key`), sends `SetupConnection` for `protocol`; returns the answer.
    pub async fn connect(
        addr: &str,
        key: &str,
        protocol: Protocol,
    ) -> anyhow::Result<(Client, Message)> {
        let tcp = TcpStream::connect(addr).await?;
        let (reader, mut writer) = connect(
            tcp,
            Some(parse_authority_public_key(key)?),
            Duration::from_secs(5),
        )
        .await?;
        writer.send(setup(protocol)?).await?;
        let mut c = Client { reader, writer };
        let answer = c.next(Duration::from_secs(5)).await?;
        Ok((c, answer))
    }

    /// Connects as a Template Distribution client (refused setup: an error), asks for
    /// `coinbase_room` bytes of coinbase outputs and waits for the current tip: returns the
    /// future template and the `SetNewPrevHash` activating it.
    pub async fn open(
        addr: &str,
        key: &str,
        coinbase_room: u32,
    ) -> anyhow::Result<(Client, NewTemplateOwned, SetNewPrevHashOwned)> {
        let (mut client, answer) =
            Client::connect(addr, key, Protocol::TemplateDistributionProtocol).await?;
        if !matches!(
            answer,
            Message::Common(CommonMessagesOwned::SetupConnectionSuccess(_))
        ) {
            anyhow::bail!("SetupConnection refused: {answer:?}");
        }
        client
            .writer
            .send(Message::TemplateDistribution(
                Tdp::CoinbaseOutputConstraints(CoinbaseOutputConstraints {
                    coinbase_output_max_additional_size: coinbase_room,
                    coinbase_output_max_additional_sigops: 4,
                }),
            ))
            .await?;
        let future = client
            .until("a future template", Duration::from_secs(10), |m| match m {
                Tdp::NewTemplate(t) if t.future_template => Some(t.clone()),
                _ => None,
            })
            .await?;
        let prev = client
            .until("its SetNewPrevHash", Duration::from_secs(5), |m| match m {
                Tdp::SetNewPrevHash(p) => Some(p.clone()),
                _ => None,
            })
            .await?;
        Ok((client, future, prev))
    }

    /// The next message within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<Message> {
        Ok(tokio::time::timeout(timeout, self.reader.recv())
            .await
            .context("nothing from the TDP server in time")??)
    }

    /// Messages until `f` picks one.
    pub async fn until<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&Tdp) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = self
                .next(left)
                .await
                .with_context(|| format!("waiting for {what}"))?;
            if let Message::TemplateDistribution(m) = &msg {
                if let Some(v) = f(m) {
                    return Ok(v);
                }
            }
        }
    }
}

/// The coinbase a client builds on `t`: the prefix plus its own bytes, `script` paid the
/// whole value, the server's outputs after it, the witness reserved value.
pub fn coinbase(t: &NewTemplateOwned, script: &[u8]) -> anyhow::Result<Transaction> {
    let mut script_sig = t.coinbase_prefix.as_ref().to_vec();
    script_sig.extend_from_slice(b"tdp-client");
    let server_outputs: TxOut = deserialize(t.coinbase_tx_outputs.as_ref())?;
    Ok(Transaction {
        version: transaction::Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig: ScriptBuf::from_bytes(script_sig),
            sequence: Sequence(t.coinbase_tx_input_sequence),
            witness: Witness::from_slice(&[vec![0u8; 32]]),
        }],
        output: vec![
            TxOut {
                value: Amount::from_sat(t.coinbase_tx_value_remaining),
                script_pubkey: ScriptBuf::from_bytes(script.to_vec()),
            },
            server_outputs,
        ],
    })
}

/// A header on `prev` meeting its target (regtest: every other nonce).
pub fn solve(t: &NewTemplateOwned, prev: &SetNewPrevHashOwned, cb: &Transaction) -> Header {
    let mut root = cb.compute_txid().to_byte_array();
    for step in t.merkle_path.iter() {
        root = sha256d::Hash::hash(&[root.as_slice(), step.to_array().as_slice()].concat())
            .to_byte_array();
    }
    let mut h = Header {
        version: Version::from_consensus(t.version as i32),
        prev_blockhash: BlockHash::from_byte_array(prev.prev_hash.to_array()),
        merkle_root: TxMerkleNode::from_byte_array(root),
        time: prev.header_timestamp,
        bits: CompactTarget::from_consensus(prev.n_bits),
        nonce: 0,
    };
    while !h.target().is_met_by(h.block_hash()) {
        h.nonce += 1;
    }
    h
}
