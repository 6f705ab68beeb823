use super::*;
use jdc_shared::bitcoin::consensus::serialize;
use jdc_shared::bitcoin::hashes::Hash;
use jdc_shared::bitcoin::script::Builder;
use jdc_shared::bitcoin::{
    absolute, opcodes, transaction, Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn,
    TxOut, Txid, Witness,
};

fn tx(witnesses: Vec<Vec<Vec<u8>>>, outputs: Vec<ScriptBuf>) -> Transaction {
    Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: witnesses
            .into_iter()
            .enumerate()
            .map(|(i, w)| TxIn {
                previous_output: OutPoint {
                    txid: Txid::from_byte_array([i as u8 + 1; 32]),
                    vout: i as u32 + 7,
                },
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::from_slice(&w),
            })
            .collect(),
        output: outputs
            .into_iter()
            .map(|script_pubkey| TxOut {
                value: Amount::from_sat(1_000),
                script_pubkey,
            })
            .collect(),
    }
}

/// A tapscript carrying an inscription-style envelope, and a control block.
fn envelope_spend(payload: &[u8]) -> Vec<Vec<u8>> {
    let script = Builder::new()
        .push_slice([2u8; 32])
        .push_opcode(opcodes::all::OP_CHECKSIG)
        .push_opcode(opcodes::OP_FALSE)
        .push_opcode(opcodes::all::OP_IF)
        .push_slice(b"ord")
        .push_slice(<&jdc_shared::bitcoin::script::PushBytes>::try_from(payload).unwrap())
        .push_opcode(opcodes::all::OP_ENDIF)
        .into_script();
    let mut control = vec![0xc0];
    control.extend_from_slice(&[3u8; 32]);
    vec![vec![9u8; 64], script.into_bytes(), control]
}

#[test]
fn reads_inputs_outputs_and_witnesses_as_bitcoin_serializes_them() {
    let op_return = ScriptBuf::new_op_return([7u8; 40]);
    let p2wpkh = ScriptBuf::from_bytes(vec![0x00, 0x14].into_iter().chain([1u8; 20]).collect());
    let t = tx(
        vec![
            vec![vec![1u8; 71], vec![2u8; 33]],
            envelope_spend(&[5u8; 600]),
        ],
        vec![p2wpkh.clone(), op_return.clone()],
    );
    let bytes = serialize(&t);
    let v = TxView::parse(&bytes).unwrap();
    let ins: Vec<_> = v.inputs().collect();
    assert_eq!(ins.len(), 2);
    assert_eq!(ins[1].prev_txid, &[2u8; 32]);
    assert_eq!(ins[1].prev_vout, 8);
    let outs: Vec<_> = v.output_scripts().collect();
    assert_eq!(outs, vec![p2wpkh.as_bytes(), op_return.as_bytes()]);
    let ws: Vec<_> = v.witnesses().collect();
    assert_eq!(ws[0].items().count(), 2);
    assert_eq!(ws[0].tapscript(), None, "a P2WPKH spend has no tapscript");
    let script = ws[1].tapscript().unwrap();
    assert!(has_envelope(script));
    assert_eq!(pushed_bytes(script), 32 + 3 + 600);

    // Without witness (legacy serialization) the same inputs and outputs, empty stacks.
    let legacy = tx(vec![vec![], vec![]], vec![p2wpkh]);
    let bytes = serialize(&legacy);
    let v = TxView::parse(&bytes).unwrap();
    assert_eq!(v.inputs().count(), 2);
    assert!(v.witnesses().all(|w| w.items().count() == 0));
}

#[test]
fn an_annex_is_skipped_and_plain_if_is_not_an_envelope() {
    let mut spend = envelope_spend(b"x");
    spend.push(vec![0x50, 1, 2]);
    let t = tx(vec![spend], vec![]);
    let bytes = serialize(&t);
    let v = TxView::parse(&bytes).unwrap();
    let w = v.witnesses().next().unwrap();
    assert!(has_envelope(w.tapscript().unwrap()));
    // OP_1 OP_IF ... is ordinary script, not an envelope.
    let script = Builder::new()
        .push_opcode(opcodes::OP_TRUE)
        .push_opcode(opcodes::all::OP_IF)
        .push_opcode(opcodes::all::OP_ENDIF)
        .into_script();
    assert!(!has_envelope(script.as_bytes()));
}

#[test]
fn truncated_or_padded_data_is_an_error() {
    let t = tx(vec![vec![vec![1u8; 10]]], vec![ScriptBuf::new()]);
    let bytes = serialize(&t);
    for cut in [0, 3, 10, bytes.len() - 1] {
        assert_eq!(
            TxView::parse(&bytes[..cut]).unwrap_err(),
            ScanError::Truncated,
            "cut at {cut}"
        );
    }
    let mut padded = bytes.clone();
    padded.push(0);
    assert_eq!(TxView::parse(&padded).unwrap_err(), ScanError::Trailing(1));
    // A push that runs past the end of a script stops the instructions.
    assert_eq!(instructions(&[0x4c, 5, 1]).count(), 0);
    assert_eq!(pushed_bytes(&[0x02, 1, 2, 0x4d, 3, 0, 1, 2, 3]), 5);
}
