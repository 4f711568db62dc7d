//! What drives the protocol: the state a node's tasks share
//! ([`node`]: the protocol, the match log, the journal and the group
//! commit), the step loop that runs its time ([`step_loop`]), admission
//! control ([`admission`]), committed matches kept for their readers
//! ([`recent_matches`]), what is known of each peer ([`peer_board`]), websocket
//! delivery ([`delivery`]) and the capabilities that guard it ([`access`]).

pub mod access;
pub(crate) mod admission;
pub(crate) mod availability;
pub(crate) mod delivery;
pub(crate) mod node;
pub(crate) mod peer_board;
pub(crate) mod recent_matches;
pub(crate) mod step_loop;
