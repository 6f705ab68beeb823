//! The sim-miner against a tiny in-process SV2 server built on `jdc_shared::sv2::accept`:
//! real loopback TCP, real Noise, real SHA-256d. The server checks every share it gets by
//! rebuilding the coinbase, the merkle root and the header hash itself.

use std::sync::Arc;
use std::time::Duration;

use jdc_shared::sv2::{self, AuthorityKeys, Message, Sv2Reader, Sv2Writer};
use jdc_sim_miner::{ChannelKind, Event, Events, MinerConfig};
use stratum_core::binary_sv2::{
    B032Owned, B064KOwned, Seq0255Owned, Str0255Owned, Sv2OptionOwned, U256Owned,
};
use stratum_core::bitcoin::absolute::LockTime;
use stratum_core::bitcoin::block::{Header, Version};
use stratum_core::bitcoin::hashes::Hash;
use stratum_core::bitcoin::{
    consensus, transaction, Amount, BlockHash, CompactTarget, OutPoint, ScriptBuf, Sequence,
    Target, Transaction, TxIn, TxMerkleNode, TxOut, Witness,
};
use stratum_core::channels_sv2::merkle_root::merkle_root_from_path;
use stratum_core::channels_sv2::VERSION_ROLLING_MASK;
use stratum_core::common_messages_sv2::{Protocol, SetupConnectionSuccess};
use stratum_core::mining_sv2::{
    CloseChannelOwned, NewExtendedMiningJobOwned, NewMiningJobOwned,
    OpenExtendedMiningChannelSuccessOwned, OpenStandardMiningChannelSuccessOwned,
    SetNewPrevHashOwned, SubmitSharesSuccess,
};
use stratum_core::parsers_sv2::{CommonMessagesOwned, MiningOwned};
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

/// Network target 0xffff * 2^232, just under the share target below: nearly every share is
/// also a block, and a share with a wrong header passes the check only once in ~256 tries.
const NBITS: u32 = 0x2000ffff;
const BASE_VERSION: u32 = 0x2000_0000;
const CHANNEL_ID: u32 = 7;
const GROUP_ID: u32 = 1;
const EXTRANONCE_PREFIX: [u8; 4] = [0xde, 0xad, 0xbe, 0xef];
const EXTRANONCE_SIZE: usize = 8;
const TEST_DEADLINE: Duration = Duration::from_secs(120);

/// Share target 2^248 - 1 (LE): easy enough for a debug-build CPU miner.
fn share_target() -> [u8; 32] {
    let mut t = [0xff; 32];
    t[31] = 0x00;
    t
}

fn config(addr: std::net::SocketAddr, authority: &AuthorityKeys, kind: ChannelKind) -> MinerConfig {
    MinerConfig {
        server: addr.to_string(),
        authority: Some(authority.public_key()),
        channel: kind,
        user_identity: "test-worker".into(),
        nominal_hashrate: 1e6,
        max_target: [0xff; 32],
        min_extranonce_size: 4,
        threads: 2,
        max_shares_per_sec: 200.0,
        timeout: Duration::from_secs(10),
    }
}

