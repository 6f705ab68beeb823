//! The sim-miner in Stratum V1 mode against a tiny scripted SV1 server: real loopback TCP,
//! JSON lines, real SHA-256d. The jobs come from blocks the `bitcoin` crate builds, and the
//! server checks every share by rebuilding that block with the submitted extranonce2, ntime,
//! nonce and version bits and hashing it with the `bitcoin` crate.

use std::sync::Arc;
use std::time::Duration;

use jdc_sim_miner::{Event, Events, Sv1Config};
use serde_json::{json, Value};
use stratum_core::bitcoin::absolute::LockTime;
use stratum_core::bitcoin::block::{Header, Version};
use stratum_core::bitcoin::hashes::{sha256d, Hash};
use stratum_core::bitcoin::{
    consensus, transaction, Amount, Block, BlockHash, CompactTarget, OutPoint, ScriptBuf, Sequence,
    Target, Transaction, TxIn, TxMerkleNode, TxOut, Txid, Witness,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

/// The version bits the server allows: a subset of the 1fffe000 the miner asks for, that a
/// miner rolling 1fffe000 from its low end would leave.
const MASK: u32 = 0x1fe0_0000;
const BASE_VERSION: u32 = 0x2000_0004;
const EXTRANONCE1: [u8; 4] = [0xf0, 0x00, 0x00, 0x0f];
const EXTRANONCE2_SIZE: usize = 6;
/// Share difficulty 2^-24: target 0xffff * 2^232 (compact 0x2000ffff), about 1 hash in 256.
const DIFFICULTY: f64 = 1.0 / 16_777_216.0;
const SHARE_NBITS: u32 = 0x2000ffff;
/// Network target 0xffff * 2^224: harder than the share target, so shares must meet the
/// share target itself (a hash meeting only an easier network target would be submitted too).
const NBITS: u32 = 0x1f00ffff;
const TEST_DEADLINE: Duration = Duration::from_secs(120);

fn config(addr: std::net::SocketAddr, version_rolling: bool) -> Sv1Config {
    Sv1Config {
        server: addr.to_string(),
        user: "test-worker".into(),
        password: "secret".into(),
        version_rolling,
        threads: 2,
        max_shares_per_sec: 200.0,
        timeout: Duration::from_secs(10),
    }
}

fn now() -> u32 {
    jdc_shared::time::now_secs_u32()
}

/// A block template: a coinbase with extranonce1 || extranonce2 at the end of its scriptSig and
/// two other transactions.
struct Template {
    block: Block,
    coinb1: Vec<u8>,
    coinb2: Vec<u8>,
    job_id: &'static str,
}

impl Template {
    fn new(job_id: &'static str, height: u8, ntime: u32) -> Self {
        let extranonce_len = EXTRANONCE1.len() + EXTRANONCE2_SIZE;
        let mut script_sig = vec![0x01, height, extranonce_len as u8];
        let at = script_sig.len();
        script_sig.extend(vec![0u8; extranonce_len]);
        let coinbase = Transaction {
            version: transaction::Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: ScriptBuf::from_bytes(script_sig),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: vec![TxOut {
                value: Amount::from_sat(5_000_000_000),
                script_pubkey: ScriptBuf::from_bytes(vec![0x51]),
            }],
        };
        let raw = consensus::serialize(&coinbase);
        // version(4) + input count(1) + outpoint(36) + script length(1).
        let start = 4 + 1 + 36 + 1 + at;
        let (coinb1, coinb2) = (
            raw[..start].to_vec(),
            raw[start + extranonce_len..].to_vec(),
        );
        let mut txdata = vec![coinbase];
        for i in 1..=2u8 {
            txdata.push(Transaction {
                version: transaction::Version::TWO,
                lock_time: LockTime::ZERO,
                input: vec![TxIn {
                    previous_output: OutPoint::new(Txid::from_byte_array([i; 32]), 0),
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::MAX,
                    witness: Witness::new(),
                }],
                output: vec![TxOut {
                    value: Amount::from_sat(u64::from(i) * 1000),
                    script_pubkey: ScriptBuf::from_bytes(vec![0x51]),
                }],
            });
        }
        let header = Header {
            version: Version::from_consensus(BASE_VERSION as i32),
            prev_blockhash: BlockHash::from_byte_array(
                sha256d::Hash::hash(&[height]).to_byte_array(),
            ),
            merkle_root: TxMerkleNode::all_zeros(),
            time: ntime,
            bits: CompactTarget::from_consensus(NBITS),
            nonce: 0,
        };
        Self {
            block: Block { header, txdata },
            coinb1,
            coinb2,
            job_id,
        }
    }

    /// The coinbase's merkle branch, level by level over the txids.
    fn merkle_branch(&self) -> Vec<String> {
        let mut level: Vec<[u8; 32]> = self
            .block
            .txdata
            .iter()
            .map(|tx| tx.compute_txid().to_byte_array())
            .collect();
        let mut branch = Vec::new();
        while level.len() > 1 {
            if level.len() % 2 == 1 {
                level.push(level[level.len() - 1]);
            }
            branch.push(hex::encode(level[1]));
            level = level
                .chunks(2)
                .map(|p| sha256d::Hash::hash(&[p[0], p[1]].concat()).to_byte_array())
                .collect();
        }
        branch
    }

    fn notify(&self, clean_jobs: bool) -> Value {
        let h = &self.block.header;
        // SV1 prevhash: the display hex with its 8-digit words in reverse order.
        let display = h.prev_blockhash.to_string();
        let words: Vec<&str> = (0..8).rev().map(|i| &display[i * 8..i * 8 + 8]).collect();
        json!({"id": null, "method": "mining.notify", "params": [
            self.job_id,
            words.concat(),
            hex::encode(&self.coinb1),
            hex::encode(&self.coinb2),
            self.merkle_branch(),
            format!("{:08x}", h.version.to_consensus()),
            format!("{:08x}", h.bits.to_consensus()),
            format!("{:08x}", h.time),
            clean_jobs
        ]})
    }

    /// Checks a `mining.submit` like a pool: the block rebuilt from it must meet the share
    /// target. Returns the version bits (if any).
    fn verify(&self, params: &[Value], mask: Option<u32>) -> Option<u32> {
        let s = |i: usize| params[i].as_str().unwrap_or_else(|| panic!("{params:?}"));
        assert_eq!(s(0), "test-worker");
        assert_eq!(s(1), self.job_id, "share for the wrong job");
        let extranonce2 = hex::decode(s(2)).unwrap();
        assert_eq!(extranonce2.len(), EXTRANONCE2_SIZE, "extranonce2 size");
        let be32 = |i: usize| {
            assert_eq!(s(i).len(), 8, "{params:?}");
            u32::from_str_radix(s(i), 16).unwrap()
        };
        let (ntime, nonce) = (be32(3), be32(4));
        assert!(
            ntime >= self.block.header.time && ntime <= now() + 60,
            "ntime {ntime}"
        );
        let (version, bits) = match mask {
            Some(mask) => {
                assert_eq!(params.len(), 6, "{params:?}");
                let bits = be32(5);
                assert_eq!(bits & !mask, 0, "version bits {bits:08x} outside the mask");
                ((BASE_VERSION & !mask) | (bits & mask), Some(bits))
            }
            None => {
                assert_eq!(params.len(), 5, "{params:?}");
                (BASE_VERSION, None)
            }
        };
        let mut raw = self.coinb1.clone();
        raw.extend(EXTRANONCE1);
        raw.extend(&extranonce2);
        raw.extend(&self.coinb2);
        let mut block = self.block.clone();
        block.txdata[0] = consensus::deserialize(&raw).expect("the coinbase does not parse");
        block.header.merkle_root = block.compute_merkle_root().unwrap();
        block.header.version = Version::from_consensus(version as i32);
        block.header.time = ntime;
        block.header.nonce = nonce;
        let target = Target::from_compact(CompactTarget::from_consensus(SHARE_NBITS));
        assert!(
            target.is_met_by(block.block_hash()),
            "share above target: {}",
            block.block_hash()
        );
        bits
    }
}

/// One miner connection, seen from the server.
struct Conn {
    lines: Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
}

impl Conn {
    async fn accept(listener: &TcpListener) -> Self {
        let (stream, _): (TcpStream, _) = listener.accept().await.unwrap();
        let (read, writer) = stream.into_split();
        Self {
            lines: BufReader::new(read).lines(),
            writer,
        }
    }

    async fn recv(&mut self) -> Value {
        let line = self
            .lines
            .next_line()
            .await
            .unwrap()
            .expect("miner hung up");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
    }

    async fn send(&mut self, v: Value) {
        self.send_raw(&format!("{v}\n")).await;
    }

    async fn send_raw(&mut self, line: &str) {
        self.writer.write_all(line.as_bytes()).await.unwrap();
    }

    async fn reply(&mut self, id: &Value, result: Value) {
        self.send(json!({"id": id, "result": result, "error": null}))
            .await;
    }

    /// Reads a request, checks its method, returns (id, params).
    async fn expect(&mut self, method: &str) -> (Value, Value) {
        let v = self.recv().await;
        assert_eq!(v["method"], method, "{v}");
        (v["id"].clone(), v["params"].clone())
    }

    /// Answers configure (when version rolling is on: grants [`MASK`]), subscribe and
    /// authorize, then sets the difficulty.
    async fn handshake(&mut self, version_rolling: bool) {
        if version_rolling {
            let (id, params) = self.expect("mining.configure").await;
            assert_eq!(
                params,
                json!([["version-rolling"], {
                    "version-rolling.mask": "1fffe000",
                    "version-rolling.min-bit-count": 2
                }])
            );
            let mask = format!("{MASK:08x}");
            self.reply(
                &id,
                json!({"version-rolling": true, "version-rolling.mask": mask}),
            )
            .await;
        }
        let (id, params) = self.expect("mining.subscribe").await;
        let agent = params[0].as_str().unwrap();
        assert!(agent.starts_with("jdc-sim-miner/"), "{agent}");
        let subscriptions = json!([["mining.set_difficulty", "d1"], ["mining.notify", "n1"]]);
        self.reply(
            &id,
            json!([subscriptions, hex::encode(EXTRANONCE1), EXTRANONCE2_SIZE]),
        )
        .await;
        let (id, params) = self.expect("mining.authorize").await;
        assert_eq!(params, json!(["test-worker", "secret"]));
        self.reply(&id, json!(true)).await;
        self.send(json!({"id": null, "method": "mining.set_difficulty", "params": [DIFFICULTY]}))
            .await;
    }

    /// The next `mining.submit`: (id, params).
    async fn submit(&mut self) -> (Value, Vec<Value>) {
        let (id, params) = self.expect("mining.submit").await;
        (id, params.as_array().unwrap().clone())
    }
}

/// Waits for the first event matching `pred`.
async fn wait_event(events: &mut UnboundedReceiver<Event>, pred: impl Fn(&Event) -> bool) -> Event {
    loop {
        let e = events.recv().await.expect("event channel closed");
        if pred(&e) {
            return e;
        }
    }
}

fn start(
    addr: std::net::SocketAddr,
    version_rolling: bool,
) -> (
    UnboundedReceiver<Event>,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), jdc_sim_miner::MinerError>>,
) {
    let (events, ev) = Events::channel();
    let shutdown = CancellationToken::new();
    let miner = tokio::spawn(jdc_sim_miner::sv1::run(
        config(addr, version_rolling),
        Arc::new(events),
        shutdown.clone(),
    ));
    (ev, shutdown, miner)
}

