//! Stratum V1 messages: the JSON-RPC lines the miner sends, and the typed reading of the lines
//! the server sends (one JSON object per line).
//!
//! Byte orders follow the SV1 wire: `prevhash` is the internal-order hash with every 4-byte
//! word byte-swapped; merkle branch entries are internal order; version, nbits, ntime, nonce
//! and version bits are big-endian `u32` hex.

use serde::Deserialize;
use serde_json::{json, Map, Value};

/// Version bits the miner asks to roll (BIP310 `version-rolling.mask`): the BIP320 bits.
pub const REQUESTED_VERSION_MASK: u32 = crate::work::VERSION_ROLLING_MASK;
/// BIP310 `version-rolling.min-bit-count` the miner asks for.
pub const MIN_VERSION_BITS: u32 = 2;
/// Most extranonce2 bytes accepted from the server.
pub const MAX_EXTRANONCE2_SIZE: usize = 32;

/// A request the miner sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// `mining.configure` asking for version rolling (BIP310).
    Configure,
    /// `mining.subscribe` with the miner's user agent.
    Subscribe {
        /// E.g. `jdc-sim-miner/0.1.0`.
        user_agent: &'a str,
    },
    /// `mining.authorize`.
    Authorize {
        /// Worker name.
        user: &'a str,
        /// Password.
        password: &'a str,
    },
    /// `mining.submit`.
    Submit {
        /// Worker name.
        user: &'a str,
        /// The server's job id.
        job_id: &'a str,
        /// Miner extranonce.
        extranonce2: &'a [u8],
        /// Header time.
        ntime: u32,
        /// Header nonce.
        nonce: u32,
        /// `version & mask` when version rolling was negotiated.
        version_bits: Option<u32>,
    },
}

impl Request<'_> {
    /// The JSON-RPC method.
    pub fn method(&self) -> &'static str {
        match self {
            Request::Configure => "mining.configure",
            Request::Subscribe { .. } => "mining.subscribe",
            Request::Authorize { .. } => "mining.authorize",
            Request::Submit { .. } => "mining.submit",
        }
    }

    /// The request with `id` as one line, newline included.
    pub fn to_line(&self, id: u64) -> String {
        let params = match self {
            Request::Configure => json!([
                ["version-rolling"],
                {
                    "version-rolling.mask": format!("{REQUESTED_VERSION_MASK:08x}"),
                    "version-rolling.min-bit-count": MIN_VERSION_BITS,
                }
            ]),
            Request::Subscribe { user_agent } => json!([user_agent]),
            Request::Authorize { user, password } => json!([user, password]),
            Request::Submit {
                user,
                job_id,
                extranonce2,
                ntime,
                nonce,
                version_bits,
            } => {
                let mut params = vec![
                    json!(user),
                    json!(job_id),
                    json!(hex::encode(extranonce2)),
                    json!(format!("{ntime:08x}")),
                    json!(format!("{nonce:08x}")),
                ];
                if let Some(bits) = version_bits {
                    params.push(json!(format!("{bits:08x}")));
                }
                Value::Array(params)
            }
        };
        let mut line = json!({"id": id, "method": self.method(), "params": params}).to_string();
        line.push('\n');
        line
    }
}

/// A line from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// The answer to one of the miner's requests.
    Response {
        /// The request's id.
        id: u64,
        /// `result`, or the server's `error` as text.
        outcome: Result<Value, String>,
    },
    /// A notification.
    Notification(Notification),
}

/// A notification (or request) from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    /// `mining.set_difficulty`.
    SetDifficulty(f64),
    /// `mining.notify`.
    Notify(Notify),
    /// `mining.set_version_mask`.
    SetVersionMask(u32),
    /// `mining.set_extranonce`.
    SetExtranonce {
        /// New extranonce1.
        extranonce1: Vec<u8>,
        /// New extranonce2 size.
        extranonce2_size: usize,
    },
    /// `client.reconnect` (the miner ignores it).
    Reconnect(Value),
    /// `client.show_message`.
    ShowMessage(String),
}

/// A `mining.notify` job, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// The server's job id.
    pub job_id: String,
    /// Previous block hash, internal order.
    pub prev_hash: [u8; 32],
    /// Coinbase before extranonce1.
    pub coinb1: Vec<u8>,
    /// Coinbase after extranonce2.
    pub coinb2: Vec<u8>,
    /// Merkle branch of the coinbase, internal order.
    pub merkle_branch: Vec<[u8; 32]>,
    /// Block version.
    pub version: u32,
    /// Compact network target.
    pub nbits: u32,
    /// Header time.
    pub ntime: u32,
    /// Whether earlier jobs are void.
    pub clean_jobs: bool,
}

