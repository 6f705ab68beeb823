//! A minimal HTTP/1.1 transport for `bitcoincore-rpc` (via its `jsonrpc` crate), built for
//! large answers.
//!
//! `jsonrpc`'s own `simple_http` transport parses the reply with `serde_json::from_reader`
//! straight off the socket, which costs ~85 ms for the 9 MB JSON of a 4 MB / 5,000-transaction
//! `getblocktemplate` (measured here); reading the body whole and parsing it with
//! `serde_json::from_slice` costs ~14 ms. This transport does that: one keep-alive
//! connection, `Content-Length` bodies read with one `read_exact`, a reconnect and single retry
//! when a reused connection turns out closed. Plain HTTP only, as bitcoind serves.

use bitcoincore_rpc::jsonrpc;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::Duration;

/// Largest reply accepted (a 4 MB block template is ~9 MB of JSON).
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// Errors of the transport.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not `http://host:port[/path]`.
    #[error("`{0}` is not an http://HOST:PORT[/PATH] URL")]
    BadUrl(String),
    /// Name resolution or connection failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// host:port.
        addr: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the connection failed.
    #[error("I/O error talking to {addr}: {source}")]
    Io {
        /// host:port.
        addr: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The answer is not HTTP as expected.
    #[error("malformed HTTP answer from {addr}: {why}")]
    Malformed {
        /// host:port.
        addr: String,
        /// What is wrong.
        why: String,
    },
    /// An HTTP error status without a JSON-RPC body.
    #[error("HTTP status {status} from {addr}{hint}")]
    Status {
        /// host:port.
        addr: String,
        /// Status code.
        status: u16,
        /// A hint for common statuses.
        hint: &'static str,
    },
}

/// An HTTP JSON-RPC transport with one keep-alive connection.
pub struct HttpTransport {
    /// host:port as configured (for messages and the Host header).
    addr: String,
    path: String,
    authorization: String,
    timeout: Duration,
    conn: Mutex<Option<BufReader<TcpStream>>>,
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the authorization header.
        f.debug_struct("HttpTransport")
            .field("addr", &self.addr)
            .field("path", &self.path)
            .finish()
    }
}

/// Splits `http://host:port/path` into (`host:port`, `/path`).
pub fn split_url(url: &str) -> Result<(String, String), HttpError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| HttpError::BadUrl(url.to_string()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let port_ok = authority
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if !port_ok || authority.contains('@') {
        return Err(HttpError::BadUrl(url.to_string()));
    }
    Ok((authority.to_string(), path.to_string()))
}

