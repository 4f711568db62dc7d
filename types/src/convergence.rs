//! The convergence rule: when two nodes hold the same state.
//!
//! Nodes hold different subsets of the documents (a region's halo), so
//! "every node has one digest" is not the rule. Two nodes are in step when
//! they agree on what they share: each one's digest of the documents scoped
//! to the other's region. The node's `/debug/state`, the bot's check,
//! `devcluster status` and the simulation all decide convergence with this
//! one function, so they can never disagree about it.

use std::collections::BTreeMap;

/// How an unmapped layout names its one region in digests.
pub const EVERY_REGION: &str = "*";

/// Whether a node of region `a` and one of region `b` hold the same
/// versions of the documents they share, by their per-region digests
/// (`digests[r]`: a hash of the documents a node holds that are scoped to
/// `r`; an unmapped node's one entry is [`EVERY_REGION`]). Two nodes that
/// share nothing are in step.
pub fn in_step<D: PartialEq>(
    (a, a_digests): (&str, &BTreeMap<String, D>),
    (b, b_digests): (&str, &BTreeMap<String, D>),
) -> bool {
    shared(a_digests, b) == shared(b_digests, a)
}

/// Every pair of `nodes` (each its region and per-region digests) is
/// [`in_step`].
pub fn all_in_step<D: PartialEq>(nodes: &[(&str, &BTreeMap<String, D>)]) -> bool {
    nodes
        .iter()
        .enumerate()
        .all(|(i, a)| nodes[i + 1..].iter().all(|b| in_step(*a, *b)))
}

fn shared<'a, D>(digests: &'a BTreeMap<String, D>, with: &str) -> Option<&'a D> {
    digests.get(with).or_else(|| digests.get(EVERY_REGION))
}
