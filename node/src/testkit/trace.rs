//! What a simulated node did, as the simulation records it and the model's
//! conformance check replays it.

use ride_types::ids::NodeId;

use crate::protocol::documents::DocId;
use crate::protocol::record::Record;

/// What a node did, as the model's conformance check replays it
/// ([`super::model::conformance`]): test-only, recorded only when asked for.
#[derive(Debug, Clone)]
pub(crate) enum TraceEvent {
    /// Node `node` (re)started as `owner`, holding `loaded` from its journal.
    Boot {
        node: usize,
        owner: NodeId,
        loaded: Vec<(DocId, Record)>,
    },
    /// Memory gone; with `wipe`, the disk too.
    Crash {
        node: usize,
        wipe: bool,
    },
    /// Records the node absorbed: its own writes, and with `from`, what a
    /// message from that peer brought.
    Absorbed {
        node: usize,
        from: Option<usize>,
        records: Vec<(DocId, Record)>,
    },
    Ready {
        node: usize,
    },
    /// Documents the node no longer holds (cleanup).
    Dropped {
        node: usize,
        docs: Vec<DocId>,
    },
}
