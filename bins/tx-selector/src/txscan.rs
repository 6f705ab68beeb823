//! A zero-copy reader of serialized transactions, for the policy rules: the outpoints spent,
//! the output scripts and the witness stacks, as slices of the template's bytes. Selecting
//! from 5,000 transactions must take milliseconds, so nothing is allocated per transaction.
//! Also a reader of script instructions (data pushes and opcodes).

/// Why transaction bytes could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// The bytes end inside a field.
    #[error("transaction data ends early")]
    Truncated,
    /// Bytes are left after the lock time.
    #[error("transaction data has {0} trailing bytes")]
    Trailing(usize),
}

/// A transaction read from its serialization (with or without witness).
#[derive(Debug, Clone, Copy)]
pub struct TxView<'a> {
    data: &'a [u8],
    inputs: usize,
    inputs_at: usize,
    outputs: usize,
    outputs_at: usize,
    /// Start of the witness section, if the transaction has one.
    witness_at: Option<usize>,
}

/// An input: the outpoint it spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Input<'a> {
    /// Txid of the spent output, internal byte order.
    pub prev_txid: &'a [u8; 32],
    /// Its output index.
    pub prev_vout: u32,
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ScanError> {
        let end = self.at.checked_add(n).ok_or(ScanError::Truncated)?;
        let bytes = self.data.get(self.at..end).ok_or(ScanError::Truncated)?;
        self.at = end;
        Ok(bytes)
    }

    fn varint(&mut self) -> Result<usize, ScanError> {
        let first = *self.take(1)?.first().ok_or(ScanError::Truncated)?;
        let n = match first {
            0xfd => u64::from(u16::from_le_bytes(fixed(self.take(2)?)?)),
            0xfe => u64::from(u32::from_le_bytes(fixed(self.take(4)?)?)),
            0xff => u64::from_le_bytes(fixed(self.take(8)?)?),
            n => u64::from(n),
        };
        // A count larger than the remaining bytes cannot be honest.
        let n = usize::try_from(n).map_err(|_| ScanError::Truncated)?;
        if n > self.data.len() {
            return Err(ScanError::Truncated);
        }
        Ok(n)
    }

    fn bytes(&mut self) -> Result<&'a [u8], ScanError> {
        let n = self.varint()?;
        self.take(n)
    }
}

fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N], ScanError> {
    bytes.try_into().map_err(|_| ScanError::Truncated)
}

impl<'a> TxView<'a> {
    /// Reads the structure of `data` (one serialized transaction, nothing after it).
    pub fn parse(data: &'a [u8]) -> Result<TxView<'a>, ScanError> {
        let mut r = Reader { data, at: 4 };
        if data.len() < 4 {
            return Err(ScanError::Truncated);
        }
        let mut inputs = r.varint()?;
        let segwit = inputs == 0;
        if segwit {
            // Marker 0x00 then flag 0x01.
            r.take(1)?;
            inputs = r.varint()?;
        }
        let inputs_at = r.at;
        for _ in 0..inputs {
            r.take(36)?;
            r.bytes()?;
            r.take(4)?;
        }
        let outputs = r.varint()?;
        let outputs_at = r.at;
        for _ in 0..outputs {
            r.take(8)?;
            r.bytes()?;
        }
        let witness_at = if segwit {
            let at = r.at;
            for _ in 0..inputs {
                for _ in 0..r.varint()? {
                    r.bytes()?;
                }
            }
            Some(at)
        } else {
            None
        };
        r.take(4)?;
        if r.at != data.len() {
            return Err(ScanError::Trailing(data.len() - r.at));
        }
        Ok(TxView {
            data,
            inputs,
            inputs_at,
            outputs,
            outputs_at,
            witness_at,
        })
    }

    /// The outpoints spent, in input order.
    pub fn inputs(&self) -> impl Iterator<Item = Input<'a>> + 'a {
        let mut r = Reader {
            data: self.data,
            at: self.inputs_at,
        };
        (0..self.inputs).map_while(move |_| {
            let outpoint = r.take(36).ok()?;
            r.bytes().ok()?;
            r.take(4).ok()?;
            let (txid, vout) = outpoint.split_at(32);
            Some(Input {
                prev_txid: txid.try_into().ok()?,
                prev_vout: u32::from_le_bytes(fixed(vout).ok()?),
            })
        })
    }

    /// The output scripts, in output order.
    pub fn output_scripts(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut r = Reader {
            data: self.data,
            at: self.outputs_at,
        };
        (0..self.outputs).map_while(move |_| {
            r.take(8).ok()?;
            r.bytes().ok()
        })
    }

    /// Each input's witness stack (empty stacks for transactions without witness).
    pub fn witnesses(&self) -> impl Iterator<Item = WitnessStack<'a>> + 'a {
        let mut r = Reader {
            data: self.data,
            at: self.witness_at.unwrap_or(0),
        };
        let has_witness = self.witness_at.is_some();
        (0..self.inputs).map_while(move |_| {
            if !has_witness {
                return Some(WitnessStack {
                    data: &[],
                    items: 0,
                });
            }
            let items = r.varint().ok()?;
            let start = r.at;
            for _ in 0..items {
                r.bytes().ok()?;
            }
            Some(WitnessStack {
                data: r.data.get(start..r.at)?,
                items,
            })
        })
    }
}

/// One input's witness stack.
#[derive(Debug, Clone, Copy)]
pub struct WitnessStack<'a> {
    data: &'a [u8],
    items: usize,
}

