use super::*;

fn env() -> Env {
    Env::prefixed("JDC_TEST_NEVER_SET_").split("__")
}

#[test]
fn defaults_load() {
    let c = Config::load_from(None, &[], env()).unwrap();
    assert_eq!(c.network().unwrap(), Network::Regtest);
    assert_eq!(c.bus.watcher, "tcp://127.0.0.1:28400");
}

#[test]
fn set_overrides_and_names_bad_keys() {
    let c = Config::load_from(
        None,
        &[
            "declarator.listen=127.0.0.1:1".into(),
            "bus.resend_interval_ms=5".into(),
        ],
        env(),
    )
    .unwrap();
    assert_eq!(c.declarator.listen, "127.0.0.1:1");
    assert_eq!(c.bus.resend_interval_ms, 5);
    let e = Config::load_from(None, &["declarator.lisen=1".into()], env()).unwrap_err();
    assert_eq!(e.key, "declarator.lisen");
    let e = Config::load_from(None, &["bus.resend_interval_ms=\"x\"".into()], env()).unwrap_err();
    assert_eq!(e.key, "bus.resend_interval_ms");
    let e = Config::load_from(None, &["network=moon".into()], env()).unwrap_err();
    assert_eq!(e.key, "network");
}

#[test]
fn payout_errors_name_the_key() {
    let mut c = Config::default();
    assert_eq!(
        c.declarator
            .payout_scripts(Network::Regtest)
            .unwrap_err()
            .key,
        "declarator.payout"
    );
    c.declarator.payout.push(PayoutConfig {
        destination: "nope".into(),
        weight: 1,
    });
    assert_eq!(
        c.declarator
            .payout_scripts(Network::Regtest)
            .unwrap_err()
            .key,
        "declarator.payout[0].destination"
    );
}

#[test]
fn secrets_are_redacted() {
    let s = Secret("hunter2".into());
    assert_eq!(format!("{s:?}"), "<redacted>");
}
