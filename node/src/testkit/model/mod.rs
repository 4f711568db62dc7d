//! An exhaustive model check of the ownership protocol, and the
//! conformance of the shipped core to that model.
//!
//! It lives in the node crate, under `cfg(test)`, rather than in a crate of
//! its own: conformance replays traces of the real `Node` recorded by
//! the deterministic simulation ([`super::simulation`], test-only) and reads
//! the crate's own record and id types, none of which a separate crate
//! could reach without making them public. `stateright` stays a
//! dev-dependency: nothing of this ships.
//!
//! - [`ownership`]: the model (state, transition relation, properties).
//! - `checks`: breadth-first checks of the shipped protocol and of two
//!   defects put back.
//! - [`conformance`]: simulation traces replayed against the transition
//!   relation (the simulation's test replays every seed it runs).

mod checks;
pub(crate) mod conformance;
pub(crate) mod ownership;
