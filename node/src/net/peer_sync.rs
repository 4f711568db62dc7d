//! What the transport needs from whatever it syncs: the runtime's shared
//! state implements it; the transport knows nothing else of the node.

use ride_types::clock::Millis;
use ride_types::ids::NodeId;

use crate::protocol::message::PeerMessage;
use crate::protocol::replica::ReplicaError;

/// What the transport needs from the core it drives. `now` is the node's
/// wall clock, passed in so that cores stay clock-free.
pub(crate) trait PeerSync: Send + Sync + 'static {
    fn outgoing(&self, peer: &NodeId, now: Millis) -> Result<Vec<PeerMessage>, ReplicaError>;
    fn receive(&self, peer: &NodeId, message: PeerMessage, now: Millis)
    -> Result<(), ReplicaError>;
    fn peer_lost(&self, peer: &NodeId);
    /// A peer said hello from `region`; an error ends the session (see
    /// [`crate::protocol::replica::Replica::peer_joined`]).
    fn peer_joined(&self, peer: &NodeId, region: &str) -> Result<(), ReplicaError>;
}
