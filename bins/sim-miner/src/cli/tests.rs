use super::*;
use clap::Parser;

fn args(extra: &[&str]) -> Args {
    let mut v = vec!["jdc-sim-miner"];
    v.extend_from_slice(extra);
    Args::try_parse_from(v).unwrap()
}

#[test]
fn defaults_are_usable() {
    let c = args(&[]).to_config().unwrap();
    assert_eq!(c.server, "127.0.0.1:34255");
    assert!(c.authority.is_none());
    assert_eq!(c.channel, ChannelKind::Extended);
    assert_eq!(c.max_target, [0xff; 32]);
    assert_eq!(c.threads, 1);
}

#[test]
fn authority_key_from_flag_or_file() {
    let key = "9bXiEd8boQVhq7WddEcERUL5tyyJVFYdU8th3HfbNXK3Yw6GRXh";
    let c = args(&["--authority-public-key", key]).to_config().unwrap();
    assert!(c.authority.is_some());
    let path = std::env::temp_dir().join(format!("sim-miner-key-{}", std::process::id()));
    std::fs::write(&path, format!("{key}\n")).unwrap();
    let c = args(&["--authority-key-file", path.to_str().unwrap()])
        .to_config()
        .unwrap();
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
