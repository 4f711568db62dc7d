//! The simulated network: links that queue, drop and partition messages
//! between the nodes' cores, and the chaos that cuts and heals them.

use super::*;

impl Sim {
    /// Sends what each node has for each peer it can reach.
    pub(super) fn send(&mut self) {
        let n = self.nodes.len();
        for from in 0..n {
            for to in 0..n {
                if from == to || !self.links[&(from, to)].up || self.nodes[to].process.is_none() {
                    continue;
                }
                if self.distant.contains(&(from, to)) || !self.join(from, to) {
                    continue;
                }
                let clock = self.nodes[from].clock(self.now);
                let Some(process) = &self.nodes[from].process else {
                    continue;
                };
                let messages = process
                    .core
                    .outgoing(&node_id(to), clock)
                    .expect("honest writes never fail");
                let delay = self.rng.random_range(5..120);
                self.trace_absorbed(from, None);
                let link = self.links.get_mut(&(from, to)).expect("link");
                // In order on one link: nothing overtakes what was sent earlier.
                let earliest = link.queue.back().map_or(Millis(0), |(at, _)| *at);
                let at = self.now.plus(delay).max(earliest);
                link.queue.extend(messages.into_iter().map(|m| (at, m)));
            }
        }
    }

    /// The hello of `to` reaches `from` as a session starts: false when
    /// their regions are too far apart to keep one.
    pub(super) fn join(&mut self, from: usize, to: usize) -> bool {
        if self.joined.contains(&(from, to)) {
            return true;
        }
        let Some(process) = &self.nodes[from].process else {
            return false;
        };
        match process
            .core
            .peer_joined(&node_id(to), &self.nodes[to].region)
        {
            Ok(()) => {
                self.joined.insert((from, to));
                true
            }
            Err(_) => {
                self.distant.insert((from, to));
                false
            }
        }
    }

    /// In `Overload`, node 0 is the slow one: it idles on most ticks.
    pub(super) fn is_slow_now(&self, i: usize) -> bool {
        self.traffic == Traffic::Overload
            && i == 0
            && !(self.now.0 / TICK_MS).is_multiple_of(SLOW_EVERY_TICKS)
    }

    pub(super) fn deliver(&mut self) {
        let slow: Vec<bool> = (0..self.nodes.len()).map(|i| self.is_slow_now(i)).collect();
        for (&(from, to), link) in &mut self.links {
            if slow[to] {
                continue;
            }
            while link.queue.front().is_some_and(|(at, _)| *at <= self.now) {
                let (_, message) = link.queue.pop_front().expect("front");
                let node = &self.nodes[to];
                let clock = node.clock(self.now);
                let Some(process) = &node.process else {
                    continue;
                };
                let bytes = postcard::to_stdvec(&message).map_or(0, |b| b.len());
                if let Err(e) = process.core.receive(&node_id(from), message, clock) {
                    self.check
                        .violations
                        .push(format!("node {to} rejected an honest message: {e}"));
                }
                let records = process.core.take_observed();
                let received = &mut self.received[to];
                received.bytes += bytes;
                received.records += records
                    .iter()
                    .filter(|(doc, _)| doc.owner.node_of_owner() != node.id)
                    .count();
                self.check.observe(records.clone());
                if let Some(tracer) = &mut self.tracer {
                    tracer.docs[to].extend(records.iter().map(|(doc, _)| doc.clone()));
                    tracer.events.push(TraceEvent::Absorbed {
                        node: to,
                        from: Some(from),
                        records,
                    });
                }
            }
        }
    }

    pub(super) fn set_link(&mut self, a: usize, b: usize, up: bool) {
        for (from, to) in [(a, b), (b, a)] {
            let link = self.links.get_mut(&(from, to)).expect("link");
            if link.up && !up {
                link.queue.clear();
                self.joined.remove(&(from, to));
                if let Some(process) = &self.nodes[from].process {
                    process.core.peer_lost(&node_id(to));
                }
            }
            link.up = up;
        }
    }

    pub(super) fn cut_off(&mut self, i: usize) {
        for p in 0..self.nodes.len() {
            if p != i {
                self.set_link(i, p, false);
            }
        }
    }

    pub(super) fn chaos(&mut self) {
        let n = self.nodes.len();
        let roll: f64 = self.rng.random();
        let (a, b) = (self.rng.random_range(0..n), self.rng.random_range(0..n));
        if roll < 0.003 {
            if a != b {
                self.set_link(a, b, false);
            }
        } else if roll < 0.007 {
            if a != b {
                self.set_link(a, b, true);
            }
        } else if roll < 0.008 {
            self.cut_off(a);
        } else if roll < 0.0095 {
            self.crash(a, false);
        } else if roll < 0.0098 {
            self.crash(a, true);
        }
    }

    pub(super) fn heal_all(&mut self) {
        let n = self.nodes.len();
        for a in 0..n {
            for b in a + 1..n {
                self.set_link(a, b, true);
            }
        }
        for i in 0..n {
            if self.nodes[i].process.is_none() {
                self.boot(i);
            }
        }
    }
}
