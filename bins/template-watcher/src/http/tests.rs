use super::*;

#[test]
fn urls() {
    assert_eq!(
        split_url("http://127.0.0.1:18443").unwrap(),
        ("127.0.0.1:18443".into(), "/".into())
    );
    assert_eq!(
        split_url("http://node:8332/wallet/w").unwrap(),
        ("node:8332".into(), "/wallet/w".into())
    );
    assert_eq!(
        split_url("http://[::1]:8332").unwrap(),
        ("[::1]:8332".into(), "/".into())
    );
    for bad in [
        "https://h:1",
        "127.0.0.1:18443",
        "http://host",
        "http://:1",
        "http://u:p@h:1",
        "http://h:99999",
    ] {
        assert!(split_url(bad).is_err(), "{bad}");
    }
}

#[test]
fn base64_matches_the_rfc_vectors() {
    for (i, o) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(i.as_bytes()), o);
    }
}

#[test]
fn debug_hides_the_credentials() {
    let t = HttpTransport::new("http://h:1", "user", "hunter2", Duration::from_secs(1)).unwrap();
    let shown = format!("{t:?}");
    assert!(!shown.contains("hunter2") && !shown.contains(&base64(b"user:hunter2")));
}
