use super::*;
use clap::Parser;

fn args(extra: &[&str]) -> Args {
    let mut v = vec!["jdc-sim-miner"];
    v.extend_from_slice(extra);
    Args::try_parse_from(v).unwrap()
}

fn sv2(extra: &[&str]) -> MinerConfig {
    match args(extra).to_config().unwrap() {
        Config::Sv2(c) => c,
        other => panic!("not SV2: {other:?}"),
    }
}

fn sv1(extra: &[&str]) -> Sv1Config {
    let mut all = vec!["--protocol", "sv1"];
    all.extend_from_slice(extra);
    match args(&all).to_config().unwrap() {
        Config::Sv1(c) => c,
        other => panic!("not SV1: {other:?}"),
    }
}

#[test]
fn defaults_are_usable() {
    let c = sv2(&[]);
    assert_eq!(c.server, "127.0.0.1:34255");
    assert!(c.authority.is_none());
    assert_eq!(c.channel, ChannelKind::Extended);
    assert_eq!(c.max_target, [0xff; 32]);
    assert_eq!(c.threads, 1);
}

#[test]
fn authority_key_from_flag_or_file() {
    let key = "9bXiEd8boQVhq7WddEcERUL5tyyJVFYdU8th3HfbNXK3Yw6GRXh";
    let c = sv2(&["--authority-public-key", key]);
    assert!(c.authority.is_some());
    let path = std::env::temp_dir().join(format!("sim-miner-key-{}", std::process::id()));
    std::fs::write(&path, format!("{key}\n")).unwrap();
    let c = sv2(&["--authority-key-file", path.to_str().unwrap()]);
    assert!(c.authority.is_some());
    std::fs::write(&path, "garbage").unwrap();
    let e = args(&["--authority-key-file", path.to_str().unwrap()])
        .to_config()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--authority-key-file") && e.contains("garbage"),
        "{e}"
    );
    std::fs::remove_file(&path).unwrap();
    let e = args(&["--authority-public-key", "9bXiEd8boQ"])
        .to_config()
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("--authority-public-key"), "{e}");
}

#[test]
fn bad_values_name_the_option() {
    for (flag, value) in [
        ("--threads", "0"),
        ("--nominal-hashrate", "-1"),
        ("--max-target", "xyz"),
        ("--connect", "localhost"),
        ("--min-extranonce-size", "33"),
    ] {
        let e = args(&[&format!("{flag}={value}")])
            .to_config()
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(flag), "{flag}: {e}");
    }
}

#[test]
fn max_target_is_big_endian_hex() {
    let t = parse_target("0x00ff").unwrap();
    assert_eq!(t[0], 0xff);
    assert!(t[1..].iter().all(|b| *b == 0));
    let t = parse_target(&"f".repeat(64)).unwrap();
    assert_eq!(t, [0xff; 32]);
}

#[test]
fn sv1_mode_needs_no_authority_key_and_has_sensible_defaults() {
    let c = sv1(&["--connect", "127.0.0.1:3333"]);
    assert_eq!(c.server, "127.0.0.1:3333");
    assert_eq!(
        (c.user.as_str(), c.password.as_str()),
        ("jdc-sim-miner", "x")
    );
    assert!(c.version_rolling);
    assert_eq!((c.threads, c.max_shares_per_sec), (1, 20.0));
    let c = sv1(&["--user", "w.1", "--password", "pw", "--no-version-rolling"]);
    assert_eq!((c.user.as_str(), c.password.as_str()), ("w.1", "pw"));
    assert!(!c.version_rolling);
    // The SV2 spelling of the worker name works too.
    assert_eq!(sv1(&["--user-identity", "w.2"]).user, "w.2");
}

#[test]
fn options_of_the_other_protocol_are_refused() {
    let key = "9bXiEd8boQVhq7WddEcERUL5tyyJVFYdU8th3HfbNXK3Yw6GRXh";
    for (extra, flag) in [
        (
            vec!["--protocol", "sv1", "--authority-public-key", key],
            "--authority-public-key",
        ),
        (
            vec!["--protocol", "sv1", "--authority-key-file", "/k"],
            "--authority-key-file",
        ),
        (
            vec!["--protocol", "sv1", "--max-target", "ff"],
            "--max-target",
        ),
        (vec!["--password", "pw"], "--password"),
        (vec!["--no-version-rolling"], "--no-version-rolling"),
        (vec!["--protocol", "sv1", "--threads", "0"], "--threads"),
    ] {
        let e = args(&extra).to_config().unwrap_err().to_string();
        assert!(e.starts_with(flag), "{extra:?}: {e}");
    }
    assert!(Args::try_parse_from(["jdc-sim-miner", "--protocol", "sv3"]).is_err());
}
