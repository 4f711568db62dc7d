//! What the transport needs from whatever it syncs: the runtime's shared
//! state implements it; the transport knows nothing else of the node.

use ride_types::clock::Millis;
use ride_types::ids::NodeId;

use thiserror::Error;

use crate::protocol::message::PeerMessage;

/// Why the node could not take or make a peer's message (the protocol
/// refused it, or the disk failed): the session ends.
#[derive(Debug, Error)]
#[error(transparent)]
pub(crate) struct SyncError(Box<dyn std::error::Error + Send + Sync>);

impl SyncError {
    pub(crate) fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(error))
    }
}

/// What the transport needs from the core it drives. `now` is the node's
/// wall clock, passed in so that cores stay clock-free.
pub(crate) trait PeerSync: Send + Sync + 'static {
    fn outgoing(&self, peer: &NodeId, now: Millis) -> Result<Vec<PeerMessage>, SyncError>;
    fn receive(&self, peer: &NodeId, message: PeerMessage, now: Millis) -> Result<(), SyncError>;
    fn peer_lost(&self, peer: &NodeId);
    /// A peer said hello from `region`; an error ends the session (see
    /// [`crate::protocol::replica::Replica::peer_joined`]).
    fn peer_joined(&self, peer: &NodeId, region: &str) -> Result<(), SyncError>;
}
