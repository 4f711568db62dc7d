//! What peers send each other (versioned: [`PeerMessage::V1`]), and the
//! answer to an accepted request. The protocol ([`super::replica`]) makes and
//! takes these; the transport only frames them.

use serde::{Deserialize, Serialize};

use super::documents::DocId;
use ride_types::clock::Millis;
use ride_types::halo::Scope;
use ride_types::ids::{NodeId, RequestId};

/// The answer to an accepted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub id: RequestId,
    pub expires_at: Millis,
}

/// What peers send each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum PeerMessage {
    V1(PeerMessageV1),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum PeerMessageV1 {
    /// The first frame each way on a connection: who is speaking (checked
    /// against the speaker's certificate), its region, and the fingerprint
    /// of its region layout and pickup radius ([`ride_types::halo::Layout`]),
    /// which must equal the listener's.
    Hello {
        node: NodeId,
        region: String,
        layout: u64,
    },
    /// One automerge sync message for one document.
    Sync { doc: DocId, message: Vec<u8> },
    /// How the speaker is doing, about once a second: for operators (the
    /// dashboard) and for measuring clock offsets, never for decisions.
    Status(PeerStatus),
    /// Sent first in every session: every document the speaker holds and
    /// its heads. The receiver is in sync with the speaker once it holds
    /// all of them; a restarted node decides nothing before that.
    Inventory { docs: Vec<(DocId, Vec<[u8; 32]>)> },
    /// The regions the speaker serves, by layout index: its own and those
    /// it adopted while they are down ([`ride_types::adoption`]). Sent when
    /// that changes, and at the start of a session while it is more than the
    /// speaker's own region, so a node that serves only its own (every node,
    /// unless a region is down) never sends one. The listener then offers it
    /// the documents of every region it serves.
    Serving { regions: Scope },
}

/// A node's view of itself, as it tells its peers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct PeerStatus {
    pub region: String,
    pub digest: u64,
    pub documents: u32,
    pub record_bytes: u64,
    /// Requests this node accepted, and matches it committed, per second.
    pub requests_per_s: f64,
    pub matches_per_s: f64,
    pub ready: bool,
    /// The speaker's wall clock when it sent this status.
    pub sent_at: Millis,
    /// The last status the speaker received from the listener: its
    /// `sent_at` and the speaker's clock on receipt. With `sent_at` and the
    /// listener's own clock on receipt, that is an NTP exchange.
    pub echo: Option<(Millis, Millis)>,
}