#[tokio::test]
async fn sv1_mines_valid_rolled_shares_counts_rejects_and_follows_clean_jobs() {
    tokio::time::timeout(TEST_DEADLINE, mining_scenario())
        .await
        .expect("scenario stalled");
}

async fn mining_scenario() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (mut ev, shutdown, miner) = start(listener.local_addr().unwrap(), true);
    let mut conn = Conn::accept(&listener).await;
    conn.handshake(true).await;
    let job1 = Template::new("j1", 1, now());
    conn.send(job1.notify(true)).await;

    assert!(matches!(
        wait_event(&mut ev, |e| matches!(e, Event::Connected { .. })).await,
        Event::Connected {
            authenticated: false,
            ..
        }
    ));
    match wait_event(&mut ev, |e| matches!(e, Event::ChannelOpened { .. })).await {
        Event::ChannelOpened {
            kind,
            extranonce_prefix,
            extranonce_size,
            ..
        } => {
            assert_eq!(kind, "sv1");
            assert_eq!(extranonce_prefix, "f000000f");
            assert_eq!(extranonce_size, EXTRANONCE2_SIZE as u16);
        }
        _ => unreachable!(),
    }

    let job_bits = BASE_VERSION & MASK;
    let mut rolled = 0;
    for i in 0..12 {
        let (id, params) = conn.submit().await;
        let bits = job1.verify(&params, Some(MASK));
        if bits != Some(job_bits) {
            rolled += 1;
        }
        match i {
            3 => {
                conn.send(
                    json!({"id": id, "result": null, "error": [23, "Low difficulty share", null]}),
                )
                .await
            }
            5 => conn.reply(&id, json!(false)).await,
            _ => conn.reply(&id, json!(true)).await,
        }
    }
    assert!(rolled > 0, "no share rolled the version");

    match wait_event(&mut ev, |e| matches!(e, Event::NewJob { .. })).await {
        Event::NewJob {
            merkle_path_len,
            coinbase_outputs,
            version,
            version_rolling_allowed,
            ..
        } => {
            assert_eq!(merkle_path_len, Some(2));
            assert_eq!((version, version_rolling_allowed), (BASE_VERSION, true));
            let outputs = coinbase_outputs.expect("coinbase parsed");
            assert_eq!(
                (outputs[0].value, outputs[0].script.as_str()),
                (5_000_000_000, "51")
            );
        }
        _ => unreachable!(),
    }
    match wait_event(&mut ev, |e| matches!(e, Event::SetNewPrevHash { .. })).await {
        Event::SetNewPrevHash {
            prev_hash, nbits, ..
        } => {
            assert_eq!(prev_hash, job1.block.header.prev_blockhash.to_string());
            assert_eq!(nbits, NBITS);
        }
        _ => unreachable!(),
    }
    let mut rejected = Vec::new();
    let mut accepted = 0;
    while accepted + rejected.len() < 12 {
        match ev.recv().await.unwrap() {
            Event::ShareAccepted { .. } => accepted += 1,
            Event::ShareRejected {
                sequence_number,
                error_code,
                ..
            } => rejected.push((sequence_number, error_code)),
            _ => {}
        }
    }
    assert_eq!(accepted, 10);
    assert_eq!(
        rejected,
        vec![
            (4, "Low difficulty share (23)".to_string()),
            (6, "result false".to_string())
        ]
    );

    // A new tip with clean_jobs: after the first job 2 share, no job 1 share may come.
    let job2 = Template::new("j2", 2, now());
    conn.send(job2.notify(true)).await;
    let mut on_new_tip = 0;
    while on_new_tip < 5 {
        let (id, params) = conn.submit().await;
        if params[1] == "j1" {
            assert_eq!(on_new_tip, 0, "a job 1 share after job 2 shares");
            job1.verify(&params, Some(MASK));
        } else {
            job2.verify(&params, Some(MASK));
            on_new_tip += 1;
        }
        conn.reply(&id, json!(true)).await;
    }

    // Connection loss: the miner reports it and comes back.
    drop(conn);
    wait_event(&mut ev, |e| matches!(e, Event::Disconnected { .. })).await;
    let mut conn = Conn::accept(&listener).await;
    conn.handshake(true).await;
    wait_event(&mut ev, |e| matches!(e, Event::Connected { .. })).await;

    shutdown.cancel();
    miner.await.unwrap().unwrap();
}

