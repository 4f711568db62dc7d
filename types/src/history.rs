//! The rules every history of matches must keep, in one place: the
//! deterministic simulation (the node's `testkit::simulation`) checks its runs with them,
//! and `bot check` checks the chaos runs of real nodes (`scripts/chaos.sh`)
//! with them, so the two can never come to mean different things.
//!
//! - nobody is in two commits;
//! - every notification a client got is backed by a commit of that very
//!   pair;
//! - every acknowledged request ends matched, pending or expired: it is
//!   never lost.
//!
//! Pure functions over ids, no I/O: each caller gathers its history its own
//! way (the simulation from every record any node ever absorbed, the chaos
//! check from the nodes' `/matches` listings and the bot's record) and words
//! the violations for its own report. Nothing here can fail, so there is no
//! error type: a broken rule is data the caller reports.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Which side of a match someone is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Rider,
    Driver,
}

impl Role {
    /// The other side of a match.
    pub fn partner(self) -> Role {
        match self {
            Role::Rider => Role::Driver,
            Role::Driver => Role::Rider,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Rider => "rider",
            Role::Driver => "driver",
        })
    }
}

/// Committed matches, indexed from both sides.
///
/// `At` says where a commit was found. Two commits of one pair count twice
/// when `At` tells them apart (the simulation: one per document, since a
/// pair must be committed in one document only) and once when it does not
/// (`()`: a match that several nodes list is one match).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commits<Id, At> {
    by_rider: BTreeMap<Id, BTreeSet<(At, Id)>>,
    by_driver: BTreeMap<Id, BTreeSet<(At, Id)>>,
}

/// Someone in more than one commit: each commit as where it was found and
/// the partner it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Double<Id, At> {
    pub role: Role,
    pub id: Id,
    pub commits: BTreeSet<(At, Id)>,
}

/// A rider told of a driver that no commit of that pair backs, with the
/// drivers that were committed for that rider (none, another, or several).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unbacked<Id> {
    pub rider: Id,
    pub driver: Id,
    pub committed: Vec<Id>,
}

impl<Id, At> Default for Commits<Id, At> {
    fn default() -> Self {
        Commits {
            by_rider: BTreeMap::new(),
            by_driver: BTreeMap::new(),
        }
    }
}

impl<Id: Ord + Clone, At: Ord + Clone> Commits<Id, At> {
    pub fn insert(&mut self, at: At, rider: Id, driver: Id) {
        self.by_rider
            .entry(rider.clone())
            .or_default()
            .insert((at.clone(), driver.clone()));
        self.by_driver
            .entry(driver)
            .or_default()
            .insert((at, rider));
    }

    /// Everyone in more than one commit: riders first, then drivers, each
    /// in id order.
    pub fn doubles(&self) -> Vec<Double<Id, At>> {
        [
            (Role::Rider, &self.by_rider),
            (Role::Driver, &self.by_driver),
        ]
        .into_iter()
        .flat_map(|(role, index)| {
            index
                .iter()
                .filter(|(_, commits)| commits.len() > 1)
                .map(move |(id, commits)| Double {
                    role,
                    id: id.clone(),
                    commits: commits.clone(),
                })
        })
        .collect()
    }

    /// Whether a rider told of `driver` is backed: the rider is committed,
    /// and only ever with that driver.
    pub fn backs(&self, rider: &Id, driver: &Id) -> bool {
        self.by_rider
            .get(rider)
            .is_some_and(|commits| commits.iter().all(|(_, d)| d == driver))
    }

    /// The notifications, as (rider, driver), that no commit backs.
    pub fn unbacked<'a>(
        &self,
        told: impl IntoIterator<Item = (&'a Id, &'a Id)>,
    ) -> Vec<Unbacked<Id>>
    where
        Id: 'a,
    {
        told.into_iter()
            .filter(|(rider, driver)| !self.backs(rider, driver))
            .map(|(rider, driver)| Unbacked {
                rider: rider.clone(),
                driver: driver.clone(),
                committed: self.partners(Role::Rider, rider),
            })
            .collect()
    }

    /// Everyone `id` (in `role`) is committed with, in id order, once each.
    pub fn partners(&self, role: Role, id: &Id) -> Vec<Id> {
        let index = match role {
            Role::Rider => &self.by_rider,
            Role::Driver => &self.by_driver,
        };
        let partners: BTreeSet<&Id> = index
            .get(id)
            .into_iter()
            .flatten()
            .map(|(_, partner)| partner)
            .collect();
        partners.into_iter().cloned().collect()
    }

    /// How many commits there are (a pair counts once per place `At` tells
    /// apart).
    pub fn count(&self) -> usize {
        self.by_rider.values().map(BTreeSet::len).sum()
    }
}

