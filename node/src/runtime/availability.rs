//! Which regions are down, which this node serves, and where a request for
//! a position goes: the availability promise that a region's death does not
//! take its area with it.
//!
//! A neighbour region is *down* when this node has heard from none of its
//! nodes for `--adopt-after`; it is *up* again once one of its nodes is
//! connected and says it is ready (in sync with its peers). Every node then
//! picks the same adopter from the region files ([`ride_types::adoption`]),
//! so the area has one server again with no vote. When the region comes
//! back, its adopter goes on accepting for `--handback-after` (the returning
//! nodes accept their own area from the start, so nothing is refused in
//! between), then redirects home again.
//!
//! Why silence, and why these defaults: a status message goes to every
//! peer once a second, so silence is what a dead or partitioned region looks
//! like. `--adopt-after` (10 s) is longer than the QUIC idle timeout (5 s)
//! plus a redial (at most a second apart, plus a handshake), so a link that
//! loses packets or drops a session and comes back does not cause an
//! adoption; and short enough that a dead region's riders are served again
//! within seconds.
//!
//! Only neighbour regions are judged (a node keeps sessions with no others,
//! so it cannot see them die), and only when the node runs in a mesh. The
//! state machine takes the time as an argument and does no I/O; intake reads
//! its result from two atomics ([`Availability::route`]), like admission.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use ride_types::adoption::RegionSet;
use ride_types::clock::Millis;
use ride_types::halo::{Layout, RegionIndex};

/// How long silence and readiness must last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    pub adopt_after: Duration,
    pub handback_after: Duration,
}

/// Where a request for a position of region `home` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// This node's own region.
    Here,
    /// A region this node adopted: accepted here.
    Adopted,
    /// Redirected to its region, which is up.
    Home,
    /// Redirected to the adopter of its region, which is down.
    Adopter(RegionIndex),
}

/// What a peer looks like to the watcher at one observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerSighting {
    pub region: RegionIndex,
    /// A message came from it since the last observation.
    pub heard: bool,
    /// Connected, and its last status said it is ready.
    pub ready: bool,
}

/// A region as the watcher last judged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judged {
    Up { last_heard: Millis },
    Down,
}

/// What changed at an observation: the new sets, for the protocol and the
/// logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Changed {
    pub down: RegionSet,
    pub adopted: RegionSet,
}

#[derive(Debug)]
struct Watch {
    timing: Timing,
    judged: BTreeMap<RegionIndex, Judged>,
    /// Regions adopted and back up: served until then (the hand-back).
    handing_back: BTreeMap<RegionIndex, Millis>,
}

/// The availability view of one node.
#[derive(Debug)]
pub(crate) struct Availability {
    layout: Arc<Layout>,
    own: RegionIndex,
    down: AtomicU64,
    adopted: AtomicU64,
    /// `None` when the node judges no region (no mesh, or no map).
    watch: Option<Mutex<Watch>>,
}

impl Availability {
    /// A node of region `own` that judges its neighbours from `now` on (a
    /// neighbour never heard from is down once `adopt_after` has passed).
    pub(crate) fn watching(
        layout: Arc<Layout>,
        own: RegionIndex,
        timing: Timing,
        now: Millis,
    ) -> Self {
        let judged = layout
            .neighbours_of(own)
            .filter(|r| *r != own)
            .map(|r| (r, Judged::Up { last_heard: now }))
            .collect();
        Self {
            own,
            watch: Some(Mutex::new(Watch {
                timing,
                judged,
                handing_back: BTreeMap::new(),
            })),
            ..Self::fixed(layout, own)
        }
    }

    /// A node that judges nothing: every region is up, always.
    pub(crate) fn fixed(layout: Arc<Layout>, own: RegionIndex) -> Self {
        Self {
            layout,
            own,
            down: AtomicU64::new(0),
            adopted: AtomicU64::new(0),
            watch: None,
        }
    }

    pub(crate) fn down(&self) -> RegionSet {
        RegionSet::from_bits(self.down.load(Ordering::Relaxed))
    }

    /// The regions this node serves besides its own.
    pub(crate) fn adopted(&self) -> RegionSet {
        RegionSet::from_bits(self.adopted.load(Ordering::Relaxed))
    }

