use super::*;
use crate::bitcoin::{consensus::deserialize, hashes::Hash};

fn parts(height: u32) -> TemplateParts {
    TemplateParts {
        template_id: 7,
        future: true,
        height,
        version: 0x2000_0000,
        coinbase_value: 5_000_000_123,
        witness_commitment: chain::witness_commitment(&[[1u8; 32]]),
        merkle_path: vec![[2u8; 32], [3u8; 32]],
    }
}

#[test]
fn the_coinbase_prefix_is_the_bip34_height() {
    // `CScript() << height`: small heights are opcodes, larger ones minimal pushes.
    for (height, prefix) in [
        (1u32, vec![0x51]),
        (16, vec![0x60]),
        (17, vec![0x01, 0x11]),
        (128, vec![0x02, 0x80, 0x00]),
        (840_000, vec![0x03, 0x40, 0xd1, 0x0c]),
    ] {
        let t = new_template(&parts(height)).unwrap();
        assert_eq!(
            t.coinbase_prefix.as_ref(),
            prefix.as_slice(),
            "height {height}"
        );
    }
}

#[test]
fn the_one_output_is_the_witness_commitment_and_the_value_is_left_to_the_client() {
    let p = parts(900_000);
    let t = new_template(&p).unwrap();
    assert!(t.future_template);
    assert_eq!(t.template_id, 7);
    assert_eq!(t.coinbase_tx_value_remaining, 5_000_000_123);
    assert_eq!(t.coinbase_tx_outputs_count, 1);
    let out: TxOut = deserialize(t.coinbase_tx_outputs.as_ref()).unwrap();
    assert_eq!(out.value, Amount::ZERO);
    assert_eq!(
        out.script_pubkey,
        chain::witness_commitment_script(&p.witness_commitment)
    );
    assert_eq!(t.coinbase_tx_input_sequence, u32::MAX);
    assert_eq!(t.coinbase_tx_locktime, 0);
    assert_eq!(t.coinbase_tx_version, 2);
    let path: Vec<[u8; 32]> = t.merkle_path.iter().map(|h| h.to_array()).collect();
    assert_eq!(path, p.merkle_path);
}

#[test]
fn set_new_prev_hash_carries_the_target_of_the_bits() {
    let prev = bitcoin::BlockHash::all_zeros().to_byte_array();
    let m = set_new_prev_hash(9, prev, 1_700_000_000, 0x1703_6e3a);
    assert_eq!(m.template_id, 9);
    assert_eq!(m.n_bits, 0x1703_6e3a);
    let target = Target::from_le_bytes(m.target.to_array());
    assert_eq!(target.to_compact_lossy().to_consensus(), 0x1703_6e3a);
    let regtest = set_new_prev_hash(1, prev, 0, 0x207f_ffff);
    assert_eq!(regtest.target.to_array()[31], 0x7f);
}
