//! What drives the protocol: the state a node's tasks share
//! ([`node`]: the protocol, the match log, the journal and the group
//! commit), the step loop that runs its time ([`step_loop`]), admission
//! control ([`admission`]), committed matches kept for their readers
//! ([`recent_matches`]), what is known of each peer ([`peer_board`]), websocket
//! delivery ([`delivery`]) and the capabilities that guard it ([`access`]).

pub mod access;
pub mod admission;
pub mod delivery;
pub mod node;
pub mod peer_board;
pub mod recent_matches;
pub mod step_loop;
