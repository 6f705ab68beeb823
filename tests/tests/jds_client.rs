//! The declarator's Job Declarator Server client against the strict test JDS: real sockets,
//! real Noise handshakes.

use std::time::Duration;

use jdc_declarator::upstream::jds::{JdsClient, JdsSettings, Mode};
use jdc_declarator::upstream::UpstreamError;
use jdc_shared::sv2::AuthorityKeys;
use jdc_tests::jds::{pool_payout_script, Misbehave, TestJds};

fn settings(jds: &TestJds, mode: Mode) -> JdsSettings {
    JdsSettings {
        address: jds.addr.to_string(),
        authority: jds.keys.public_key(),
        user_identity: "operator.worker".into(),
        mode,
        tokens_ahead: 3,
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn tokens_are_allocated_ahead_and_never_reused() {
    let jds = TestJds::start(Misbehave::No).await.unwrap();
    let mut client = JdsClient::connect(settings(&jds, Mode::FullTemplate))
        .await
        .unwrap();
    client.wait_for_tokens(3).await.unwrap();
    assert_eq!(
        client.tokens_ready(),
        3,
        "three tokens in hand before any is needed"
    );
    let mut used = Vec::new();
    for _ in 0..7 {
        // A token is in hand at once; its replacement is requested as it is taken.
        let token = client.take_token().await.unwrap().expect("a token in hand");
        assert_eq!(token.outputs.len(), 1);
        assert_eq!(token.outputs[0].script_pubkey, pool_payout_script());
        assert!(!token.raw_outputs.is_empty());
        used.push(token.token);
        client.wait_for_tokens(3).await.unwrap();
    }
    let mut unique = used.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), used.len(), "a token was used twice");
    assert_eq!(jds.tokens().len(), 10, "7 used + 3 ahead");
    assert!(jds.violations().is_empty(), "{:?}", jds.violations());
}

#[tokio::test]
async fn coinbase_only_mode_connects_too() {
    let jds = TestJds::start(Misbehave::RefuseFullTemplate).await.unwrap();
    let mut client = JdsClient::connect(settings(&jds, Mode::CoinbaseOnly))
        .await
        .unwrap();
    let waited = client.wait_for_tokens(3).await;
    assert!(jds.violations().is_empty(), "{:?}", jds.violations());
    waited.unwrap();
}

