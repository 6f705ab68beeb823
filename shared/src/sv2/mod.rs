//! Stratum V2 plumbing shared by the declarator and the sim-miner.
//!
//! - [`keys`]: the Noise **authority** key pair (SRI/spec base58check formats, on-disk storage).
//! - [`transport`]: Noise NX handshakes and encrypted, framed, parsed SV2 connections over a
//!   tokio `TcpStream`, split into an [`Sv2Reader`] and an [`Sv2Writer`].
//!
//! Everything on the wire is produced and parsed by the SRI crates re-exported by
//! `stratum-core` (`noise_sv2` for the handshake and ciphers, `framing_sv2` for headers,
//! `parsers_sv2` for messages), so both sides interoperate with SRI peers.

pub mod keys;
pub mod transport;

pub use keys::{encode_authority_public_key, parse_authority_public_key, AuthorityKeys, KeyError};
pub use transport::{
    accept, connect, Message, Sv2Error, Sv2Reader, Sv2Writer, DEFAULT_MAX_PAYLOAD,
    MAX_FRAME_PAYLOAD,
};

#[cfg(test)]
mod transport_tests;