impl<'a> WitnessStack<'a> {
    /// The stack items, bottom first.
    pub fn items(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut r = Reader {
            data: self.data,
            at: 0,
        };
        (0..self.items).map_while(move |_| r.bytes().ok())
    }

    /// The leaf script of a taproot script-path spend: the item before the control block
    /// (the last item, after dropping an annex). `None` for other spends.
    pub fn tapscript(&self) -> Option<&'a [u8]> {
        // The last three items: enough to see past an annex.
        let (mut third, mut second, mut last) = (None, None, None);
        for item in self.items() {
            (third, second, last) = (second, last, Some(item));
        }
        let annex = self.items >= 2 && last.is_some_and(|a: &[u8]| a.first() == Some(&0x50));
        let (script, control) = if annex {
            (third?, second?)
        } else {
            (second?, last?)
        };
        let is_control_block = control.len() >= 33
            && (control.len() - 33) % 32 == 0
            && (control.len() - 33) / 32 <= 128
            && control.first().is_some_and(|b| b & 0xfe == 0xc0);
        is_control_block.then_some(script)
    }
}

/// One instruction of a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instruction<'a> {
    /// Pushes these bytes (`OP_0` pushes nothing).
    Push(&'a [u8]),
    /// Any other opcode.
    Op(u8),
}

/// `OP_RETURN`.
pub const OP_RETURN: u8 = 0x6a;
/// `OP_IF`.
pub const OP_IF: u8 = 0x63;

/// The instructions of `script`, stopping at the first one that runs past its end.
pub fn instructions(script: &[u8]) -> impl Iterator<Item = Instruction<'_>> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let op = *script.get(at)?;
        at += 1;
        let len = match op {
            0x00..=0x4b => usize::from(op),
            0x4c => {
                let n = usize::from(*script.get(at)?);
                at += 1;
                n
            }
            0x4d => {
                let n = usize::from(u16::from_le_bytes(fixed(script.get(at..at + 2)?).ok()?));
                at += 2;
                n
            }
            0x4e => {
                let n = usize::try_from(u32::from_le_bytes(fixed(script.get(at..at + 4)?).ok()?))
                    .ok()?;
                at += 4;
                n
            }
            op => return Some(Instruction::Op(op)),
        };
        let data = script.get(at..at.checked_add(len)?)?;
        at += len;
        Some(Instruction::Push(data))
    })
}

/// Whether `script` holds an inscription-style envelope: `OP_FALSE OP_IF` (data pushes follow
/// and are never executed, up to `OP_ENDIF`).
pub fn has_envelope(script: &[u8]) -> bool {
    let mut previous_was_false = false;
    for i in instructions(script) {
        match i {
            Instruction::Op(OP_IF) if previous_was_false => return true,
            Instruction::Push(d) => previous_was_false = d.is_empty(),
            Instruction::Op(_) => previous_was_false = false,
        }
    }
    false
}

/// Bytes of data `script` pushes.
pub fn pushed_bytes(script: &[u8]) -> u64 {
    instructions(script)
        .map(|i| match i {
            Instruction::Push(d) => d.len() as u64,
            Instruction::Op(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests;