impl<Id: Ord + Clone, At: Ord + Clone> FromIterator<(At, Id, Id)> for Commits<Id, At> {
    /// From (where, rider, driver) triples.
    fn from_iter<I: IntoIterator<Item = (At, Id, Id)>>(commits: I) -> Self {
        let mut all = Commits::default();
        for (at, rider, driver) in commits {
            all.insert(at, rider, driver);
        }
        all
    }
}

/// What clients were told, whichever socket told them: each rider of one
/// driver, each driver of one rider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Told<Id> {
    rider: BTreeMap<Id, Id>,
    driver: BTreeMap<Id, Id>,
}

/// Someone told of one partner, then of another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retold<Id> {
    pub role: Role,
    pub id: Id,
    pub before: Id,
    pub now: Id,
}

impl<Id> Default for Told<Id> {
    fn default() -> Self {
        Told {
            rider: BTreeMap::new(),
            driver: BTreeMap::new(),
        }
    }
}

impl<Id: Ord + Clone> Told<Id> {
    /// Notes that a client was told `rider` got `driver` (the same notice
    /// may come many times: to the rider, to the driver, on several
    /// sockets). Returns whoever was told of another partner before.
    pub fn record(&mut self, rider: Id, driver: Id) -> Vec<Retold<Id>> {
        let mut retold = Vec::new();
        for (role, index, id, partner) in [
            (Role::Rider, &mut self.rider, &rider, &driver),
            (Role::Driver, &mut self.driver, &driver, &rider),
        ] {
            match index.insert(id.clone(), partner.clone()) {
                Some(before) if before != *partner => retold.push(Retold {
                    role,
                    id: id.clone(),
                    before,
                    now: partner.clone(),
                }),
                _ => {}
            }
        }
        retold
    }

    /// Every rider told of a match, with the driver last told.
    pub fn matches(&self) -> impl Iterator<Item = (&Id, &Id)> {
        self.rider.iter()
    }

    /// How many riders were told of a match.
    pub fn riders(&self) -> usize {
        self.rider.len()
    }
}

/// What became of an acknowledged request, in one node's word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Matched,
    Pending,
    /// Expired, or matched so long ago that it is no longer retained.
    Expired,
    /// Never heard of: lost, unless it was never owed.
    Unknown,
}

/// The acknowledged requests still owed (not expired) that `fate` says are
/// lost: the per-request form of the rule, for a history that can ask
/// about every request (the simulation).
pub fn lost<T>(owed: impl IntoIterator<Item = T>, fate: impl Fn(&T) -> Fate) -> Vec<T> {
    owed.into_iter()
        .filter(|request| fate(request) == Fate::Unknown)
        .collect()
}

/// The same rule in aggregate, for a history seen only as counts from
/// outside (a chaos run): the requests acknowledged, and those accounted
/// for as matched, pending or expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub accepted: u64,
    /// Requests in a commit: two per match when riders and drivers are
    /// counted together.
    pub matched: u64,
    pub pending: u64,
    pub expired: u64,
}

impl Tally {
    pub fn accounted(&self) -> u64 {
        self.matched + self.pending + self.expired
    }

    /// Acknowledged requests accounted for nowhere: lost.
    pub fn lost(&self) -> u64 {
        self.accepted.saturating_sub(self.accounted())
    }

