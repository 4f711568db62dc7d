//! The simulated clients: where riders and drivers post, and what they
//! are told once their request is durable.

use super::*;

impl Sim {
    pub(super) fn position(&mut self) -> Position {
        if self.world.corners.is_empty() {
            let (low, high) = self.world.bounds;
            return Position {
                lat: self.rng.random_range(low.lat..high.lat),
                lon: self.rng.random_range(low.lon..high.lon),
            };
        }
        let corner = self.world.corners[self.rng.random_range(0..self.world.corners.len())];
        Position {
            lat: corner.lat + self.rng.random_range(-SPREAD_DEG..SPREAD_DEG),
            lon: corner.lon + self.rng.random_range(-SPREAD_DEG..SPREAD_DEG),
        }
    }

    /// One client post, to a node of the region that owns its position (as
    /// the bot routes them; the node redirects the others).
    pub(super) fn post_somewhere(&mut self) {
        let (position, destination) = (self.position(), self.position());
        let region = &self.world.regions.route(position).id;
        let serving: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].region == *region)
            .collect();
        let Some(&at) = serving.get(self.rng.random_range(0..serving.len().max(1))) else {
            return;
        };
        let rider = self.rng.random_bool(0.5);
        self.post(at, rider, position, destination);
    }

    pub(super) fn traffic(&mut self) {
        if self.traffic == Traffic::Overload && self.now.0 % BURST_EVERY_MS < BURST_MS {
            for _ in 0..BURST_POSTS {
                self.post_somewhere();
            }
            return;
        }
        // A steady rate per region.
        let per_tick = self.world.rate * self.world.region_count() as f64;
        let mut posts = per_tick.floor() as usize;
        if self.rng.random_bool(per_tick.fract()) {
            posts += 1;
        }
        for _ in 0..posts {
            self.post_somewhere();
        }
    }

    /// A client posts a rider (or a driver) to node `i`, if it is up; the
    /// answer comes once the request is durable.
    pub(super) fn post(
        &mut self,
        i: usize,
        rider: bool,
        position: Position,
        destination: Position,
    ) -> Option<RequestId> {
        let clock = self.nodes[i].clock(self.now);
        let process = self.nodes[i].process.as_mut()?;
        if process.core.admit().is_err() {
            self.shed += 1;
            return None;
        }
        let region = self.world.layout.index_of(&self.nodes[i].region);
        let scope = self
            .world
            .layout
            .scope_of(region.expect("a node's region is in the layout"), position);
        let process = self.nodes[i].process.as_mut()?;
        let (ticket, durable) = if rider {
            process.core.submit_rider(
                NewRider {
                    name: "rider".into(),
                    position,
                    destination,
                },
                clock,
            )
        } else {
            process.core.submit_driver(
                NewDriver {
                    name: "driver".into(),
                    car_number: "SIM-1".into(),
                    position,
                },
                clock,
            )
        };
        process
            .waiting
            .push((ticket.id, ticket.expires_at, scope, durable));
        Some(ticket.id)
    }

    /// The group committer runs, and the client learns which of its
    /// requests were answered 202, and subscribes to them.
    pub(super) fn commit_and_answer(&mut self, i: usize) {
        if self.is_slow_now(i) {
            return;
        }
        let clock = self.nodes[i].clock(self.now);
        let Some(process) = &mut self.nodes[i].process else {
            return;
        };
        process.core.commit_arrivals();
        self.trace_absorbed(i, None);
        let Some(process) = &mut self.nodes[i].process else {
            return;
        };
        let mut answered = Vec::new();
        process.waiting.retain_mut(
            |(id, expires_at, scope, durable)| match durable.try_recv() {
                Ok(()) => {
                    answered.push((*id, *expires_at, scope.clone()));
                    false
                }
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => true,
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => false,
            },
        );
        if answered.is_empty() {
            return;
        }
        let ids: Vec<uuid::Uuid> = answered.iter().map(|(id, _, _)| id.0).collect();
        process
            .hub
            .subscribe(process.socket, &ids, &process.core, clock);
        let owner = process.core.owner();
        for (id, expires_at, scope) in answered {
            self.check.acked.insert(
                id,
                Acked {
                    node: i,
                    owner: owner.clone(),
                    expires_at,
                    scope,
                },
            );
        }
    }
}
