//! The network between nodes: QUIC with mutual TLS ([`transport`], [`tls`]),
//! driving a node's state through [`peer_sync::PeerSync`],
//! each session's stream compressed ([`compression`]), peers found from
//! Fly.io's private DNS ([`discovery`], [`fly`]), and a user-space WAN for
//! trying latency and loss on one machine ([`wan_relay`]).

pub(crate) mod compression;
pub(crate) mod discovery;
pub(crate) mod fly;
pub(crate) mod peer_sync;
pub mod tls;
pub(crate) mod transport;
pub mod wan_relay;
