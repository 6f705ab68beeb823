use super::*;

#[test]
fn rpc_hex_round_trip() {
    let h = "0000000000000000000000000000000000000000000000000000000000000001";
    let b = hash_from_rpc_hex(h).unwrap();
    assert_eq!(b[0], 1);
    assert_eq!(hash_to_rpc_hex(&b), h);
    assert!(hash_from_rpc_hex("zz").is_err());
}

#[test]
fn merkle_path_reproduces_root() {
    for n in 0..20usize {
        let txids: Vec<[u8; 32]> = (0..n).map(|i| [i as u8 + 1; 32]).collect();
        let coinbase = [0xcc; 32];
        let mut leaves = vec![coinbase];
        leaves.extend_from_slice(&txids);
        let expected = merkle_root(&leaves);
        let mut root = coinbase;
        for h in coinbase_merkle_path(&txids) {
            root = hash_pair(&root, &h);
        }
        assert_eq!(root, expected, "n={n}");
    }
}

#[test]
fn subsidy_halves() {
    assert_eq!(subsidy(0, Network::Regtest), 5_000_000_000);
    assert_eq!(subsidy(150, Network::Regtest), 2_500_000_000);
    assert_eq!(subsidy(840_000, Network::Bitcoin), 312_500_000);
}

#[test]
fn destinations() {
    let s = parse_destination(
        "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
        Network::Regtest,
    )
    .unwrap();
    assert_eq!(s.len(), 22);
    assert!(parse_destination(
        "0014751e76e8199196d454941c45d1b3a323f1433bd6",
        Network::Regtest
    )
    .is_ok());
    assert!(parse_destination(
        "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
        Network::Regtest
    )
    .is_err());
    assert!(parse_destination("hello", Network::Regtest).is_err());
}
