use super::*;

#[test]
fn rpc_hex_round_trip() {
    let h = "0000000000000000000000000000000000000000000000000000000000000001";
    let b = hash_from_rpc_hex(h).unwrap();
    assert_eq!(b[0], 1);
    assert_eq!(hash_to_rpc_hex(&b), h);
    assert!(hash_from_rpc_hex("zz").is_err());
    // Every byte value, both cases, against the hex crate; bad digits and lengths refused.
    for byte in 0..=255u8 {
        let mut internal = [0x5au8; 32];
        internal[7] = byte;
        let shown = hash_to_rpc_hex(&internal);
        assert_eq!(hash_from_rpc_hex(&shown).unwrap(), internal);
        assert_eq!(hash_from_rpc_hex(&shown.to_uppercase()).unwrap(), internal);
    }
    let good = "ab".repeat(32);
    for bad in [
        &good[..63],
        &format!("{good}0"),
        &format!("g{}", &good[1..]),
        &format!("{} ", &good[..63]),
    ] {
        assert!(hash_from_rpc_hex(bad).is_err(), "{bad}");
    }
    assert!(hash_from_rpc_hex(&format!("é{}", &good[2..])).is_err());
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

/// The worked examples of docs/bus-protocol.md ("The witness commitment"): implementers of a
/// selector check their code against these values, so they must stay true.
#[test]
fn witness_commitment_documented_examples() {
    // No transaction besides the coinbase.
    let empty = witness_commitment(&[]);
    assert_eq!(
        hex::encode(empty),
        "e2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9"
    );
    assert_eq!(
        hex::encode(witness_commitment_script(&empty).as_bytes()),
        "6a24aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9"
    );

    // Two transactions, wtxids as the template shows them (RPC hex).
    let rpc = [
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f",
    ];
    let wtxids: Vec<[u8; 32]> = rpc.iter().map(|h| hash_from_rpc_hex(h).unwrap()).collect();
    // Leaves are in internal byte order: the RPC hex reversed.
    assert_eq!(
        hex::encode(wtxids[0]),
        "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100"
    );
    let mut leaves = vec![[0u8; 32]];
    leaves.extend_from_slice(&wtxids);
    assert_eq!(
        hex::encode(hash_pair(&leaves[0], &leaves[1])),
        "6547b7962dc1411ab50085b8d565242f708c126afe55885e1cbf9bedf2978c62"
    );
    // An odd level pairs its last node with itself.
    assert_eq!(
        hex::encode(hash_pair(&leaves[2], &leaves[2])),
        "5c89bce89f593a1f9e2d4bc9f639a2e47230260bb7122bf11fc29a033426d65b"
    );
    assert_eq!(
        hex::encode(merkle_root(&leaves)),
        "853aa88193fdc9e85b3668f9df8f38031c46d46d211d9e51d3b2979b8f405b3e"
    );
    let two = witness_commitment(&wtxids);
    assert_eq!(
        hex::encode(two),
        "506ca0080602b994dbb34c4ff4b870ce1449cca529e0e58de825f777ad4cdd95"
    );
    assert_eq!(
        hex::encode(witness_commitment_script(&two).as_bytes()),
        "6a24aa21a9ed506ca0080602b994dbb34c4ff4b870ce1449cca529e0e58de825f777ad4cdd95"
    );

    // The classic mistakes give other values (listed in the document to help debugging).
    let unreversed: Vec<[u8; 32]> = rpc
        .iter()
        .map(|h| {
            let mut b = [0u8; 32];
            hex::decode_to_slice(h, &mut b).unwrap();
            b
        })
        .collect();
    assert_eq!(
        hex::encode(witness_commitment(&unreversed)),
        "f6e3ede3a85e5880a236452232f9c7582ce005f39c1ed2a05f667b864cd01d80"
    );
    assert_eq!(
        hash_to_rpc_hex(&two),
        "95dd4cad77f725e88de5e029a5cc4914ce70b8f44f4cb3db94b9020608a06c50"
    );
}
