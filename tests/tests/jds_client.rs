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
