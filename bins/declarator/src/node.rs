//! bitcoind RPC for the declarator: `submitblock`.

use bitcoincore_rpc::{Auth, Client, RpcApi};
use jdc_shared::config::{Config, ConfigError, RpcAuth};

/// Errors talking to bitcoind.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The RPC client could not be created.
    #[error("cannot create the bitcoind RPC client for {url}: {source}")]
    Client {
        /// RPC URL.
        url: String,
        /// Cause.
        #[source]
        source: bitcoincore_rpc::Error,
    },
    /// The call failed (transport or RPC error).
    #[error("submitblock failed: {0}")]
    Call(#[from] bitcoincore_rpc::Error),
}

/// A blocking RPC client; call it from `spawn_blocking`.
pub struct Node {
    client: Client,
}

impl Node {
    /// Connects with the configured credentials (nothing is sent until the first call).
    pub fn new(config: &Config) -> Result<Result<Node, NodeError>, ConfigError> {
        let url = config.bitcoind.rpc_url(config.network()?);
        let auth = match config.bitcoind.rpc_auth()? {
            RpcAuth::Cookie(path) => Auth::CookieFile(path),
            RpcAuth::UserPass(user, pw) => Auth::UserPass(user, pw.0),
        };
        Ok(Client::new(&url, auth)
            .map(|client| Node { client })
            .map_err(|source| NodeError::Client { url, source }))
    }

    /// Submits a block. `Ok(None)` when bitcoind accepted it, `Ok(Some(reason))` when it
    /// refused it (e.g. `duplicate`, `inconclusive`, `bad-txnmrklroot`).
    pub fn submit_block(&self, block: &[u8]) -> Result<Option<String>, NodeError> {
        let answer: serde_json::Value = self.client.call(
            "submitblock",
            &[serde_json::Value::String(hex::encode(block))],
        )?;
        Ok(match answer {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s),
            other => Some(other.to_string()),
        })
    }
}
