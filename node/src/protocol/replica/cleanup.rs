//! Dropping documents past use, at epoch boundaries of this node's clock,
//! and never one whose decisions are still needed.

use super::*;

impl Replica {
    /// Drops the documents that have not changed here for the retention,
    /// measured on this node's clock, except those whose commits, answers
    /// or claims refer to a rider or driver still held elsewhere: a commit
    /// or a transfer is never forgotten while what it decided about can
    /// still be seen, whatever the timestamps inside say.
    pub(super) fn drop_old(&mut self, now: Millis) -> Result<(), ReplicaError> {
        if now < self.next_cleanup {
            return Ok(());
        }
        // At epoch boundaries of this node's clock: nodes whose clocks agree
        // drop the same documents at the same moment.
        let epoch = self.config.epoch_ms;
        let boundary = Millis(now.0 / epoch * epoch);
        self.next_cleanup = boundary.plus(epoch);
        // Every request accepted in an epoch before this one has expired.
        self.docs
            .drop_intake_before(boundary.minus(self.config.request_ttl_ms).0 / epoch);
        let stale = self.docs.unchanged_for(self.config.retain_ms(), boundary);
        if stale.is_empty() {
            return Ok(());
        }
        let contents: Vec<(DocId, Vec<Record>)> = stale
            .into_iter()
            .map(|doc| {
                let records = self.docs.records_of(&doc);
                (doc, records)
            })
            .collect();
        let mut dropping: BTreeSet<DocId> = contents.iter().map(|(d, _)| d.clone()).collect();
        loop {
            let needed: Vec<DocId> = contents
                .iter()
                .filter(|(doc, records)| {
                    dropping.contains(doc)
                        && records.iter().flat_map(refers_to).any(|id| {
                            self.ledger
                                .home_of(&id)
                                .is_some_and(|home| !dropping.contains(&home))
                        })
                })
                .map(|(doc, _)| doc.clone())
                .collect();
            if needed.is_empty() {
                break;
            }
            for doc in needed {
                dropping.remove(&doc);
            }
        }
        let mut dropped = Vec::with_capacity(dropping.len());
        for (doc, records) in &contents {
            if dropping.contains(doc) {
                self.ledger.forget(doc, records);
                dropped.push(doc.clone());
            }
        }
        self.docs
            .drop_docs(&dropped, self.config.tombstone_ms(), now);
        let ledger = &self.ledger;
        self.expired_claims
            .retain(|id| ledger.claims().any(|c| &c.record.id == id));
        Ok(())
    }
}

/// The riders and drivers a record decides about.
fn refers_to(record: &Record) -> Vec<RequestId> {
    match record {
        Record::Commit(m) => vec![m.rider, m.driver],
        Record::Claim(c) => vec![c.rider, c.driver],
        Record::Decision(x) => vec![x.driver],
        Record::Rider(_) | Record::Driver(_) => Vec::new(),
    }
}