/// A line that is not an SV1 message the miner understands.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// Not JSON at all.
    #[error("not JSON ({reason}): {excerpt}")]
    Json {
        /// Parser error.
        reason: String,
        /// The line's start.
        excerpt: String,
    },
    /// JSON, but not a JSON-RPC request, notification or response.
    #[error("not a JSON-RPC message ({reason}): {excerpt}")]
    Shape {
        /// What is missing.
        reason: &'static str,
        /// The line's start.
        excerpt: String,
    },
    /// A method the miner does not know.
    #[error("unexpected method `{0}`")]
    UnknownMethod(String),
    /// Bad parameters of a known method (or a bad result of a known request).
    #[error("{method}: {reason}")]
    Params {
        /// Method.
        method: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// At most this many characters of a bad line are quoted in an error.
const EXCERPT: usize = 120;

fn excerpt(line: &str) -> String {
    match line.char_indices().nth(EXCERPT) {
        Some((end, _)) => format!("{}...", &line[..end]),
        None => line.to_string(),
    }
}

/// The JSON-RPC envelope of a server line.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    id: Value,
    method: Option<String>,
    #[serde(default)]
    params: Value,
    #[serde(default)]
    result: Value,
    #[serde(default)]
    error: Value,
}

/// Reads one line from the server.
pub fn parse(line: &str) -> Result<ServerMessage, MessageError> {
    let value: Value = serde_json::from_str(line).map_err(|e| MessageError::Json {
        reason: e.to_string(),
        excerpt: excerpt(line),
    })?;
    let shape = |reason| MessageError::Shape {
        reason,
        excerpt: excerpt(line),
    };
    if !value.is_object() {
        return Err(shape("not an object"));
    }
    let envelope: Envelope =
        serde_json::from_value(value).map_err(|_| shape("`method` is not a string"))?;
    if let Some(method) = envelope.method {
        return notification(&method, envelope.params).map(ServerMessage::Notification);
    }
    let id = envelope
        .id
        .as_u64()
        .ok_or_else(|| shape("neither a `method` nor a numeric `id`"))?;
    let outcome = if envelope.error.is_null() {
        Ok(envelope.result)
    } else {
        Err(error_text(&envelope.error))
    };
    Ok(ServerMessage::Response { id, outcome })
}

/// A JSON-RPC error as text: `[code, "message", data]` (the usual SV1 form) becomes
/// `message (code)`; `{"code", "message"}` likewise; anything else its JSON.
fn error_text(error: &Value) -> String {
    let (code, message) = match error {
        Value::Array(items) => (items.first(), items.get(1)),
        Value::Object(map) => (map.get("code"), map.get("message")),
        Value::String(s) => return s.clone(),
        other => return other.to_string(),
    };
    match (code, message.and_then(Value::as_str)) {
        (Some(code), Some(message)) if !code.is_null() => format!("{message} ({code})"),
        (_, Some(message)) => message.to_string(),
        _ => error.to_string(),
    }
}

fn notification(method: &str, params: Value) -> Result<Notification, MessageError> {
    Ok(match method {
        "mining.set_difficulty" => {
            const M: &str = "mining.set_difficulty";
            let (difficulty,): (f64,) = params_of(M, params)?;
            if !(difficulty.is_finite() && difficulty > 0.0) {
                return Err(bad(
                    M,
                    format!("difficulty {difficulty} is not a positive number"),
                ));
            }
            Notification::SetDifficulty(difficulty)
        }
        "mining.notify" => Notification::Notify(notify(params)?),
        "mining.set_version_mask" => {
            const M: &str = "mining.set_version_mask";
            let (mask,): (String,) = params_of(M, params)?;
            Notification::SetVersionMask(hex_u32(M, "mask", &mask)?)
        }
        "mining.set_extranonce" => {
            const M: &str = "mining.set_extranonce";
            let (extranonce1, extranonce2_size): (String, usize) = params_of(M, params)?;
            Notification::SetExtranonce {
                extranonce1: hex_bytes(M, "extranonce1", &extranonce1)?,
                extranonce2_size: extranonce2_size_of(M, extranonce2_size)?,
            }
        }
        "client.reconnect" => Notification::Reconnect(params),
        "client.show_message" => {
            let (message,): (String,) = params_of("client.show_message", params)?;
            Notification::ShowMessage(message)
        }
        other => return Err(MessageError::UnknownMethod(other.to_string())),
    })
}