    pub(crate) fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }

    pub(crate) fn own(&self) -> RegionIndex {
        self.own
    }

    /// The ids of the regions this node serves, its own first.
    pub(crate) fn serving_ids(&self) -> Vec<String> {
        let adopted = self.adopted().iter().filter(|r| *r != self.own);
        self.ids(std::iter::once(self.own).chain(adopted))
    }

    /// The ids of the regions this node believes down.
    pub(crate) fn down_ids(&self) -> Vec<String> {
        self.ids(self.down().iter())
    }

    /// Per region this node believes down, the id of the region that serves
    /// its area.
    pub(crate) fn adopter_ids(&self) -> BTreeMap<String, String> {
        let down = self.down();
        down.iter()
            .filter_map(|r| {
                let adopter = self.layout.adopter_of(r, down)?;
                let id = |r| self.layout.id_of(r).map(str::to_owned);
                Some((id(r)?, id(adopter)?))
            })
            .collect()
    }

    fn ids(&self, regions: impl Iterator<Item = RegionIndex>) -> Vec<String> {
        regions
            .filter_map(|r| self.layout.id_of(r).map(str::to_owned))
            .collect()
    }

    /// Where a request for a position of `home` goes, without a lock.
    pub(crate) fn route(&self, home: RegionIndex) -> Route {
        if home == self.own {
            return Route::Here;
        }
        if self.adopted().contains(home) {
            return Route::Adopted;
        }
        let down = self.down();
        if !down.contains(home) {
            return Route::Home;
        }
        // Only neighbours are judged, and this node, which is up, is one of
        // theirs: a down region always has an adopter here.
        match self.layout.adopter_of(home, down) {
            Some(adopter) if adopter == self.own => Route::Adopted,
            Some(adopter) => Route::Adopter(adopter),
            None => Route::Home,
        }
    }

    /// Judges every neighbour from what was seen of its nodes since the
    /// last call; returns the new sets when they changed.
    pub(crate) fn observe(
        &self,
        now: Millis,
        sightings: impl IntoIterator<Item = PeerSighting>,
    ) -> Option<Changed> {
        let mut watch = self.watch.as_ref()?.lock();
        let sightings: Vec<PeerSighting> = sightings.into_iter().collect();
        let adopt_after = duration_ms(watch.timing.adopt_after);
        let handback_after = duration_ms(watch.timing.handback_after);
        let previous = (self.down(), self.adopted());
        let mut came_back = Vec::new();
        for (region, judged) in &mut watch.judged {
            let seen = sightings.iter().filter(|s| s.region == *region);
            // Only messages keep a region up: a session outlives its peer by
            // the QUIC idle timeout, so "connected" would start the clock
            // that much late.
            let heard = seen.clone().any(|s| s.heard);
            let ready = seen.clone().any(|s| s.ready);
            *judged = match *judged {
                Judged::Up { .. } if heard => Judged::Up { last_heard: now },
                Judged::Up { last_heard } if now.0 >= last_heard.0 + adopt_after => Judged::Down,
                Judged::Down if ready => {
                    came_back.push(*region);
                    Judged::Up { last_heard: now }
                }
                same => same,
            };
        }
        let down: RegionSet = watch
            .judged
            .iter()
            .filter(|(_, j)| **j == Judged::Down)
            .map(|(r, _)| *r)
            .collect();
        for region in came_back {
            if previous.1.contains(region) {
                watch.handing_back.insert(region, now.plus(handback_after));
            }
        }
        watch
            .handing_back
            .retain(|region, until| now < *until && !down.contains(*region));
        let adopted: RegionSet = self
            .layout
            .adopted_by(self.own, down)
            .iter()
            .chain(watch.handing_back.keys().copied())
            .collect();
        self.down.store(down.bits(), Ordering::Relaxed);
        self.adopted.store(adopted.bits(), Ordering::Relaxed);
        ((down, adopted) != previous).then_some(Changed { down, adopted })
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use ride_types::regions::Regions;

    fn shipped() -> Arc<Layout> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../regions");
        let regions = Regions::load_dir(&dir).expect("the shipped regions load");
        Arc::new(Layout::new(&regions, 5.0))
    }

    const SECOND: u64 = 1_000;

    const TIMING: Timing = Timing {
        adopt_after: Duration::from_secs(10),
        handback_after: Duration::from_secs(5),
    };

    fn heard(region: RegionIndex) -> PeerSighting {
        PeerSighting {
            region,
            heard: true,
            ready: true,
        }
    }

    /// North (0) watched by its adopter and by the third region.
    fn setup() -> (Arc<Layout>, RegionIndex, RegionIndex) {
        let layout = shipped();
        let north = layout.index_of("dhaka-north").expect("shipped");
        let adopter = layout
            .adopter_of(north, RegionSet::from_iter([north]))
            .expect("north has an adopter");
        (layout, north, adopter)
    }

    #[test]
    fn silence_past_adopt_after_makes_the_adopter_serve_and_others_redirect_to_it() {
        let (layout, north, adopter) = setup();
        let third = (0..3).find(|r| *r != north && *r != adopter).unwrap();
        let timing = TIMING;
        let at = |s: u64| Millis(s * SECOND);
        let a = Availability::watching(Arc::clone(&layout), adopter, timing, at(0));
        let c = Availability::watching(Arc::clone(&layout), third, timing, at(0));
        for node in [&a, &c] {
            let others: Vec<PeerSighting> =
                (0..3).filter(|r| *r != node.own()).map(heard).collect();
            assert_eq!(node.observe(at(1), others), None);
            assert_eq!(node.route(north), Route::Home);
        }
        // North falls silent at 1 s; the others go on talking.
        for s in 2..11 {
            assert_eq!(a.observe(at(s), [heard(third)]), None, "{s}");
        }
        let changed = a.observe(at(11), [heard(third)]).expect("north is down");
        assert_eq!(changed.down, RegionSet::from_iter([north]));
        assert_eq!(changed.adopted, RegionSet::from_iter([north]));
        assert_eq!(a.route(north), Route::Adopted);
        c.observe(at(11), [heard(adopter)]);
        assert_eq!(c.route(north), Route::Adopter(adopter));

        // North is back and ready at 20 s: the third region sends it home at
        // once, the adopter serves it for the hand-back, then stops.
        assert!(c.observe(at(20), [heard(north)]).is_some());
        assert_eq!(c.route(north), Route::Home);
        let back = a
            .observe(at(20), [heard(north), heard(third)])
            .expect("north is up");
        assert!(back.down.is_empty());
        assert_eq!(back.adopted, RegionSet::from_iter([north]));
        assert_eq!(a.observe(at(24), [heard(north)]), None);
        assert_eq!(a.route(north), Route::Adopted);
        let handed = a.observe(at(25), [heard(north)]).expect("handed back");
        assert!(handed.adopted.is_empty());
        assert_eq!(a.route(north), Route::Home);
    }

    #[test]
    fn a_region_connected_but_not_ready_stays_down_and_silence_shorter_than_adopt_after_is_nothing()
    {
        let (layout, north, adopter) = setup();
        let third = (0..3).find(|r| *r != north && *r != adopter).unwrap();
        let a = Availability::watching(layout, adopter, TIMING, Millis(0));
        let with_third = |north: Option<PeerSighting>| north.into_iter().chain([heard(third)]);
        // Silent for 9.9 s, then heard: no adoption.
        assert_eq!(a.observe(Millis(9_900), with_third(None)), None);
        assert_eq!(
            a.observe(Millis(10_000), with_third(Some(heard(north)))),
            None
        );
        assert_eq!(a.observe(Millis(19_900), with_third(None)), None);
        // Down at 20 s; a node of it connected and not yet in sync does not
        // bring it back.
        assert!(a.observe(Millis(20_000), with_third(None)).is_some());
        let syncing = PeerSighting {
            region: north,
            heard: true,
            ready: false,
        };
        assert_eq!(a.observe(Millis(21_000), with_third(Some(syncing))), None);
        assert_eq!(a.route(north), Route::Adopted);
    }

    #[test]
    fn a_session_that_outlives_its_peer_does_not_delay_the_adoption() {
        let (layout, north, adopter) = setup();
        let third = (0..3).find(|r| *r != north && *r != adopter).unwrap();
        let a = Availability::watching(layout, adopter, TIMING, Millis(0));
        // North's session is still up (the idle timeout has not run out)
        // and its last status said ready, but nothing more came.
        let lingering = PeerSighting {
            region: north,
            heard: false,
            ready: true,
        };
        assert_eq!(a.observe(Millis(9_900), [lingering, heard(third)]), None);
        let changed = a.observe(Millis(10_000), [lingering, heard(third)]);
        assert_eq!(changed.map(|c| c.down), Some(RegionSet::from_iter([north])));
    }

    #[test]
    fn the_last_region_up_serves_every_silent_neighbour_and_a_fixed_node_judges_nothing() {
        let (layout, north, adopter) = setup();
        let third = (0..3).find(|r| *r != north && *r != adopter).unwrap();
        let c = Availability::watching(Arc::clone(&layout), third, TIMING, Millis(0));
        c.observe(Millis(10_000), []);
        assert_eq!(c.down(), RegionSet::from_iter([north, adopter]));
        // Third adopts both its silent neighbours: it is the last one up.
        assert_eq!(c.route(north), Route::Adopted);
        let fixed = Availability::fixed(layout, third);
        assert_eq!(fixed.observe(Millis(60_000), []), None);
        assert_eq!(fixed.route(north), Route::Home);
    }
}
