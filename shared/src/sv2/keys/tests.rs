use super::*;

/// SRI key-utils test vector: this secret key has this public key.
const SRI_SECRET: &str = "zmBEmPhqo3A92FkiLVvyCz6htc3e53ph3ZbD4ASqGaLjwnFLi";
const SRI_PUBLIC: &str = "9bDuixKmZqAJnrmP746n8zU1wyAQRrus7th9dxnkPg6RzQvCnan";
/// The spec's example authority public key.
const SPEC_PUBLIC: &str = "9bXiEd8boQVhq7WddEcERUL5tyyJVFYdU8th3HfbNXK3Yw6GRXh";

pub(crate) fn temp_dir(tag: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    std::env::temp_dir().join(format!(
        "jdc-keys-{tag}-{}-{n}-{}",
        std::process::id(),
        crate::time::now_micros()
    ))
}

#[test]
fn spec_vector_parses_and_round_trips() {
    let key = parse_authority_public_key(SPEC_PUBLIC).unwrap();
    assert_eq!(encode_authority_public_key(&key), SPEC_PUBLIC);
}

#[test]
fn sri_secret_vector_gives_sri_public_key() {
    let keys = AuthorityKeys::from_secret_str(SRI_SECRET).unwrap();
    assert_eq!(keys.public_key_string(), SRI_PUBLIC);
    assert_eq!(keys.secret_key_string(), SRI_SECRET);
    assert_eq!(
        parse_authority_public_key(SRI_PUBLIC).unwrap(),
        keys.public_key()
    );
}

#[test]
fn bad_public_keys_say_what_is_wrong() {
    // Last character changed: checksum.
    let mut typo = SPEC_PUBLIC.to_string();
    typo.pop();
    typo.push('Z');
    let e = parse_authority_public_key(&typo).unwrap_err().to_string();
    assert!(e.contains("checksum"), "{e}");
    assert!(e.contains(&typo), "{e}");

    let e = parse_authority_public_key("0OIl-not-base58")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not base58"), "{e}");

    let e = parse_authority_public_key("").unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");

    // Valid base58check, wrong version.
    let mut raw = [0u8; 34];
    raw[0] = 2;
    raw[2..].copy_from_slice(&parse_authority_public_key(SPEC_PUBLIC).unwrap().serialize());
    let e = parse_authority_public_key(&base58::encode_check(&raw))
        .unwrap_err()
        .to_string();
    assert!(e.contains("version 2"), "{e}");

    // Valid base58check, wrong length (a secret key is 32 bytes).
    let e = parse_authority_public_key(SRI_SECRET)
        .unwrap_err()
        .to_string();
    assert!(e.contains("32 bytes instead of 34"), "{e}");

    // A secret key string is refused as a public key, and vice versa, without echoing secrets.
    let e = AuthorityKeys::from_secret_str(SPEC_PUBLIC)
        .unwrap_err()
        .to_string();
    assert!(e.contains("34 bytes instead of 32"), "{e}");
    assert!(!e.contains(SPEC_PUBLIC), "{e}");
}

#[test]
fn generated_keys_round_trip_through_strings() {
    let keys = AuthorityKeys::generate();
    let parsed = parse_authority_public_key(&keys.public_key_string()).unwrap();
    assert_eq!(parsed, keys.public_key());
    let again = AuthorityKeys::from_secret_str(&keys.secret_key_string()).unwrap();
    assert_eq!(again.public_key(), keys.public_key());
    assert!(keys.public_key_string().starts_with('9'));
    assert!(!format!("{keys:?}").contains(&keys.secret_key_string()));
}

#[test]
fn load_or_generate_creates_then_reloads_the_same_key() {
    let dir = temp_dir("roundtrip").join("nested");
    let (first, generated) = AuthorityKeys::load_or_generate(&dir).unwrap();
    assert!(generated);
    let (second, generated) = AuthorityKeys::load_or_generate(&dir).unwrap();
    assert!(!generated);
    assert_eq!(first.public_key(), second.public_key());

    let public_file = fs::read_to_string(dir.join(PUBLIC_KEY_FILE)).unwrap();
    assert_eq!(public_file.trim(), first.public_key_string());
    assert_eq!(
        parse_authority_public_key(&public_file).unwrap(),
        first.public_key()
    );
    let secret_file = fs::read_to_string(dir.join(SECRET_KEY_FILE)).unwrap();
    assert_eq!(secret_file.trim(), first.secret_key_string());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.join(SECRET_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Only the two key files are left behind (no temp files).
    let mut names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec![PUBLIC_KEY_FILE, SECRET_KEY_FILE]);
    fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[test]
fn load_uses_an_sri_secret_file_and_rewrites_the_public_file() {
    let dir = temp_dir("sri");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(SECRET_KEY_FILE), format!("{SRI_SECRET}\n")).unwrap();
    fs::write(dir.join(PUBLIC_KEY_FILE), "stale\n").unwrap();
    let (keys, generated) = AuthorityKeys::load_or_generate(&dir).unwrap();
    assert!(!generated);
    assert_eq!(keys.public_key_string(), SRI_PUBLIC);
    assert_eq!(
        fs::read_to_string(dir.join(PUBLIC_KEY_FILE))
            .unwrap()
            .trim(),
        SRI_PUBLIC
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn corrupt_secret_file_is_an_error_naming_the_file() {
    let dir = temp_dir("corrupt");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(SECRET_KEY_FILE), "not-a-key\n").unwrap();
    let e = AuthorityKeys::load_or_generate(&dir)
        .unwrap_err()
        .to_string();
    assert!(e.contains(SECRET_KEY_FILE), "{e}");
    assert!(e.contains("invalid authority secret key"), "{e}");
    assert!(!e.contains("not-a-key"), "secret content echoed: {e}");
    fs::remove_dir_all(&dir).unwrap();
}
