//! The declarator's pool client against the strict test pool (SRI's server channel): real
//! sockets, real Noise handshakes.

use std::time::Duration;

use jdc_declarator::upstream::pool::{PoolClient, PoolEvent, PoolSettings};
use jdc_declarator::upstream::UpstreamError;
use jdc_shared::sv2::AuthorityKeys;
use jdc_tests::pool::{PoolMisbehave, TestPool, POOL_PREFIX_LEN};

fn settings(pool: &TestPool) -> PoolSettings {
    PoolSettings {
        address: pool.addr.to_string(),
        authority: pool.keys.public_key(),
        user_identity: "operator".into(),
        nominal_hash_rate: 1.0e12,
        min_extranonce_size: 10,
        timeout: Duration::from_secs(5),
    }
}

fn expect_err(r: Result<PoolClient, UpstreamError>) -> UpstreamError {
    match r {
        Ok(_) => panic!("connected, but should have been refused"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn opens_one_extended_channel_and_follows_the_target() {
    let pool = TestPool::start(PoolMisbehave::No).await.unwrap();
    let mut client = PoolClient::connect(&settings(&pool)).await.unwrap();
    let channel = client.channel().clone();
    assert_eq!(channel.channel_id, 7);
    assert_eq!(channel.extranonce_prefix.len(), POOL_PREFIX_LEN);
    assert!(channel.extranonce_size >= 10);
    // More hashrate: the pool answers UpdateChannel with a (harder) target.
    client.update_hashrate(4.0e12).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), client.recv())
        .await
        .unwrap()
        .unwrap();
    let PoolEvent::Target(target) = event else {
        panic!("expected a target, got {event:?}");
    };
    assert!(
        target < channel.target,
        "4× the hashrate gives a harder target"
    );
    assert_eq!(client.channel().target, target);
    assert_eq!(pool.hashrates(), vec![1.0e12, 4.0e12]);
    assert!(pool.violations().is_empty(), "{:?}", pool.violations());
}

#[tokio::test]
async fn a_closed_channel_is_reported() {
    let pool = TestPool::start(PoolMisbehave::CloseChannel).await.unwrap();
    let mut client = PoolClient::connect(&settings(&pool)).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), client.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        event,
        PoolEvent::Closed {
            reason: "pool-shutting-down".into()
        }
    );
}

#[tokio::test]
async fn refusals_are_clear_errors_naming_the_pool() {
    let pool = TestPool::start(PoolMisbehave::RefuseChannel).await.unwrap();
    let e = expect_err(PoolClient::connect(&settings(&pool)).await);
    let text = e.to_string();
    assert!(text.contains(&format!("pool {}", pool.addr)), "{text}");
    assert!(text.contains("unknown-user"), "{text}");

    let pool = TestPool::start(PoolMisbehave::SmallExtranonce)
        .await
        .unwrap();
    let e = expect_err(PoolClient::connect(&settings(&pool)).await);
    assert!(e.to_string().contains("extranonce bytes"), "{e}");

    let pool = TestPool::start(PoolMisbehave::No).await.unwrap();
    let mut s = settings(&pool);
    s.authority = AuthorityKeys::generate().public_key();
    let e = expect_err(PoolClient::connect(&s).await);
    assert!(matches!(e, UpstreamError::Handshake { .. }), "{e}");
    assert!(e.to_string().contains(&format!("pool {}", pool.addr)));
}

#[tokio::test]
async fn an_expired_certificate_is_refused_naming_the_pool() {
    let pool = TestPool::start(PoolMisbehave::ExpiredCertificate)
        .await
        .unwrap();
    let e = expect_err(PoolClient::connect(&settings(&pool)).await);
    assert!(matches!(e, UpstreamError::Handshake { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains(&format!("pool {}", pool.addr)), "{text}");
    assert!(text.contains("outside its validity window"), "{text}");
    assert!(pool.violations().is_empty(), "{:?}", pool.violations());
}
