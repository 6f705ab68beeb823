//! bitcoind RPC: a blocking client per role, rebuilt after transport errors.
//!
//! The `bitcoincore-rpc` client runs on this crate's [`HttpTransport`] (built for large
//! answers). It is blocking and keeps one HTTP connection behind a mutex, so
//! each role (tip look-ups, polling, tip templates, mempool templates) gets its own [`Node`]:
//! a slow `getblocktemplate` never holds the connection a tip look-up needs. Call it through
//! [`Node::run`], which moves the call to tokio's blocking pool.
//!
//! After a transport error (bitcoind stopped, restarted, timed out) the client is dropped and
//! built again on the next call, re-reading the cookie file, which bitcoind rewrites on every
//! start. Passwords are never logged; errors show the URL without credentials.

use crate::gbt::{GbtResult, HeaderInfo};
use crate::http::{HttpError, HttpTransport};
use bitcoincore_rpc::jsonrpc;
use bitcoincore_rpc::{Client, RpcApi};
use jdc_shared::config::RpcAuth;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Errors talking to bitcoind.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The cookie file could not be read (bitcoind not started yet, or another datadir).
    #[error("cannot read the RPC cookie file {path}: {source}")]
    Cookie {
        /// The cookie file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The cookie file is not `user:password`.
    #[error("the RPC cookie file {0} is not `user:password`")]
    BadCookie(PathBuf),
    /// The RPC URL is not usable.
    #[error("bad RPC URL {url}: {source}")]
    Url {
        /// The URL.
        url: String,
        /// Cause.
        #[source]
        source: HttpError,
    },
    /// The call failed: transport, HTTP status, or an RPC error from bitcoind.
    #[error("{method} on {url} failed: {source}")]
    Call {
        /// RPC method.
        method: &'static str,
        /// The URL.
        url: String,
        /// Cause.
        #[source]
        source: bitcoincore_rpc::Error,
    },
    /// The blocking task running the call stopped abnormally.
    #[error("RPC task failed: {0}")]
    Task(String),
}

/// Where and how to reach bitcoind.
#[derive(Debug, Clone)]
pub struct RpcTarget {
    /// RPC URL (no credentials in it).
    pub url: String,
    /// Credentials.
    pub auth: RpcAuth,
    /// Connect/read/write timeout.
    pub timeout: Duration,
}

impl RpcTarget {
    /// A short description for logs: URL and how we authenticate (never the password).
    pub fn describe(&self) -> String {
        match &self.auth {
            RpcAuth::Cookie(path) => format!("{} (cookie {})", self.url, path.display()),
            RpcAuth::UserPass(user, _) => format!("{} (user {user})", self.url),
        }
    }

    fn build_client(&self) -> Result<Client, NodeError> {
        let (user, password) = match &self.auth {
            RpcAuth::Cookie(path) => {
                let cookie = std::fs::read_to_string(path).map_err(|source| NodeError::Cookie {
                    path: path.clone(),
                    source,
                })?;
                let (u, p) = cookie
                    .trim_end()
                    .split_once(':')
                    .ok_or_else(|| NodeError::BadCookie(path.clone()))?;
                (u.to_string(), p.to_string())
            }
            RpcAuth::UserPass(user, password) => (user.clone(), password.0.clone()),
        };
        let transport =
            HttpTransport::new(&self.url, &user, &password, self.timeout).map_err(|source| {
                NodeError::Url {
                    url: self.url.clone(),
                    source,
                }
            })?;
        Ok(Client::from_jsonrpc(jsonrpc::Client::with_transport(
            transport,
        )))
    }
}

/// `getblockchaininfo` fields the watcher uses.
#[derive(Debug, Clone, Deserialize)]
pub struct ChainInfo {
    /// `main`, `test`, `testnet4`, `signet` or `regtest`.
    pub chain: String,
    /// Height of the active tip.
    pub blocks: u64,
    /// Height of the best known header.
    pub headers: u64,
    /// Hash of the active tip (RPC hex).
    pub bestblockhash: String,
    /// Whether the node is still in initial block download.
    pub initialblockdownload: bool,
}

/// One RPC connection to bitcoind for one role.
pub struct Node {
    target: Arc<RpcTarget>,
    client: Mutex<Option<Client>>,
}

impl Node {
    /// A client for `target`; nothing is sent until the first call.
    pub fn new(target: Arc<RpcTarget>) -> Arc<Node> {
        Arc::new(Node {
            target,
            client: Mutex::new(None),
        })
    }

    /// URL and authentication method, for logs (never the password).
    pub fn describe(&self) -> String {
        self.target.describe()
    }

    /// Runs a blocking call on tokio's blocking pool.
    pub async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, NodeError>
    where
        T: Send + 'static,
        F: FnOnce(&Node) -> Result<T, NodeError> + Send + 'static,
    {
        let node = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&node))
            .await
            .map_err(|e| NodeError::Task(e.to_string()))?
    }

    /// A generic call with a typed answer (blocking).
    pub fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: &'static str,
        args: &[serde_json::Value],
    ) -> Result<T, NodeError> {
        // A poisoned lock only means another call panicked; the Option inside is still valid.
        let mut guard = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(self.target.build_client()?);
        }
        let Some(client) = guard.as_ref() else {
            return Err(NodeError::Task("RPC client missing".into()));
        };
        match client.call::<T>(method, args) {
            Ok(v) => Ok(v),
            Err(source) => {
                // An RPC-level error (bitcoind answered) keeps the connection; anything else
                // (refused, reset, timeout, HTTP 401 after a cookie change) rebuilds it.
                let answered = matches!(
                    source,
                    bitcoincore_rpc::Error::JsonRpc(jsonrpc::Error::Rpc(_))
                );
                if !answered {
                    *guard = None;
                }
                Err(NodeError::Call {
                    method,
                    url: self.target.url.clone(),
                    source,
                })
            }
        }
    }

    /// `getbestblockhash`.
    pub fn best_block_hash(&self) -> Result<String, NodeError> {
        self.call("getbestblockhash", &[])
    }

    /// `getblockchaininfo`.
    pub fn chain_info(&self) -> Result<ChainInfo, NodeError> {
        self.call("getblockchaininfo", &[])
    }

    /// `getblockheader <hash> true`.
    pub fn block_header(&self, hash: &str) -> Result<HeaderInfo, NodeError> {
        self.call(
            "getblockheader",
            &[serde_json::Value::String(hash.to_string()), true.into()],
        )
    }

    /// `submitblock <hex>`: `None` when bitcoind accepted the block, else its reason.
    pub fn submit_block(&self, block_hex: String) -> Result<Option<String>, NodeError> {
        self.call("submitblock", &[serde_json::Value::String(block_hex)])
    }

    /// `getblocktemplate {"rules":["segwit"]}`.
    pub fn block_template(&self) -> Result<GbtResult, NodeError> {
        self.call(
            "getblocktemplate",
            &[serde_json::json!({ "rules": ["segwit"] })],
        )
    }
}