#[tokio::test]
async fn sv1_without_version_rolling_sends_no_configure_and_no_version_bits() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (_ev, shutdown, miner) = start(listener.local_addr().unwrap(), false);
        let mut conn = Conn::accept(&listener).await;
        conn.handshake(false).await;
        let job = Template::new("solo", 3, now());
        conn.send(job.notify(true)).await;
        for _ in 0..3 {
            let (id, params) = conn.submit().await;
            assert_eq!(job.verify(&params, None), None);
            conn.reply(&id, json!(true)).await;
        }
        shutdown.cancel();
        miner.await.unwrap().unwrap();
    })
    .await
    .expect("scenario stalled");
}

#[tokio::test]
async fn sv1_refuses_oversized_lines_garbage_and_unknown_methods_then_reconnects() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (mut ev, shutdown, miner) = start(listener.local_addr().unwrap(), true);
        let cases = [
            ("x".repeat(70_000) + "\n", "line longer than 65536 bytes"),
            ("this is not json\n".to_string(), "not JSON"),
            (
                "{\"id\":null,\"method\":\"mining.bogus\",\"params\":[]}\n".to_string(),
                "unexpected method `mining.bogus`",
            ),
            (
                "{\"id\":null,\"method\":\"mining.notify\",\"params\":[\"j\"]}\n".to_string(),
                "mining.notify:",
            ),
            (
                "{\"id\":999,\"result\":true,\"error\":null}\n".to_string(),
                "reply to request 999, which is not pending",
            ),
        ];
        for (line, problem) in cases {
            let mut conn = Conn::accept(&listener).await;
            conn.handshake(true).await;
            wait_event(&mut ev, |e| matches!(e, Event::ChannelOpened { .. })).await;
            conn.send_raw(&line).await;
            match wait_event(&mut ev, |e| matches!(e, Event::Disconnected { .. })).await {
                Event::Disconnected { reason } => {
                    assert!(reason.contains(problem), "{problem:?} not in {reason:?}")
                }
                _ => unreachable!(),
            }
        }
        // Still reconnecting after all that.
        let mut conn = Conn::accept(&listener).await;
        conn.handshake(true).await;
        wait_event(&mut ev, |e| matches!(e, Event::ChannelOpened { .. })).await;
        shutdown.cancel();
        miner.await.unwrap().unwrap();
    })
    .await
    .expect("scenario stalled");
}
