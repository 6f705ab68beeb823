//! A scripted Stratum V1 device for tests: plain JSON lines over a blocking socket, and the
//! header arithmetic to solve a `mining.notify` job (computed independently of the server,
//! with the `bitcoin` crate).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use jdc_shared::bitcoin::{
    block::{Header, Version},
    hashes::{sha256d, Hash},
    BlockHash, CompactTarget, TxMerkleNode,
};
use serde_json::{json, Value};

/// A job from `mining.notify`.
#[derive(Debug, Clone)]
pub struct V1Job {
    /// Job id.
    pub id: String,
    /// Previous block hash, internal byte order.
    pub prev_hash: [u8; 32],
    /// Coinbase before the extranonces.
    pub coinb1: Vec<u8>,
    /// Coinbase after the extranonces.
    pub coinb2: Vec<u8>,
    /// Merkle branch, internal byte order.
    pub branch: Vec<[u8; 32]>,
    /// Header version.
    pub version: u32,
    /// Compact target.
    pub nbits: u32,
    /// Header time.
    pub ntime: u32,
    /// `clean_jobs`.
    pub clean: bool,
}

/// A solved header.
#[derive(Debug, Clone)]
pub struct Solution {
    /// `extranonce2` used.
    pub extranonce2: Vec<u8>,
    /// Header time.
    pub ntime: u32,
    /// Header nonce.
    pub nonce: u32,
    /// The full header version.
    pub version: u32,
    /// Its block hash.
    pub hash: BlockHash,
}

/// A connected V1 device.
pub struct V1Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next_id: u64,
    /// Notifications received but not yet looked at.
    pub pending: VecDeque<Value>,
    /// `extranonce1` from the subscribe answer.
    pub extranonce1: Vec<u8>,
    /// `extranonce2` size from the subscribe answer.
    pub extranonce2_size: usize,
    /// Last `mining.set_difficulty`.
    pub difficulty: Option<f64>,
}

impl V1Client {
    /// Connects to `addr`.
    pub fn connect(addr: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            next_id: 1,
            pending: VecDeque::new(),
            extranonce1: Vec::new(),
            extranonce2_size: 0,
            difficulty: None,
        })
    }

    /// The connection, for a caller that takes over the protocol (lines the reader had
    /// buffered are dropped).
    pub fn into_stream(self) -> std::io::Result<TcpStream> {
        self.writer.set_read_timeout(None)?;
        Ok(self.writer)
    }

    /// Writes raw bytes (for bad-input tests).
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes)?;
        self.writer.flush()
    }

    /// Sends a request; returns its id.
    pub fn send(&mut self, method: &str, params: Value) -> anyhow::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let line = json!({"id": id, "method": method, "params": params}).to_string();
        self.send_raw(format!("{line}\n").as_bytes())?;
        Ok(id)
    }

    /// The next line as JSON; `Ok(None)` when the server closed the connection.
    pub fn read(&mut self, deadline: Instant) -> anyhow::Result<Option<Value>> {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        self.reader.get_ref().set_read_timeout(Some(left))?;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Ok(None),
            Ok(_) => Ok(Some(
                serde_json::from_str(&line).with_context(|| format!("server sent {line:?}"))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(None),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                bail!("nothing from the V1 server in time")
            }
            Err(e) => Err(e).context("reading from the V1 server"),
        }
    }

    /// Sends a request and waits for its answer (notifications meanwhile are kept).
    pub fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.send(method, params)?;
        self.answer(id)
    }

    /// Waits for the answer to request `id`.
    pub fn answer(&mut self, id: u64) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let msg = self
                .read(deadline)?
                .ok_or_else(|| anyhow!("connection closed before the answer to {id}"))?;
            if msg["id"] == json!(id) {
                return Ok(msg);
            }
            self.note(msg);
        }
    }

    fn note(&mut self, msg: Value) {
        if msg["method"] == "mining.set_difficulty" {
            self.difficulty = msg["params"][0].as_f64();
        }
        self.pending.push_back(msg);
    }

    /// configure (version rolling with `mask`), subscribe, authorize; returns the negotiated
    /// mask.
    pub fn handshake(&mut self, mask: Option<u32>) -> anyhow::Result<Option<u32>> {
        let mut negotiated = None;
        if let Some(mask) = mask {
            let r = self.call(
                "mining.configure",
                json!([["version-rolling"], {"version-rolling.mask": format!("{mask:08x}"), "version-rolling.min-bit-count": 2}]),
            )?;
            if r["result"]["version-rolling"] != json!(true) {
                bail!("version rolling refused: {r}");
            }
            let m = r["result"]["version-rolling.mask"]
                .as_str()
                .ok_or_else(|| anyhow!("no mask in {r}"))?;
            negotiated = Some(u32::from_str_radix(m, 16)?);
        }
        let r = self.call("mining.subscribe", json!(["jdc-test-v1/1.0"]))?;
        let en1 = r["result"][1]
            .as_str()
            .ok_or_else(|| anyhow!("no extranonce1 in {r}"))?;
        self.extranonce1 = hex::decode(en1)?;
        self.extranonce2_size = r["result"][2]
            .as_u64()
            .ok_or_else(|| anyhow!("no extranonce2_size in {r}"))?
            as usize;
        let r = self.call("mining.authorize", json!(["rig1", "x"]))?;
        if r["result"] != json!(true) {
            bail!("authorize refused: {r}");
        }
        Ok(negotiated)
    }

    /// The next `mining.notify` (pending ones first).
    pub fn next_job(&mut self, timeout: Duration) -> anyhow::Result<V1Job> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pos) = self
                .pending
                .iter()
                .position(|m| m["method"] == "mining.notify")
            {
                let msg = self.pending.remove(pos).unwrap_or_default();
                return parse_notify(&msg["params"]);
            }
            let msg = self
                .read(deadline)?
                .ok_or_else(|| anyhow!("connection closed while waiting for a job"))?;
            self.note(msg);
        }
    }

    /// The latest job: every notify received within `settle` after the first.
    pub fn latest_job(&mut self, timeout: Duration, settle: Duration) -> anyhow::Result<V1Job> {
        let mut job = self.next_job(timeout)?;
        while let Ok(newer) = self.next_job(settle) {
            job = newer;
        }
        Ok(job)
    }

    /// Submits a solution; returns the server's answer.
    pub fn submit(
        &mut self,
        job: &V1Job,
        s: &Solution,
        version_bits: Option<u32>,
    ) -> anyhow::Result<Value> {
        let mut params = vec![
            json!("rig1"),
            json!(job.id),
            json!(hex::encode(&s.extranonce2)),
            json!(format!("{:08x}", s.ntime)),
            json!(format!("{:08x}", s.nonce)),
        ];
        if let Some(bits) = version_bits {
            params.push(json!(format!("{bits:08x}")));
        }
        self.call("mining.submit", Value::Array(params))
    }
}

