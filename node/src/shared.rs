//! The dispatch core as the node's tasks share it.
//!
//! Intake never takes the core's lock: an accepted request gets its id and
//! expiry at once and is handed over through a lock-free queue. Whoever locks
//! the core next (the matcher, a subscription, a status query) first moves
//! the queued requests in, so every reader sees every request accepted
//! before it locked. Intake latency therefore never depends on how long a
//! matching round or a large insert holds the lock.

use std::sync::mpsc::{self, Receiver, Sender};

use parking_lot::{MappedMutexGuard, Mutex, MutexGuard};

use crate::clock::Millis;
use crate::dispatch::{Dispatch, Ticket};
use crate::ids::RequestId;
use crate::intake::{NewDriver, NewRider};

enum Arrival {
    Rider(RequestId, NewRider, Millis),
    Driver(RequestId, NewDriver, Millis),
}

struct Core {
    dispatch: Dispatch,
    arrivals: Receiver<Arrival>,
}

pub struct SharedDispatch {
    core: Mutex<Core>,
    intake: Sender<Arrival>,
    request_ttl_ms: u64,
}

impl SharedDispatch {
    pub fn new(dispatch: Dispatch) -> Self {
        let (intake, arrivals) = mpsc::channel();
        Self {
            request_ttl_ms: dispatch.settings().request_ttl_ms,
            core: Mutex::new(Core { dispatch, arrivals }),
            intake,
        }
    }

    /// Accepts a rider without waiting for the core.
    pub fn submit_rider(&self, rider: NewRider, now: Millis) -> Ticket {
        let id = RequestId::generate();
        self.hand_over(Arrival::Rider(id, rider, now));
        self.ticket(id, now)
    }

    /// Accepts a driver without waiting for the core.
    pub fn submit_driver(&self, driver: NewDriver, now: Millis) -> Ticket {
        let id = RequestId::generate();
        self.hand_over(Arrival::Driver(id, driver, now));
        self.ticket(id, now)
    }

    /// Locks the core, with every request accepted so far moved in.
    pub fn lock(&self) -> MappedMutexGuard<'_, Dispatch> {
        let mut core = self.core.lock();
        let Core { dispatch, arrivals } = &mut *core;
        for arrival in arrivals.try_iter() {
            match arrival {
                Arrival::Rider(id, rider, at) => dispatch.accept_rider(id, rider, at),
                Arrival::Driver(id, driver, at) => dispatch.accept_driver(id, driver, at),
            };
        }
        MutexGuard::map(core, |core| &mut core.dispatch)
    }

    fn hand_over(&self, arrival: Arrival) {
        // The receiver lives as long as `self`, so sending cannot fail.
        let _ = self.intake.send(arrival);
    }

    fn ticket(&self, id: RequestId, now: Millis) -> Ticket {
        Ticket {
            id,
            expires_at: now.plus(self.request_ttl_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::{Settings, Status};
    use crate::ids::NodeId;
    use crate::matches::Retention;
    use crate::wire::Position;

    #[test]
    fn submitted_requests_are_visible_to_the_next_lock_with_the_promised_expiry() {
        let shared = SharedDispatch::new(Dispatch::new(Settings {
            node: NodeId("n".into()),
            region: "r".into(),
            request_ttl_ms: 7_000,
            match_retention: Retention {
                ms: 1_000,
                max_matches: 10,
            },
        }));
        let p = Position { lat: 1.0, lon: 1.0 };
        let ticket = shared.submit_rider(
            NewRider {
                name: "a".into(),
                position: p,
                destination: p,
            },
            Millis(100),
        );
        assert_eq!(ticket.expires_at, Millis(7_100));
        assert_eq!(shared.lock().status(&ticket.id), Status::Pending);
        let swept = shared.lock().prepare_round(Millis(7_100));
        assert_eq!(swept.expired.ids, vec![ticket.id]);
    }
}