/// Standard base64 (with padding), for the Basic authorization header.
pub fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(T[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Whether `e` looks like a kept-alive connection the server had closed (so a retry on a
/// fresh connection makes sense), rather than a slow or broken server.
fn is_stale_connection(e: &HttpError) -> bool {
    match e {
        HttpError::Io { source, .. } => !matches!(
            source.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ),
        HttpError::Malformed { why, .. } => why.starts_with("connection closed before"),
        _ => false,
    }
}

impl HttpTransport {
    /// A transport for `url` authenticating as `user:password`.
    pub fn new(
        url: &str,
        user: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<Self, HttpError> {
        let (addr, path) = split_url(url)?;
        Ok(Self {
            addr,
            path,
            authorization: format!("Basic {}", base64(format!("{user}:{password}").as_bytes())),
            timeout,
            conn: Mutex::new(None),
        })
    }

    fn connect(&self) -> Result<BufReader<TcpStream>, HttpError> {
        let connect_err = |source| HttpError::Connect {
            addr: self.addr.clone(),
            source,
        };
        let addrs: Vec<SocketAddr> = self.addr.to_socket_addrs().map_err(connect_err)?.collect();
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
        for a in addrs {
            match TcpStream::connect_timeout(&a, self.timeout) {
                Ok(s) => {
                    let setup = s
                        .set_read_timeout(Some(self.timeout))
                        .and_then(|_| s.set_write_timeout(Some(self.timeout)))
                        .and_then(|_| s.set_nodelay(true));
                    setup.map_err(connect_err)?;
                    return Ok(BufReader::with_capacity(64 * 1024, s));
                }
                Err(e) => last = e,
            }
        }
        Err(connect_err(last))
    }

    /// Sends one JSON body, returns the reply body.
    fn round_trip(&self, body: &[u8]) -> Result<Vec<u8>, HttpError> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let reused = guard.is_some();
        let mut conn = match guard.take() {
            Some(c) => c,
            None => self.connect()?,
        };
        let result = match self.exchange(&mut conn, body) {
            // A kept-alive connection may have been closed by bitcoind (restart, idle
            // timeout): retry once on a fresh one. The request is read-only, so a retry is safe.
            Err(e) if reused && is_stale_connection(&e) => {
                conn = self.connect()?;
                self.exchange(&mut conn, body)
            }
            other => other,
        };
        if let Ok((_, keep)) = &result {
            if *keep {
                *guard = Some(conn);
            }
        }
        result.map(|(b, _)| b)
    }

    /// Writes the request and reads the reply: (body, connection reusable).
    fn exchange(
        &self,
        conn: &mut BufReader<TcpStream>,
        body: &[u8],
    ) -> Result<(Vec<u8>, bool), HttpError> {
        let io = |source| HttpError::Io {
            addr: self.addr.clone(),
            source,
        };
        let malformed = |why: &str| HttpError::Malformed {
            addr: self.addr.clone(),
            why: why.to_string(),
        };
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n",
            self.path,
            self.addr,
            self.authorization,
            body.len()
        );
        // One write, so the request leaves in one segment (TCP_NODELAY is on).
        let mut request = Vec::with_capacity(head.len() + body.len());
        request.extend_from_slice(head.as_bytes());
        request.extend_from_slice(body);
        let stream = conn.get_mut();
        stream.write_all(&request).map_err(io)?;
        stream.flush().map_err(io)?;

        let mut line = String::new();
        if conn.read_line(&mut line).map_err(io)? == 0 {
            return Err(malformed("connection closed before the status line"));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| malformed("bad status line"))?;
        let mut content_length: Option<usize> = None;
        let mut keep = true;
        loop {
            line.clear();
            if conn.read_line(&mut line).map_err(io)? == 0 {
                return Err(malformed("connection closed in the headers"));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    content_length =
                        Some(value.parse().map_err(|_| malformed("bad Content-Length"))?);
                } else if name.eq_ignore_ascii_case("connection")
                    && value.eq_ignore_ascii_case("close")
                {
                    keep = false;
                } else if name.eq_ignore_ascii_case("transfer-encoding")
                    && !value.eq_ignore_ascii_case("identity")
                {
                    return Err(malformed("chunked replies are not supported"));
                }
            }
        }
        let body = match content_length {
            Some(n) if n > MAX_BODY => return Err(malformed("reply too large")),
            Some(n) => {
                let mut body = vec![0u8; n];
                conn.read_exact(&mut body).map_err(io)?;
                body
            }
            None => {
                keep = false;
                let mut body = Vec::new();
                conn.by_ref()
                    .take(MAX_BODY as u64)
                    .read_to_end(&mut body)
                    .map_err(io)?;
                body
            }
        };
        // bitcoind answers RPC errors with 4xx/5xx *and* a JSON-RPC body: let the caller parse
        // it. Statuses without a body are errors here.
        if status != 200 && body.is_empty() {
            let hint = match status {
                401 => " (wrong RPC credentials or stale cookie)",
                403 => " (rpcallowip refuses this address)",
                _ => "",
            };
            return Err(HttpError::Status {
                addr: self.addr.clone(),
                status,
                hint,
            });
        }
        Ok((body, keep))
    }
}

impl jsonrpc::Transport for HttpTransport {
    fn send_request(&self, req: jsonrpc::Request) -> Result<jsonrpc::Response, jsonrpc::Error> {
        let body = serde_json::to_vec(&req)?;
        let reply = self
            .round_trip(&body)
            .map_err(|e| jsonrpc::Error::Transport(Box::new(e)))?;
        Ok(serde_json::from_slice(&reply)?)
    }

    fn send_batch(
        &self,
        reqs: &[jsonrpc::Request],
    ) -> Result<Vec<jsonrpc::Response>, jsonrpc::Error> {
        let body = serde_json::to_vec(reqs)?;
        let reply = self
            .round_trip(&body)
            .map_err(|e| jsonrpc::Error::Transport(Box::new(e)))?;
        Ok(serde_json::from_slice(&reply)?)
    }

    fn fmt_target(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "http://{}{}", self.addr, self.path)
    }
}

#[cfg(test)]
mod tests;