    /// Requests accounted for beyond those acknowledged (accepted by a node
    /// whose answer never arrived, or counted twice).
    pub fn surplus(&self) -> u64 {
        self.accounted().saturating_sub(self.accepted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commits found in places `At` (a document, a node): (at, rider, driver).
    fn commits<At: Ord + Clone>(list: &[(At, u32, u32)]) -> Commits<u32, At> {
        list.iter().cloned().collect()
    }

    #[test]
    fn distinct_pairs_are_no_double() {
        let all = commits(&[((), 1, 10), ((), 2, 20), ((), 3, 30)]);
        assert_eq!(all.doubles(), []);
        assert_eq!(all.count(), 3);
    }

    #[test]
    fn anyone_with_two_partners_is_a_double() {
        for (list, role, id, partners) in [
            ([((), 1, 10), ((), 1, 11)], Role::Rider, 1, [10, 11]),
            ([((), 1, 10), ((), 2, 10)], Role::Driver, 10, [1, 2]),
        ] {
            let commits_of_id = partners.iter().map(|p| ((), *p)).collect();
            assert_eq!(
                commits(&list).doubles(),
                [Double {
                    role,
                    id,
                    commits: commits_of_id,
                }]
            );
        }
    }

    #[test]
    fn roles_name_themselves_and_their_partner() {
        assert_eq!(
            (Role::Rider.to_string(), Role::Rider.partner()),
            ("rider".to_owned(), Role::Driver)
        );
        assert_eq!(
            (Role::Driver.to_string(), Role::Driver.partner()),
            ("driver".to_owned(), Role::Rider)
        );
    }

    #[test]
    fn one_pair_in_two_places_counts_twice_only_where_places_differ() {
        // Listed by two nodes: one match.
        let listed = commits(&[((), 1, 10), ((), 1, 10)]);
        assert_eq!(listed.doubles(), []);
        assert_eq!(listed.count(), 1);
        // Committed in two documents: two commits of each of them.
        let documents = commits(&[("doc-a", 1, 10), ("doc-b", 1, 10)]);
        let roles: Vec<(Role, u32)> = documents
            .doubles()
            .into_iter()
            .map(|d| (d.role, d.id))
            .collect();
        assert_eq!(roles, [(Role::Rider, 1), (Role::Driver, 10)]);
    }

    #[test]
    fn a_notice_is_backed_only_by_a_commit_of_that_very_pair() {
        let all = commits(&[((), 1, 10), ((), 2, 20), ((), 2, 21)]);
        assert!(all.backs(&1, &10));
        assert!(!all.backs(&1, &11), "another driver");
        assert!(!all.backs(&3, &30), "no commit at all");
        assert!(!all.backs(&2, &20), "the rider is committed twice");
        let told = [(1, 10), (1, 11), (3, 30), (2, 20)];
        assert_eq!(
            all.unbacked(told.iter().map(|(r, d)| (r, d))),
            [
                Unbacked {
                    rider: 1,
                    driver: 11,
                    committed: vec![10],
                },
                Unbacked {
                    rider: 3,
                    driver: 30,
                    committed: vec![],
                },
                Unbacked {
                    rider: 2,
                    driver: 20,
                    committed: vec![20, 21],
                },
            ]
        );
    }

    #[test]
    fn partners_are_listed_once_each_in_id_order() {
        let all = commits(&[("b", 1, 11), ("a", 1, 10), ("c", 1, 10)]);
        assert_eq!(all.partners(Role::Rider, &1), [10, 11]);
        assert_eq!(all.partners(Role::Driver, &10), [1]);
        assert_eq!(all.partners(Role::Driver, &99), Vec::<u32>::new());
    }

    #[test]
    fn the_same_notice_again_is_no_retelling_another_partner_is() {
        let mut told = Told::default();
        assert_eq!(told.record(1, 10), []);
        assert_eq!(told.record(1, 10), [], "the driver's copy of the notice");
        assert_eq!(
            told.record(1, 11),
            [Retold {
                role: Role::Rider,
                id: 1,
                before: 10,
                now: 11,
            }]
        );
        assert_eq!(
            told.record(2, 11),
            [Retold {
                role: Role::Driver,
                id: 11,
                before: 1,
                now: 2,
            }]
        );
        assert_eq!(told.riders(), 2);
        let matches: Vec<(u32, u32)> = told.matches().map(|(r, d)| (*r, *d)).collect();
        assert_eq!(matches, [(1, 11), (2, 11)]);
    }

    #[test]
    fn only_unknown_requests_are_lost() {
        let fates = [
            (1, Fate::Matched),
            (2, Fate::Pending),
            (3, Fate::Expired),
            (4, Fate::Unknown),
        ];
        let lost = lost(fates, |(_, fate)| *fate);
        assert_eq!(lost, [(4, Fate::Unknown)]);
    }

    #[test]
    fn a_tally_counts_what_is_accounted_for_nowhere() {
        let tally = Tally {
            accepted: 10,
            matched: 4,
            pending: 3,
            expired: 1,
        };
        assert_eq!(
            (tally.accounted(), tally.lost(), tally.surplus()),
            (8, 2, 0)
        );
        let over = Tally {
            accepted: 5,
            ..tally
        };
        assert_eq!((over.lost(), over.surplus()), (0, 3));
    }
}