type NotifyParams = (
    String,
    String,
    String,
    String,
    Vec<String>,
    String,
    String,
    String,
    bool,
);

fn notify(params: Value) -> Result<Notify, MessageError> {
    const M: &str = "mining.notify";
    let (job_id, prev_hash, coinb1, coinb2, branch, version, nbits, ntime, clean_jobs): NotifyParams =
        params_of(M, params)?;
    let mut prev_hash = hash_bytes(M, "prevhash", &prev_hash)?;
    for word in prev_hash.chunks_exact_mut(4) {
        word.reverse();
    }
    Ok(Notify {
        job_id,
        prev_hash,
        coinb1: hex_bytes(M, "coinb1", &coinb1)?,
        coinb2: hex_bytes(M, "coinb2", &coinb2)?,
        merkle_branch: branch
            .iter()
            .map(|h| hash_bytes(M, "merkle branch entry", h))
            .collect::<Result<_, _>>()?,
        version: hex_u32(M, "version", &version)?,
        nbits: hex_u32(M, "nbits", &nbits)?,
        ntime: hex_u32(M, "ntime", &ntime)?,
        clean_jobs,
    })
}

/// The version mask a `mining.configure` result grants (0: version rolling refused), within
/// the requested mask.
pub fn configure_result(result: &Value) -> Result<u32, MessageError> {
    const M: &str = "mining.configure";
    let Some(map) = result.as_object() else {
        return Ok(0);
    };
    if map.get("version-rolling") != Some(&Value::Bool(true)) {
        return Ok(0);
    }
    let mask = field_str(M, map, "version-rolling.mask")?;
    Ok(hex_u32(M, "version-rolling.mask", mask)? & REQUESTED_VERSION_MASK)
}

/// `(extranonce1, extranonce2_size)` of a `mining.subscribe` result
/// `[subscriptions, extranonce1, extranonce2_size]`.
pub fn subscribe_result(result: Value) -> Result<(Vec<u8>, usize), MessageError> {
    const M: &str = "mining.subscribe";
    let (_subscriptions, extranonce1, size): (Value, String, usize) = params_of(M, result)?;
    Ok((
        hex_bytes(M, "extranonce1", &extranonce1)?,
        extranonce2_size_of(M, size)?,
    ))
}

fn field_str<'a>(
    method: &'static str,
    map: &'a Map<String, Value>,
    key: &str,
) -> Result<&'a str, MessageError> {
    map.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(method, format!("`{key}` is missing or not a string")))
}

fn params_of<T: serde::de::DeserializeOwned>(
    method: &'static str,
    params: Value,
) -> Result<T, MessageError> {
    serde_json::from_value(params).map_err(|e| bad(method, e.to_string()))
}

fn bad(method: &'static str, reason: String) -> MessageError {
    MessageError::Params { method, reason }
}

fn hex_bytes(method: &'static str, what: &str, s: &str) -> Result<Vec<u8>, MessageError> {
    hex::decode(s).map_err(|e| bad(method, format!("{what} is not hex: {e}")))
}

fn hash_bytes(method: &'static str, what: &str, s: &str) -> Result<[u8; 32], MessageError> {
    hex_bytes(method, what, s)?
        .try_into()
        .map_err(|_| bad(method, format!("{what} `{s}` is not 32 bytes")))
}

/// A big-endian `u32` as exactly 8 hex digits.
fn hex_u32(method: &'static str, what: &str, s: &str) -> Result<u32, MessageError> {
    let mut bytes = [0u8; 4];
    hex::decode_to_slice(s, &mut bytes)
        .map_err(|_| bad(method, format!("{what} `{s}` is not 8 hex digits")))?;
    Ok(u32::from_be_bytes(bytes))
}

fn extranonce2_size_of(method: &'static str, size: usize) -> Result<usize, MessageError> {
    if size > MAX_EXTRANONCE2_SIZE {
        return Err(bad(
            method,
            format!("extranonce2_size {size} is more than {MAX_EXTRANONCE2_SIZE}"),
        ));
    }
    Ok(size)
}

#[cfg(test)]
mod tests;
