//! Job Declaration against the strict test JDS and test pool, linked as a real pool's are:
//! declare a job, set it as a custom job on the pool channel, mine a share for it and have the
//! pool (SRI's server channel) accept it. Real sockets, real Noise handshakes.

mod common;

use std::time::Duration;

use common::{tx, work};
use jdc_declarator::upstream::declare::{declaration, Declaration};
use jdc_declarator::upstream::jds::{JdsClient, JdsEvent, JdsSettings, Mode};
use jdc_declarator::upstream::pool::{PoolClient, PoolEvent, PoolSettings, UpstreamShare};
use jdc_shared::bitcoin::block::{Header, Version};
use jdc_shared::bitcoin::consensus::{deserialize, serialize};
use jdc_shared::bitcoin::hashes::Hash;
use jdc_shared::bitcoin::{BlockHash, CompactTarget, Target, Transaction, TxMerkleNode};
use jdc_tests::jds::{Misbehave, TestJds};
use jdc_tests::pool::{PoolMisbehave, TestPool};
use stratum_core::channels_sv2::server::jobs::factory::JobFactory;

const TIMEOUT: Duration = Duration::from_secs(5);

async fn pool_event(pool: &mut PoolClient) -> PoolEvent {
    tokio::time::timeout(TIMEOUT, pool.recv())
        .await
        .expect("the pool answers")
        .expect("the pool connection holds")
}

async fn declared(jds: &mut JdsClient, d: &Declaration) -> Vec<u8> {
    jds.declare(d.declare.clone()).await.unwrap();
    loop {
        match tokio::time::timeout(TIMEOUT, jds.next_event())
            .await
            .expect("the JDS answers")
            .unwrap()
        {
            JdsEvent::Declared { new_token, .. } => return new_token,
            JdsEvent::TokenReady => {}
            other => panic!("{other:?}"),
        }
    }
}

/// A header for `d` with the extranonce `pool_prefix || ours` that meets `target`.
fn mine(d: &Declaration, pool_prefix: &[u8], ours: &[u8], target: Target) -> (u32, u32) {
    let mut coinbase = d.declare.coinbase_tx_prefix.as_bytes().to_vec();
    coinbase.extend_from_slice(pool_prefix);
    coinbase.extend_from_slice(ours);
    coinbase.extend_from_slice(d.declare.coinbase_tx_suffix.as_bytes());
    let coinbase: Transaction = deserialize(&coinbase).expect("coinbase");
    let mut root = coinbase.compute_txid().to_byte_array();
    for sibling in d.custom.merkle_path.iter() {
        let mut pair = root.to_vec();
        pair.extend_from_slice(&sibling.to_array());
        root = jdc_shared::bitcoin::hashes::sha256d::Hash::hash(&pair).to_byte_array();
    }
    let mut header = Header {
        version: Version::from_consensus(d.custom.version as i32),
        prev_blockhash: BlockHash::from_byte_array(d.custom.prev_hash.to_array()),
        merkle_root: TxMerkleNode::from_byte_array(root),
        time: d.custom.min_ntime,
        bits: CompactTarget::from_consensus(d.custom.nbits),
        nonce: 0,
    };
    loop {
        if target.is_met_by(header.block_hash()) {
            return (header.nonce, header.time);
        }
        header.nonce += 1;
    }
}

#[tokio::test]
async fn declared_job_is_set_on_the_pool_and_its_shares_accepted() {
    let jds = TestJds::start(Misbehave::No).await.unwrap();
    let pool = TestPool::start_with_jds(PoolMisbehave::No, &jds)
        .await
        .unwrap();
    let txs: Vec<Transaction> = (1..=4).map(tx).collect();
    for t in &txs {
        jds.know(&serialize(t)).unwrap();
    }
    let (state, body) = work(&txs);

    let mut pool_client = PoolClient::connect(&PoolSettings {
        address: pool.addr.to_string(),
        authority: pool.keys.public_key(),
        user_identity: "operator".into(),
        // A target this test mines on a CPU in about 100,000 hashes, hard enough that a share
        // for a coinbase other than the pool's would pass only once in 100,000.
        nominal_hash_rate: 10_000.0,
        min_extranonce_size: 10,
        timeout: TIMEOUT,
    })
    .await
    .unwrap();
    let channel = pool_client.channel().clone();
    let mut jds_client = JdsClient::connect(JdsSettings {
        address: jds.addr.to_string(),
        authority: jds.keys.public_key(),
        user_identity: "operator".into(),
        mode: Mode::FullTemplate,
        tokens_ahead: 2,
        timeout: TIMEOUT,
    })
    .await
    .unwrap();
    jds_client.wait_for_tokens(1).await.unwrap();
    let token = jds_client.take_token().await.unwrap().unwrap();

    let full_extranonce = channel.extranonce_prefix.len() + usize::from(channel.extranonce_size);
    let factory = JobFactory::new(true, None, Some("jdc-test".into()));
    let d = declaration(
        &factory,
        &state,
        &body,
        &token,
        1,
        channel.channel_id,
        full_extranonce,
    )
    .unwrap();
    let new_token = declared(&mut jds_client, &d).await;

    // The allocation token is not the declared job's: the pool refuses it.
    pool_client
        .set_custom_job(d.custom.clone(), &token.token)
        .await
        .unwrap();
    match pool_event(&mut pool_client).await {
        PoolEvent::CustomJobRejected { code, .. } => assert_eq!(code, "invalid-mining-job-token"),
        other => panic!("{other:?}"),
    }
    // With the declared job's token it is accepted.
    pool_client
        .set_custom_job(d.custom.clone(), &new_token)
        .await
        .unwrap();
    let job_id = match pool_event(&mut pool_client).await {
        PoolEvent::CustomJobAccepted { request_id, job_id } => {
            assert_eq!(request_id, 1);
            job_id
        }
        other => panic!("{other:?}"),
    };

    // A share for the custom job, mined with our part of the extranonce.
    let ours = vec![0x5a; usize::from(channel.extranonce_size)];
    let (nonce, ntime) = mine(&d, &channel.extranonce_prefix, &ours, channel.target);
    let share = UpstreamShare {
        job_id,
        nonce,
        ntime,
        version: d.custom.version,
        extranonce: ours.clone(),
    };
    pool_client.submit_share(share.clone()).await.unwrap();
    match pool_event(&mut pool_client).await {
        PoolEvent::SharesAccepted { count } => assert_eq!(count, 1),
        other => panic!("{other:?}"),
    }
    // The same share again is a duplicate; with other extranonce bytes than it was mined with
    // it is another coinbase, whose header misses the target.
    pool_client.submit_share(share.clone()).await.unwrap();
    match pool_event(&mut pool_client).await {
        PoolEvent::ShareRejected { code, .. } => assert_eq!(code, "duplicate-share"),
        other => panic!("{other:?}"),
    }
    let other = UpstreamShare {
        extranonce: vec![0x5b; usize::from(channel.extranonce_size)],
        ..share
    };
    pool_client.submit_share(other).await.unwrap();
    match pool_event(&mut pool_client).await {
        PoolEvent::ShareRejected { code, .. } => assert_eq!(code, "difficulty-too-low"),
        other => panic!("{other:?}"),
    }
    assert_eq!(pool.shares().iter().filter(|s| s.is_ok()).count(), 1);
    assert!(pool.violations().is_empty(), "{:?}", pool.violations());
    assert!(jds.violations().is_empty(), "{:?}", jds.violations());
}