/// A real coinbase paying 50 BTC to OP_TRUE, split around a 12-byte extranonce at the end of
/// its scriptSig: (prefix, suffix) as a server puts them in NewExtendedMiningJob.
fn coinbase_parts() -> (Vec<u8>, Vec<u8>) {
    let mut script_sig = vec![0x03, 0x65, 0x00, 0x00, 12];
    let extranonce_at = script_sig.len();
    script_sig.extend([0u8; 12]);
    let tx = Transaction {
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
    let raw = consensus::serialize(&tx);
    // version(4) + input count(1) + outpoint(36) + script length(1) = start of the scriptSig.
    let start = 4 + 1 + 36 + 1 + extranonce_at;
    (raw[..start].to_vec(), raw[start + 12..].to_vec())
}

fn path() -> Vec<[u8; 32]> {
    vec![[0x11; 32], [0x22; 32]]
}

fn ext_job(job_id: u32, min_ntime: Option<u32>) -> Message {
    let (prefix, suffix) = coinbase_parts();
    Message::Mining(MiningOwned::NewExtendedMiningJob(
        NewExtendedMiningJobOwned {
            channel_id: GROUP_ID,
            job_id,
            min_ntime: Sv2OptionOwned::new(min_ntime),
            version: BASE_VERSION,
            version_rolling_allowed: true,
            merkle_path: Seq0255Owned::new(path().into_iter().map(U256Owned::from).collect())
                .unwrap(),
            coinbase_tx_prefix: B064KOwned::new(prefix).unwrap(),
            coinbase_tx_suffix: B064KOwned::new(suffix).unwrap(),
        },
    ))
}

fn prev_hash_msg(job_id: u32, prev_hash: [u8; 32], min_ntime: u32) -> Message {
    Message::Mining(MiningOwned::SetNewPrevHash(SetNewPrevHashOwned {
        channel_id: CHANNEL_ID,
        job_id,
        prev_hash: U256Owned::from(prev_hash),
        min_ntime,
        nbits: NBITS,
    }))
}

fn now() -> u32 {
    jdc_shared::time::now_secs_u32()
}

/// Accepts the miner's connection and answers SetupConnection; returns the setup flags.
async fn accept_and_setup(
    listener: &TcpListener,
    keys: &AuthorityKeys,
) -> (Sv2Reader, Sv2Writer, u32) {
    let (stream, _) = listener.accept().await.unwrap();
    let (mut rx, mut tx) = sv2::accept(
        stream,
        keys,
        Duration::from_secs(3600),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let flags = match rx.recv().await.unwrap() {
        Message::Common(CommonMessagesOwned::SetupConnection(s)) => {
            assert_eq!(s.protocol, Protocol::MiningProtocol);
            assert_eq!((s.min_version, s.max_version), (2, 2));
            assert_eq!(s.vendor.as_bytes(), b"jdc-sim-miner");
            assert!(!s.firmware.as_bytes().is_empty());
            s.flags
        }
        other => panic!("expected SetupConnection, got {other:?}"),
    };
    tx.send(Message::Common(
        CommonMessagesOwned::SetupConnectionSuccess(SetupConnectionSuccess {
            used_version: 2,
            flags: 0,
        }),
    ))
    .await
    .unwrap();
    (rx, tx, flags)
}

/// What the server knows about the work a share is for.
struct ServerJob {
    job_id: u32,
    prev_hash: [u8; 32],
    min_ntime: u32,
}

/// Checks an extended share like a pool would, returns its (version, header hash).
fn verify_extended(msg: Message, job: &ServerJob, target: &[u8; 32]) -> (u32, u32, BlockHash) {
    let Message::Mining(MiningOwned::SubmitSharesExtended(s)) = msg else {
        panic!("expected SubmitSharesExtended, got {msg:?}");
    };
    assert_eq!(s.channel_id, CHANNEL_ID);
    assert_eq!(s.job_id, job.job_id, "share for the wrong job");
    assert_eq!(s.extranonce.as_bytes().len(), EXTRANONCE_SIZE);
    assert!(s.ntime >= job.min_ntime);
    assert_eq!(
        s.version & !VERSION_ROLLING_MASK,
        BASE_VERSION & !VERSION_ROLLING_MASK
    );
    let (prefix, suffix) = coinbase_parts();
    let mut full_extranonce = EXTRANONCE_PREFIX.to_vec();
    full_extranonce.extend_from_slice(s.extranonce.as_bytes());
    // Deserializes the coinbase: fails unless prefix || extranonce || suffix is a transaction.
    let root = merkle_root_from_path(&prefix, &suffix, &full_extranonce, &path()).unwrap();
    let header = Header {
        version: Version::from_consensus(s.version as i32),
        prev_blockhash: BlockHash::from_byte_array(job.prev_hash),
        merkle_root: TxMerkleNode::from_byte_array(root),
        time: s.ntime,
        bits: CompactTarget::from_consensus(NBITS),
        nonce: s.nonce,
    };
    let hash = header.block_hash();
    assert!(
        Target::from_le_bytes(*target).is_met_by(hash),
        "share above target"
    );
    (s.sequence_number, s.version, hash)
}

async fn ack(tx: &mut Sv2Writer, sequence: u32) {
    tx.send(Message::Mining(MiningOwned::SubmitSharesSuccess(
        SubmitSharesSuccess {
            channel_id: CHANNEL_ID,
            last_sequence_number: sequence,
            new_submits_accepted_count: 1,
            new_shares_sum: 1,
        },
    )))
    .await
    .unwrap();
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

#[tokio::test]
async fn extended_channel_mines_valid_shares_and_follows_new_tips() {
    tokio::time::timeout(TEST_DEADLINE, extended_scenario())
        .await
        .expect("scenario stalled");
}

async fn extended_scenario() {
    let keys = AuthorityKeys::generate();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (events, mut ev) = Events::channel();
    let shutdown = CancellationToken::new();
    let miner = tokio::spawn(jdc_sim_miner::run(
        config(addr, &keys, ChannelKind::Extended),
        Arc::new(events),
        shutdown.clone(),
    ));

    let (mut rx, mut tx, flags) = accept_and_setup(&listener, &keys).await;
    assert_eq!(flags, 0);
    assert!(matches!(
        wait_event(&mut ev, |e| matches!(e, Event::Connected { .. })).await,
        Event::Connected {
            authenticated: true,
            ..
        }
    ));
    let open = rx.recv().await.unwrap();
    let Message::Mining(MiningOwned::OpenExtendedMiningChannel(open)) = open else {
        panic!("expected OpenExtendedMiningChannel, got {open:?}");
    };
    assert_eq!(open.min_extranonce_size, 4);
    assert_eq!(open.user_identity.as_bytes(), b"test-worker");
    let target = share_target();
    tx.send(Message::Mining(
        MiningOwned::OpenExtendedMiningChannelSuccess(OpenExtendedMiningChannelSuccessOwned {
            request_id: open.request_id,
            channel_id: CHANNEL_ID,
            target: U256Owned::from(target),
            extranonce_size: EXTRANONCE_SIZE as u16,
            extranonce_prefix: B032Owned::new(EXTRANONCE_PREFIX.to_vec()).unwrap(),
            group_channel_id: GROUP_ID,
        }),
    ))
    .await
    .unwrap();
    match wait_event(&mut ev, |e| matches!(e, Event::ChannelOpened { .. })).await {
        Event::ChannelOpened {
            channel_id,
            extranonce_prefix,
            extranonce_size,
            target: t,
            kind,
            ..
        } => {
            assert_eq!(channel_id, CHANNEL_ID);
            assert_eq!(extranonce_prefix, "deadbeef");
            assert_eq!(extranonce_size, EXTRANONCE_SIZE as u16);
            assert_eq!(kind, "extended");
            assert_eq!(t, format!("00{}", "f".repeat(62)));
        }
        _ => unreachable!(),
    }

    // First tip: a future job (addressed to the group) activated by SetNewPrevHash.
    let job1 = ServerJob {
        job_id: 1,
        prev_hash: [0xa1; 32],
        min_ntime: now(),
    };
    tx.send_all(vec![
        ext_job(1, None),
        prev_hash_msg(1, job1.prev_hash, job1.min_ntime),
    ])
    .await
    .unwrap();

    let mut rolled = 0;
    let mut blocks = 0;
    for _ in 0..12 {
        let (seq, version, hash) = verify_extended(rx.recv().await.unwrap(), &job1, &target);
        if version != BASE_VERSION {
            rolled += 1;
        }
        if Target::from_compact(CompactTarget::from_consensus(NBITS)).is_met_by(hash) {
            blocks += 1;
        }
        ack(&mut tx, seq).await;
    }
    assert!(rolled > 0, "no share used a rolled version");
    assert!(blocks > 0, "no share met the regtest network target");

    // Events of the first tip.
    match wait_event(&mut ev, |e| matches!(e, Event::NewJob { .. })).await {
        Event::NewJob {
            job_id,
            future,
            merkle_path_len,
            coinbase_outputs,
            channel_id,
            ..
        } => {
            assert_eq!(
                (job_id, future, merkle_path_len, channel_id),
                (1, true, Some(2), GROUP_ID)
            );
            let outputs = coinbase_outputs.expect("coinbase parsed");
            assert_eq!(outputs.len(), 1);
            assert_eq!(
                (outputs[0].value, outputs[0].script.as_str()),
                (5_000_000_000, "51")
            );
        }
        _ => unreachable!(),
    }
    match wait_event(&mut ev, |e| matches!(e, Event::SetNewPrevHash { .. })).await {
        Event::SetNewPrevHash {
            job_id,
            prev_hash,
            nbits,
            known_job,
            ..
        } => {
            assert_eq!((job_id, nbits, known_job), (1, NBITS, true));
            assert_eq!(prev_hash, "a1".repeat(32));
        }
        _ => unreachable!(),
    }
    assert!(matches!(
        wait_event(&mut ev, |e| matches!(e, Event::ShareAccepted { .. })).await,
        Event::ShareAccepted {
            channel_id: CHANNEL_ID,
            ..
        }
    ));
    assert!(matches!(
        wait_event(&mut ev, |e| matches!(e, Event::BlockCandidate { .. })).await,
        Event::BlockCandidate { job_id: 1, .. }
    ));

    // New tip: the miner must switch to job 2 (shares already in flight may still be for job 1).
    let job2 = ServerJob {
        job_id: 2,
        prev_hash: [0xb2; 32],
        min_ntime: now(),
    };
    tx.send_all(vec![
        ext_job(2, None),
        prev_hash_msg(2, job2.prev_hash, job2.min_ntime),
    ])
    .await
    .unwrap();
    let mut on_new_tip = 0;
    while on_new_tip < 5 {
        let msg = rx.recv().await.unwrap();
        let job = match &msg {
            Message::Mining(MiningOwned::SubmitSharesExtended(s)) if s.job_id == 1 => {
                assert_eq!(on_new_tip, 0, "a job 1 share after job 2 shares");
                &job1
            }
            _ => {
                on_new_tip += 1;
                &job2
            }
        };
        let (seq, _, _) = verify_extended(msg, job, &target);
        ack(&mut tx, seq).await;
    }

    // A non-future job on the same tip replaces job 2 at once.
    let job3 = ServerJob {
        job_id: 3,
        prev_hash: job2.prev_hash,
        min_ntime: job2.min_ntime,
    };
    tx.send(ext_job(3, Some(job3.min_ntime))).await.unwrap();
    loop {
        let msg = rx.recv().await.unwrap();
        let is3 =
            matches!(&msg, Message::Mining(MiningOwned::SubmitSharesExtended(s)) if s.job_id == 3);
        verify_extended(msg, if is3 { &job3 } else { &job2 }, &target);
        if is3 {
            break;
        }
    }

    // Connection loss: the miner reports it and reconnects.
    drop((rx, tx));
    wait_event(&mut ev, |e| matches!(e, Event::Disconnected { .. })).await;
    let (_rx, _tx, _) = accept_and_setup(&listener, &keys).await;
    wait_event(&mut ev, |e| matches!(e, Event::Connected { .. })).await;

    shutdown.cancel();
    miner.await.unwrap().unwrap();
}

#[tokio::test]
async fn standard_channel_mines_header_only_and_reconnects_on_close_channel() {
    tokio::time::timeout(TEST_DEADLINE, standard_scenario())
        .await
        .expect("scenario stalled");
}

async fn standard_scenario() {
    let keys = AuthorityKeys::generate();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (events, mut ev) = Events::channel();
    let shutdown = CancellationToken::new();
    let miner = tokio::spawn(jdc_sim_miner::run(
        config(addr, &keys, ChannelKind::Standard),
        Arc::new(events),
        shutdown.clone(),
    ));

    let (mut rx, mut tx, flags) = accept_and_setup(&listener, &keys).await;
    assert_eq!(flags & 1, 1, "REQUIRES_STANDARD_JOBS not set");
    let open = rx.recv().await.unwrap();
    let Message::Mining(MiningOwned::OpenStandardMiningChannel(open)) = open else {
        panic!("expected OpenStandardMiningChannel, got {open:?}");
    };
    let target = share_target();
    tx.send(Message::Mining(
        MiningOwned::OpenStandardMiningChannelSuccess(OpenStandardMiningChannelSuccessOwned {
            request_id: open.request_id,
            channel_id: CHANNEL_ID,
            target: U256Owned::from(target),
            extranonce_prefix: B032Owned::new(vec![1; 8]).unwrap(),
            group_channel_id: GROUP_ID,
        }),
    ))
    .await
    .unwrap();
    let merkle_root = [0x5a; 32];
    let prev_hash = [0xc3; 32];
    let min_ntime = now();
    tx.send_all(vec![
        Message::Mining(MiningOwned::NewMiningJob(NewMiningJobOwned {
            channel_id: CHANNEL_ID,
            job_id: 4,
            min_ntime: Sv2OptionOwned::new(None),
            version: BASE_VERSION,
            merkle_root: U256Owned::from(merkle_root),
        })),
        prev_hash_msg(4, prev_hash, min_ntime),
    ])
    .await
    .unwrap();
    for _ in 0..5 {
        let msg = rx.recv().await.unwrap();
        let Message::Mining(MiningOwned::SubmitSharesStandard(s)) = msg else {
            panic!("expected SubmitSharesStandard, got {msg:?}");
        };
        assert_eq!(
            (s.channel_id, s.job_id, s.version),
            (CHANNEL_ID, 4, BASE_VERSION)
        );
        assert!(s.ntime >= min_ntime);
        let header = Header {
            version: Version::from_consensus(s.version as i32),
            prev_blockhash: BlockHash::from_byte_array(prev_hash),
            merkle_root: TxMerkleNode::from_byte_array(merkle_root),
            time: s.ntime,
            bits: CompactTarget::from_consensus(NBITS),
            nonce: s.nonce,
        };
        let network = Target::from_compact(CompactTarget::from_consensus(NBITS));
        let hash = header.block_hash();
        assert!(Target::from_le_bytes(target).is_met_by(hash) || network.is_met_by(hash));
    }
    match wait_event(&mut ev, |e| matches!(e, Event::NewJob { .. })).await {
        Event::NewJob {
            job_id,
            future,
            merkle_path_len,
            ..
        } => {
            assert_eq!((job_id, future, merkle_path_len), (4, true, None))
        }
        _ => unreachable!(),
    }

    // CloseChannel: the miner drops the connection and comes back.
    tx.send(Message::Mining(MiningOwned::CloseChannel(
        CloseChannelOwned {
            channel_id: CHANNEL_ID,
            reason_code: Str0255Owned::try_from("maintenance").unwrap(),
        },
    )))
    .await
    .unwrap();
    match wait_event(&mut ev, |e| matches!(e, Event::ChannelClosed { .. })).await {
        Event::ChannelClosed { reason, .. } => assert_eq!(reason, "maintenance"),
        _ => unreachable!(),
    }
    let (_rx2, _tx2, _) = accept_and_setup(&listener, &keys).await;
    wait_event(&mut ev, |e| matches!(e, Event::Connected { .. })).await;
    shutdown.cancel();
    miner.await.unwrap().unwrap();
}

#[tokio::test]
async fn wrong_authority_key_never_connects_and_keeps_retrying() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let server_keys = AuthorityKeys::generate();
        let other = AuthorityKeys::generate();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (events, mut ev) = Events::channel();
        let shutdown = CancellationToken::new();
        let miner = tokio::spawn(jdc_sim_miner::run(
            config(addr, &other, ChannelKind::Extended),
            Arc::new(events),
            shutdown.clone(),
        ));
        // Two attempts, each refused by the miner after checking the certificate.
        for _ in 0..2 {
            let (stream, _) = listener.accept().await.unwrap();
            let r = sv2::accept(
                stream,
                &server_keys,
                Duration::from_secs(3600),
                Duration::from_secs(10),
            )
            .await;
            assert!(
                r.is_err(),
                "the miner accepted a certificate from the wrong authority"
            );
        }
        shutdown.cancel();
        miner.await.unwrap().unwrap();
        while let Ok(e) = ev.try_recv() {
            assert!(
                !matches!(e, Event::Connected { .. }),
                "connected to an impostor"
            );
        }
    })
    .await
    .expect("scenario stalled");
}
