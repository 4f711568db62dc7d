//! Accepting riders and drivers: pending at once, journaled by the runtime
//! before their 202, and written into documents by a later intake flush.

use super::*;

impl Replica {
    /// Accepts a rider: pending at once, journaled by the next
    /// [`Replica::journal_arrivals`] (its 202 waits for that), and written
    /// into a document by a later intake flush.
    pub(crate) fn accept_rider(
        &mut self,
        id: RequestId,
        rider: NewRider,
        scope: Scope,
        now: Millis,
    ) -> Ticket {
        let expires_at = now.plus(self.config.request_ttl_ms);
        self.arrive(
            scope,
            Record::Rider(RiderRecord {
                id,
                name: rider.name,
                position: rider.position,
                destination: rider.destination,
                accepted_at: now,
                expires_at,
            }),
        );
        Ticket { id, expires_at }
    }

    /// A rider or driver record accepted here, on its way to the journal.
    pub(super) fn arrive(&mut self, scope: Scope, record: Record) {
        if let Some(request) = record.request() {
            self.unwritten.insert(request.id, request);
            self.arrived.push((request.accepted_at, scope, record));
        }
    }

    /// Accepts a driver, as [`Replica::accept_rider`] does a rider.
    pub(crate) fn accept_driver(
        &mut self,
        id: RequestId,
        driver: NewDriver,
        scope: Scope,
        now: Millis,
    ) -> Ticket {
        let expires_at = now.plus(self.config.request_ttl_ms);
        self.arrive(
            scope,
            Record::Driver(DriverRecord {
                id,
                name: driver.name,
                car_number: driver.car_number,
                position: driver.position,
                accepted_at: now,
                expires_at,
            }),
        );
        Ticket { id, expires_at }
    }

    /// The requests accepted since the last call, as the journal keeps
    /// them: one intake frame per epoch of this node's clock. They are
    /// durable (and may be answered 202) once appended and synced; the
    /// runtime then says whether the append worked
    /// ([`Replica::arrivals_journaled`]).
    pub(crate) fn arrivals_to_journal(&self) -> Vec<(u64, Vec<u8>)> {
        let mut by_epoch: BTreeMap<u64, Vec<(&Scope, &Record)>> = BTreeMap::new();
        for (at, scope, record) in &self.arrived {
            by_epoch
                .entry(at.0 / self.config.epoch_ms)
                .or_default()
                .push((scope, record));
        }
        by_epoch
            .into_iter()
            .map(|(epoch, accepted)| (epoch, encode_intake(&accepted)))
            .collect()
    }

    /// The last [`Replica::arrivals_to_journal`] was appended: its requests
    /// wait, journaled, for the next intake flush. If it was not, they are
    /// forgotten, and the caller refuses them.
    pub(crate) fn arrivals_journaled(&mut self, appended: bool) {
        if appended {
            self.journaled.append(&mut self.arrived);
            return;
        }
        for (_, _, record) in self.arrived.drain(..) {
            if let Some(request) = record.request() {
                self.unwritten.remove(&request.id);
            }
        }
    }

    /// Moves journaled requests into the writes of the next flush, if the
    /// intake flush is due (or `now` regardless of the interval).
    pub(super) fn write_intake(&mut self, now: Millis, now_regardless: bool) {
        if self.journaled.is_empty() || (!now_regardless && now < self.next_intake_flush) {
            return;
        }
        self.next_intake_flush = now.plus(self.config.intake_flush_ms);
        for (at, scope, record) in self.journaled.drain(..) {
            if let Some(request) = record.request() {
                self.unwritten.remove(&request.id);
            }
            self.unflushed.push((at, scope, record));
        }
    }
}