/// Parses `mining.notify` params.
pub fn parse_notify(p: &Value) -> anyhow::Result<V1Job> {
    let s = |i: usize| {
        p[i].as_str()
            .ok_or_else(|| anyhow!("notify param {i} is not a string: {p}"))
    };
    let u = |i: usize| -> anyhow::Result<u32> { Ok(u32::from_str_radix(s(i)?, 16)?) };
    let stratum_prev = hex::decode(s(1)?)?;
    if stratum_prev.len() != 32 {
        bail!("prevhash of {} bytes", stratum_prev.len());
    }
    // V1 sends each 4-byte word of the hash byte-swapped.
    let mut prev_hash = [0u8; 32];
    for (out, word) in prev_hash.chunks_mut(4).zip(stratum_prev.chunks(4)) {
        out.copy_from_slice(&[word[3], word[2], word[1], word[0]]);
    }
    let branch = p[4]
        .as_array()
        .ok_or_else(|| anyhow!("no merkle branch in {p}"))?
        .iter()
        .map(|b| {
            let bytes = hex::decode(b.as_str().unwrap_or_default())?;
            bytes
                .try_into()
                .map_err(|_| anyhow!("merkle branch entry is not 32 bytes"))
        })
        .collect::<anyhow::Result<Vec<[u8; 32]>>>()?;
    Ok(V1Job {
        id: s(0)?.to_string(),
        prev_hash,
        coinb1: hex::decode(s(2)?)?,
        coinb2: hex::decode(s(3)?)?,
        branch,
        version: u(5)?,
        nbits: u(6)?,
        ntime: u(7)?,
        clean: p[8].as_bool().unwrap_or(false),
    })
}

/// The coinbase a V1 device builds.
pub fn coinbase(job: &V1Job, extranonce1: &[u8], extranonce2: &[u8]) -> Vec<u8> {
    [
        job.coinb1.as_slice(),
        extranonce1,
        extranonce2,
        job.coinb2.as_slice(),
    ]
    .concat()
}

/// The header hash for `nonce`, with `version` and `extranonce2`.
pub fn header(
    job: &V1Job,
    extranonce1: &[u8],
    extranonce2: &[u8],
    version: u32,
    nonce: u32,
) -> Header {
    let mut root = sha256d::Hash::hash(&coinbase(job, extranonce1, extranonce2)).to_byte_array();
    for b in &job.branch {
        root = sha256d::Hash::hash(&[root.as_slice(), b.as_slice()].concat()).to_byte_array();
    }
    Header {
        version: Version::from_consensus(version as i32),
        prev_blockhash: BlockHash::from_byte_array(job.prev_hash),
        merkle_root: TxMerkleNode::from_byte_array(root),
        time: job.ntime,
        bits: CompactTarget::from_consensus(job.nbits),
        nonce,
    }
}

/// Grinds nonces until the header meets the job's network target (regtest: about every
/// other hash).
pub fn solve_block(
    job: &V1Job,
    extranonce1: &[u8],
    extranonce2: &[u8],
    version: u32,
) -> anyhow::Result<Solution> {
    for nonce in 0..1_000_000u32 {
        let h = header(job, extranonce1, extranonce2, version, nonce);
        if h.target().is_met_by(h.block_hash()) {
            return Ok(Solution {
                extranonce2: extranonce2.to_vec(),
                ntime: job.ntime,
                nonce,
                version,
                hash: h.block_hash(),
            });
        }
    }
    bail!("no nonce meets the network target (not regtest?)")
}