fn expect_err(r: Result<JdsClient, UpstreamError>) -> UpstreamError {
    match r {
        Ok(_) => panic!("connected, but should have been refused"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn a_wrong_authority_key_is_refused_naming_the_upstream() {
    let jds = TestJds::start(Misbehave::No).await.unwrap();
    let mut s = settings(&jds, Mode::FullTemplate);
    s.authority = AuthorityKeys::generate().public_key();
    let e = expect_err(JdsClient::connect(s).await);
    assert!(matches!(e, UpstreamError::Handshake { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains(&format!("jds {}", jds.addr)), "{text}");
    assert!(text.contains("authority public key"), "{text}");
}

#[tokio::test]
async fn an_expired_certificate_is_refused_naming_the_upstream() {
    let jds = TestJds::start(Misbehave::ExpiredCertificate).await.unwrap();
    let e = expect_err(JdsClient::connect(settings(&jds, Mode::FullTemplate)).await);
    assert!(matches!(e, UpstreamError::Handshake { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains(&format!("jds {}", jds.addr)), "{text}");
    assert!(text.contains("outside its validity window"), "{text}");
    assert!(jds.violations().is_empty(), "{:?}", jds.violations());
}

#[tokio::test]
async fn a_refused_mode_is_a_clear_error() {
    let jds = TestJds::start(Misbehave::RefuseFullTemplate).await.unwrap();
    let e = expect_err(JdsClient::connect(settings(&jds, Mode::FullTemplate)).await);
    match &e {
        UpstreamError::SetupRefused { code, .. } => assert_eq!(code, "unsupported-feature-flags"),
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains(&format!("jds {}", jds.addr)));
}

#[tokio::test]
async fn a_jds_handing_out_a_token_twice_is_dropped() {
    let jds = TestJds::start(Misbehave::RepeatToken).await.unwrap();
    let mut client = JdsClient::connect(settings(&jds, Mode::FullTemplate))
        .await
        .unwrap();
    let e = client.wait_for_tokens(3).await.unwrap_err();
    assert!(e.to_string().contains("a second time"), "{e}");
}

#[tokio::test]
async fn garbage_and_silence_from_the_jds_are_errors_not_hangs() {
    let jds = TestJds::start(Misbehave::Garbage).await.unwrap();
    let mut client = JdsClient::connect(settings(&jds, Mode::FullTemplate))
        .await
        .unwrap();
    let e = client.wait_for_tokens(1).await.unwrap_err();
    assert!(matches!(e, UpstreamError::Protocol { .. }), "{e}");

    let jds = TestJds::start(Misbehave::Stall).await.unwrap();
    let mut s = settings(&jds, Mode::FullTemplate);
    s.timeout = Duration::from_millis(300);
    let mut client = JdsClient::connect(s).await.unwrap();
    let e = client.wait_for_tokens(1).await.unwrap_err();
    assert!(matches!(e, UpstreamError::Timeout { .. }), "{e}");
}

#[tokio::test]
async fn nothing_listening_names_the_upstream() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let jds = TestJds::start(Misbehave::No).await.unwrap();
    let mut s = settings(&jds, Mode::FullTemplate);
    s.address = format!("127.0.0.1:{port}");
    let e = expect_err(JdsClient::connect(s).await);
    assert!(matches!(e, UpstreamError::Connect { .. }), "{e}");
    assert!(e.to_string().contains(&format!("jds 127.0.0.1:{port}")));
}

mod common;

mod declaring {
    use super::common::{tx, work};
    use super::*;
    use jdc_declarator::upstream::declare::declaration;
    use jdc_declarator::upstream::jds::JdsEvent;
    use jdc_shared::bitcoin::consensus::serialize;
    use jdc_shared::bitcoin::Transaction;
    use stratum_core::channels_sv2::server::jobs::factory::JobFactory;

    #[tokio::test]
    async fn a_job_is_declared_with_the_missing_transactions_provided() {
        let jds = TestJds::start(Misbehave::No).await.unwrap();
        let txs: Vec<Transaction> = (1..=5).map(tx).collect();
        // The JDS's node has transactions 1, 3 and 5; 2 and 4 it must ask for.
        for i in [0, 2, 4] {
            jds.know(&serialize(&txs[i])).unwrap();
        }
        let (state, body) = work(&txs);
        let mut client = JdsClient::connect(settings(&jds, Mode::FullTemplate))
            .await
            .unwrap();
        client.wait_for_tokens(1).await.unwrap();
        let token = client.take_token().await.unwrap().unwrap();
        let factory = JobFactory::new(true, None, Some("jdc".into()));
        let d = declaration(&factory, &state, &body, &token, 5, 7, 14).unwrap();
        client.declare(d.declare.clone()).await.unwrap();
        let mut provided = 0;
        let new_token = loop {
            match client.next_event().await.unwrap() {
                JdsEvent::MissingTransactions {
                    request_id,
                    positions,
                } => {
                    assert_eq!(request_id, 5);
                    assert_eq!(positions, vec![1, 3]);
                    let raw: Vec<Vec<u8>> = positions
                        .iter()
                        .map(|&p| body.txs().nth(usize::from(p)).unwrap().to_vec())
                        .collect();
                    provided += raw.len();
                    client.provide_transactions(request_id, raw).await.unwrap();
                }
                JdsEvent::Declared {
                    request_id,
                    new_token,
                } => {
                    assert_eq!(request_id, 5);
                    break new_token;
                }
                JdsEvent::TokenReady => {}
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(provided, 2);
        assert!(jds.violations().is_empty(), "{:?}", jds.violations());
        let accepted = jds.declared();
        assert_eq!(accepted.len(), 1);
        assert_eq!(accepted[0].new_token, new_token);
        assert_ne!(new_token, token.token);
        assert_eq!(accepted[0].asked_for, vec![1, 3]);
        // What SetCustomMiningJob will carry is byte for byte what was declared.
        assert_eq!(accepted[0].outputs, d.custom.coinbase_tx_outputs.as_bytes());

        // A token is good for one declaration only.
        let mut again = d.declare.clone();
        again.request_id = 6;
        client.declare(again).await.unwrap();
        loop {
            match client.next_event().await.unwrap() {
                JdsEvent::DeclareRejected { request_id, code } => {
                    assert_eq!((request_id, code.as_str()), (6, "invalid-mining-job-token"));
                    break;
                }
                JdsEvent::TokenReady => {}
                other => panic!("{other:?}"),
            }
        }
        assert!(jds.violations().is_empty(), "{:?}", jds.violations());
    }
}

/// A block found on a declared job reaches the JDS as `PushSolution`, and forms exactly the
/// declared block.
#[tokio::test]
async fn a_pushed_solution_forms_a_block_of_the_declared_job() {
    use common::{tx, work_at};
    use jdc_declarator::upstream::declare::declaration;
    use jdc_declarator::upstream::jds::{JdsEvent, Solution};
    use jdc_shared::bitcoin::block::{Header, Version};
    use jdc_shared::bitcoin::consensus::{deserialize, serialize};
    use jdc_shared::bitcoin::hashes::Hash;
    use jdc_shared::bitcoin::{BlockHash, CompactTarget, Target, Transaction, TxMerkleNode};
    use stratum_core::channels_sv2::server::jobs::factory::JobFactory;

    let jds = TestJds::start(Misbehave::No).await.unwrap();
    let txs: Vec<Transaction> = (1..=3).map(tx).collect();
    for t in &txs {
        jds.know(&serialize(t)).unwrap();
    }
    // Regtest difficulty: a block takes a couple of hashes.
    let nbits = 0x207f_ffff;
    let (state, body) = work_at(&txs, nbits);
    let mut client = JdsClient::connect(settings(&jds, Mode::FullTemplate))
        .await
        .unwrap();
    client.wait_for_tokens(1).await.unwrap();
    let token = client.take_token().await.unwrap().unwrap();
    let factory = JobFactory::new(true, None, Some("jdc".into()));
    let d = declaration(&factory, &state, &body, &token, 3, 7, 14).unwrap();
    client.declare(d.declare.clone()).await.unwrap();
    while !matches!(
        client.next_event().await.unwrap(),
        JdsEvent::Declared { .. }
    ) {}

    let extranonce = vec![0x77; 14];
    let mut coinbase = d.declare.coinbase_tx_prefix.as_bytes().to_vec();
    coinbase.extend_from_slice(&extranonce);
    coinbase.extend_from_slice(d.declare.coinbase_tx_suffix.as_bytes());
    let coinbase: Transaction = deserialize(&coinbase).unwrap();
    let mut leaves = vec![coinbase.compute_txid().to_byte_array()];
    leaves.extend(txs.iter().map(|t| t.compute_txid().to_byte_array()));
    let mut header = Header {
        version: Version::from_consensus(d.custom.version as i32),
        prev_blockhash: BlockHash::from_byte_array(state.tip.prev_hash),
        merkle_root: TxMerkleNode::from_byte_array(jdc_shared::chain::merkle_root(&leaves)),
        time: state.tip.header_timestamp,
        bits: CompactTarget::from_consensus(nbits),
        nonce: 0,
    };
    let target = Target::from_compact(CompactTarget::from_consensus(nbits));
    while !target.is_met_by(header.block_hash()) {
        header.nonce += 1;
    }
    let solution = |nonce| Solution {
        full_extranonce: extranonce.clone(),
        prev_hash: state.tip.prev_hash,
        nonce,
        ntime: header.time,
        nbits,
        version: d.custom.version,
    };
    client.push_solution(solution(header.nonce)).await.unwrap();
    // A nonce that misses the target is not a block.
    let mut miss = header;
    miss.nonce += 1;
    while target.is_met_by(miss.block_hash()) {
        miss.nonce += 1;
    }
    client.push_solution(solution(miss.nonce)).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while jds.solutions().len() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let solutions = jds.solutions();
    assert_eq!(solutions.len(), 2);
    assert_eq!(solutions[0], Ok(header.block_hash().to_byte_array()));
    assert!(solutions[1].is_err());
    assert!(jds.violations().is_empty(), "{:?}", jds.violations());
}

mod strict_jds {
    use super::*;
    use jdc_declarator::upstream::jds::JdsEvent;
    use stratum_core::binary_sv2::{B064KOwned, Seq064KOwned, U256Owned};
    use stratum_core::job_declaration_sv2::DeclareMiningJobOwned;

    /// The test JDS is strict: a coinbase whose witness commitment does not match the declared
    /// wtxids is refused (so a passing declaration test means a right commitment).
    #[tokio::test]
    async fn a_commitment_that_does_not_match_the_wtxids_is_refused() {
        let jds = TestJds::start(Misbehave::No).await.unwrap();
        let mut client = JdsClient::connect(settings(&jds, Mode::FullTemplate))
            .await
            .unwrap();
        client.wait_for_tokens(1).await.unwrap();
        let token = client.take_token().await.unwrap().unwrap();
        // A coinbase committing to no transactions, declared with one.
        let empty_commitment = jdc_shared::chain::witness_commitment(&[]);
        let mut script = vec![0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];
        script.extend_from_slice(&empty_commitment);
        let coinbase = jdc_shared::bitcoin::Transaction {
            version: jdc_shared::bitcoin::transaction::Version::TWO,
            lock_time: jdc_shared::bitcoin::absolute::LockTime::ZERO,
            input: vec![jdc_shared::bitcoin::TxIn {
                previous_output: jdc_shared::bitcoin::OutPoint::null(),
                script_sig: jdc_shared::bitcoin::ScriptBuf::from_bytes(vec![
                    0x02, 0xf4, 0x01, 0x04, 0, 0, 0, 0,
                ]),
                sequence: jdc_shared::bitcoin::Sequence::MAX,
                witness: jdc_shared::bitcoin::Witness::from_slice(&[vec![0u8; 32]]),
            }],
            output: vec![
                jdc_shared::bitcoin::TxOut {
                    value: jdc_shared::bitcoin::Amount::from_sat(5_000),
                    script_pubkey: pool_payout_script(),
                },
                jdc_shared::bitcoin::TxOut {
                    value: jdc_shared::bitcoin::Amount::ZERO,
                    script_pubkey: jdc_shared::bitcoin::ScriptBuf::from_bytes(script),
                },
            ],
        };
        let bytes = jdc_shared::bitcoin::consensus::serialize(&coinbase);
        // Split around the 4-byte extranonce at the end of the scriptSig.
        let cut = 4 + 2 + 1 + 36 + 1 + 4;
        let declare = DeclareMiningJobOwned {
            request_id: 1,
            mining_job_token: stratum_core::binary_sv2::B0255Owned::new(token.token).unwrap(),
            version: 0x2000_0000,
            coinbase_tx_prefix: B064KOwned::new(bytes[..cut].to_vec()).unwrap(),
            coinbase_tx_suffix: B064KOwned::new(bytes[cut + 4..].to_vec()).unwrap(),
            wtxid_list: Seq064KOwned::new(vec![U256Owned::from([9u8; 32])]).unwrap(),
            excess_data: B064KOwned::new(vec![]).unwrap(),
        };
        client.declare(declare).await.unwrap();
        loop {
            match client.next_event().await.unwrap() {
                JdsEvent::DeclareRejected { code, .. } => {
                    assert_eq!(code, "invalid-job");
                    break;
                }
                JdsEvent::TokenReady => {}
                other => panic!("{other:?}"),
            }
        }
    }
}
