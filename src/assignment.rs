//! The group leader's assignor: which member of a kafka-mirror group copies
//! which partition. Pure: no I/O, no clock.
//!
//! The leader (see `cluster::membership`) calls [`assign`] with what every
//! member reported when it joined ([`Holdings`]) and the partitions the
//! group copies, and sends each member its [`Assignment`]. The rules, each
//! one weaker than those before it:
//!
//! 1. **Balanced by count.** Of `P` partitions and `N` members, every member
//!    is meant to copy `P / N` or `P / N + 1`.
//! 2. **Sticky.** A member keeps as many of the partitions it copies as its
//!    share allows; the larger shares go to the members that hold the most,
//!    so the fewest partitions move.
//! 3. **Spread by bytes.** A member over its share keeps its heaviest and
//!    lightest partitions alternately (what it keeps and what it gives up
//!    weigh about the same per partition); partitions to place go, heaviest
//!    first, to the member with room that copies the fewest bytes. A
//!    partition's weight is the most any member reports having copied of it
//!    recently, so a partition that just moved keeps its weight.
//! 4. **Cooperative** (KIP-429). A partition never goes to a member while
//!    another still claims it: one moving from A to B is only revoked from A
//!    in this round, A stops it and joins again, and the next rebalance
//!    gives it to B. Partitions that do not move are never stopped.
//! 5. **Deterministic.** The same members and partitions give the same
//!    assignment, whatever order the members come in.
//!
//! Every member also gets a *writer slot*, a small number unique in the
//! group: exactly-once mode names its transactional id after it, so a new
//! holder of a slot fences the one before (a member that vanished). A
//! member keeps the slot it reports; the others take the lowest free ones,
//! so an instance alone, restarted, gets the slot its predecessor had.
//!
//! Two members claiming one partition (a member that has not yet heard it
//! lost it) is resolved for the claim of the newest generation; the other
//! claimant revokes it, and nobody else is given it while it is claimed.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

/// A topic and a partition of it, as the rest of the crate keys partitions.
pub type TopicPartition = (String, i32);

/// What a member reports when it joins: the partitions it copies now and
/// the bytes it copied recently (of those and of partitions it gave up).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holdings {
    /// The generation in which `owned` was assigned; -1 before the first.
    pub generation: i32,
    /// The partitions the member copies now.
    pub owned: BTreeSet<TopicPartition>,
    /// Bytes copied recently, by partition: the weight of a partition.
    pub recent_bytes: BTreeMap<TopicPartition, u64>,
    /// The writer slot the member holds, if any.
    pub slot: Option<i32>,
}

/// A member of the group as its leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member id the coordinator gave it.
    pub id: String,
    /// What it reported.
    pub holdings: Holdings,
}

/// One member's part of a rebalance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    /// The partitions it copies in this generation: those it keeps and those
    /// nobody claims that it starts.
    pub partitions: BTreeSet<TopicPartition>,
    /// Partitions it copies now and must stop (finish or abort what is in
    /// flight, store their checkpoints) before it joins again, so another
    /// member can be given them.
    pub revoke: BTreeSet<TopicPartition>,
    /// Its writer slot; `None` only from a leader that assigns none.
    pub slot: Option<i32>,
}

/// Assigns `partitions` to `members` (see the module docs for the rules).
/// Every member gets an entry, possibly empty; a member listed twice counts
/// once. No members, no assignment.
pub fn assign(
    members: &[Member],
    partitions: &BTreeSet<TopicPartition>,
) -> BTreeMap<String, Assignment> {
    let mut members: Vec<&Member> = members.iter().collect();
    members.sort_by(|a, b| a.id.cmp(&b.id));
    members.dedup_by(|later, first| later.id == first.id);
    let n = members.len();
    if n == 0 {
        return BTreeMap::new();
    }
    let weight: BTreeMap<&TopicPartition, u64> = partitions
        .iter()
        .map(|p| {
            let reported = members
                .iter()
                .filter_map(|m| m.holdings.recent_bytes.get(p))
                .max();
            (p, reported.copied().unwrap_or(0))
        })
        .collect();
    let heaviest_first =
        |a: &&TopicPartition, b: &&TopicPartition| weight[b].cmp(&weight[a]).then(a.cmp(b));

    // Who holds each partition to copy: the claim of the newest generation,
    // the first member in id order among equals.
    let mut holder: BTreeMap<&TopicPartition, usize> = BTreeMap::new();
    for (i, member) in members.iter().enumerate() {
        for p in member.holdings.owned.intersection(partitions) {
            let newer = holder
                .get(p)
                .is_none_or(|&j| members[j].holdings.generation < member.holdings.generation);
            if newer {
                holder.insert(p, i);
            }
        }
    }
    let mut held: Vec<Vec<&TopicPartition>> = vec![Vec::new(); n];
    for (&p, &i) in &holder {
        held[i].push(p);
    }

    // Shares: the larger ones to the members holding the most.
    let (base, extra) = (partitions.len() / n, partitions.len() % n);
    let mut share = vec![base; n];
    let mut by_held: Vec<usize> = (0..n).collect();
    by_held.sort_by_key(|&i| (Reverse(held[i].len()), i));
    for &i in by_held.iter().take(extra) {
        share[i] += 1;
    }

    // Each member keeps what it holds, up to its share.
    let mut target: Vec<BTreeSet<&TopicPartition>> = vec![BTreeSet::new(); n];
    let mut load = vec![0u64; n];
    for i in 0..n {
        let mut mine = std::mem::take(&mut held[i]);
        mine.sort_by(heaviest_first);
        for p in alternate_ends(&mine, share[i]) {
            load[i] += weight[p];
            target[i].insert(p);
        }
    }

    // The rest, heaviest first, to the member with room copying the least.
    let placed: BTreeSet<&TopicPartition> = target.iter().flatten().copied().collect();
    let mut unplaced: Vec<&TopicPartition> =
        partitions.iter().filter(|p| !placed.contains(p)).collect();
    unplaced.sort_by(heaviest_first);
    for p in unplaced {
        // The shares add up to the partitions, so a member has room.
        let lightest = (0..n)
            .filter(|&i| target[i].len() < share[i])
            .min_by_key(|&i| (load[i], target[i].len(), i));
        if let Some(i) = lightest {
            load[i] += weight[p];
            target[i].insert(p);
        }
    }

    let slots = writer_slots(&members);
    // Cooperative: only what the member holds, or what nobody claims.
    let claimed: BTreeSet<&TopicPartition> =
        members.iter().flat_map(|m| &m.holdings.owned).collect();
    members
        .iter()
        .enumerate()
        .map(|(i, member)| {
            let partitions: BTreeSet<TopicPartition> = target[i]
                .iter()
                .filter(|p| holder.get(*p) == Some(&i) || !claimed.contains(*p))
                .map(|p| (*p).clone())
                .collect();
            let revoke = member
                .holdings
                .owned
                .difference(&partitions)
                .cloned()
                .collect();
            let assignment = Assignment {
                partitions,
                revoke,
                slot: Some(slots[i]),
            };
            (member.id.clone(), assignment)
        })
        .collect()
}

/// Each member's writer slot (by its place in `members`): the one it
/// reports, unless a member of a newer generation (the first in id order
/// among equals) reports it too; the lowest free ones to the rest, in id
/// order.
fn writer_slots(members: &[&Member]) -> Vec<i32> {
    let mut slot: Vec<Option<i32>> = vec![None; members.len()];
    let mut taken = BTreeSet::new();
    let mut claimants: Vec<usize> = (0..members.len())
        .filter(|&i| members[i].holdings.slot.is_some_and(|s| s >= 0))
        .collect();
    claimants.sort_by_key(|&i| (Reverse(members[i].holdings.generation), i));
    for i in claimants {
        if let Some(claim) = members[i].holdings.slot {
            if taken.insert(claim) {
                slot[i] = Some(claim);
            }
        }
    }
    let mut next = 0;
    slot.into_iter()
        .map(|given| {
            given.unwrap_or_else(|| {
                while taken.contains(&next) {
                    next += 1;
                }
                taken.insert(next);
                next
            })
        })
        .collect()
}

/// Up to `count` of `sorted` taken from both ends in turn (first, last,
/// second, second last...): from a list sorted heaviest first, a selection
/// whose weight per partition is close to the whole list's.
fn alternate_ends<'a, T>(sorted: &[&'a T], count: usize) -> Vec<&'a T> {
    let mut taken = Vec::with_capacity(count.min(sorted.len()));
    let (mut front, mut back) = (0, sorted.len());
    while taken.len() < count && front < back {
        if taken.len() % 2 == 0 {
            taken.push(sorted[front]);
            front += 1;
        } else {
            back -= 1;
            taken.push(sorted[back]);
        }
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        (topic.to_owned(), partition)
    }

    fn partitions(count: i32) -> BTreeSet<TopicPartition> {
        (0..count).map(|p| tp("t", p)).collect()
    }

    fn member(id: &str, generation: i32, owned: &[i32]) -> Member {
        Member {
            id: id.to_owned(),
            holdings: Holdings {
                generation,
                owned: owned.iter().map(|&p| tp("t", p)).collect(),
                recent_bytes: BTreeMap::new(),
                slot: None,
            },
        }
    }

    fn numbers(set: &BTreeSet<TopicPartition>) -> Vec<i32> {
        set.iter().map(|(_, p)| *p).collect()
    }

    #[test]
    fn a_new_group_splits_the_partitions_within_one() {
        let members = [
            member("a", -1, &[]),
            member("b", -1, &[]),
            member("c", -1, &[]),
        ];
        let assigned = assign(&members, &partitions(10));
        let counts: Vec<usize> = assigned.values().map(|a| a.partitions.len()).collect();
        assert_eq!(counts, [4, 3, 3]);
        let all: BTreeSet<_> = assigned.values().flat_map(|a| &a.partitions).collect();
        assert_eq!(all.len(), 10);
        assert!(assigned.values().all(|a| a.revoke.is_empty()));
        assert!(assign(&[], &partitions(3)).is_empty());
    }

    #[test]
    fn a_joining_member_gets_moved_partitions_one_rebalance_later() {
        let all = partitions(6);
        let round1 = assign(
            &[member("a", 4, &[0, 1, 2, 3, 4, 5]), member("b", -1, &[])],
            &all,
        );
        // A keeps copying half and only stops the other half; B waits.
        assert_eq!(round1["a"].partitions.len(), 3);
        assert_eq!(round1["a"].revoke.len(), 3);
        assert!(round1["b"].partitions.is_empty() && round1["b"].revoke.is_empty());

        let a_now = numbers(&round1["a"].partitions);
        let round2 = assign(&[member("a", 5, &a_now), member("b", 5, &[])], &all);
        assert_eq!(numbers(&round2["a"].partitions), a_now);
        assert_eq!(round2["b"].partitions, round1["a"].revoke);
        assert!(round2.values().all(|a| a.revoke.is_empty()));
    }

    #[test]
    fn a_member_that_left_leaves_its_partitions_free_at_once() {
        let all = partitions(6);
        let assigned = assign(&[member("a", 3, &[0, 1, 2])], &all);
        assert_eq!(numbers(&assigned["a"].partitions), [0, 1, 2, 3, 4, 5]);
        assert!(assigned["a"].revoke.is_empty());
    }

    #[test]
    fn members_keep_their_partitions_when_the_counts_allow() {
        // 7 over 3: shares of 3, 2 and 2. B holds 3 and gets the larger
        // share although A comes first, so nothing moves.
        let members = [
            member("a", 2, &[0, 1]),
            member("b", 2, &[2, 3, 4]),
            member("c", 2, &[5, 6]),
        ];
        let assigned = assign(&members, &partitions(7));
        for m in &members {
            assert_eq!(assigned[&m.id].partitions, m.holdings.owned);
            assert!(assigned[&m.id].revoke.is_empty());
        }
        // Over its share, a member gives up only the surplus.
        let members = [member("a", 2, &[0, 1, 2, 3, 4]), member("b", 2, &[5, 6])];
        let assigned = assign(&members, &partitions(7));
        assert_eq!(assigned["a"].revoke.len(), 1);
        assert_eq!(numbers(&assigned["b"].partitions), [5, 6]);
    }

    #[test]
    fn heavy_partitions_are_spread() {
        let weights = [(0, 1000), (1, 900), (2, 10), (3, 5), (4, 800), (5, 1)];
        let mut a = member("a", -1, &[]);
        a.holdings.recent_bytes = weights.iter().map(|&(p, w)| (tp("t", p), w)).collect();
        let b = member("b", -1, &[]);
        let c = member("c", -1, &[]);
        let assigned = assign(&[a, b, c], &partitions(6));
        // One heavy partition each, the light ones to balance the bytes.
        for assignment in assigned.values() {
            let heavy = assignment
                .partitions
                .iter()
                .filter(|(_, p)| [0, 1, 4].contains(p));
            assert_eq!(heavy.count(), 1, "{assigned:?}");
        }
        assert_eq!(numbers(&assigned["a"].partitions), [0, 5]);
        assert_eq!(numbers(&assigned["b"].partitions), [1, 3]);
        assert_eq!(numbers(&assigned["c"].partitions), [2, 4]);
    }

    #[test]
    fn a_member_over_its_share_keeps_heavy_and_light_alike() {
        let mut a = member("a", 1, &[0, 1, 2, 3]);
        a.holdings.recent_bytes = [(0, 100), (1, 90), (2, 2), (3, 1)]
            .iter()
            .map(|&(p, w)| (tp("t", p), w))
            .collect();
        let assigned = assign(&[a, member("b", -1, &[])], &partitions(4));
        // Kept: the heaviest and the lightest; the other two move.
        assert_eq!(numbers(&assigned["a"].partitions), [0, 3]);
        assert_eq!(numbers(&assigned["a"].revoke), [1, 2]);
    }

    #[test]
    fn a_partition_claimed_twice_stays_with_the_newest_claim_and_goes_to_nobody_else() {
        let all = partitions(4);
        let members = [
            member("a", 3, &[0, 1]),
            member("b", 5, &[1, 2]),
            member("c", -1, &[]),
        ];
        let assigned = assign(&members, &all);
        assert!(assigned["a"].revoke.contains(&tp("t", 1)));
        assert!(!assigned["a"].partitions.contains(&tp("t", 1)));
        assert!(!assigned["c"].partitions.contains(&tp("t", 1)));
        assert!(!assigned["b"].revoke.contains(&tp("t", 1)));
    }

    #[test]
    fn members_keep_their_writer_slots_and_new_ones_take_the_lowest_free() {
        let slot = |id: &str, generation: i32, slot: Option<i32>| {
            let mut m = member(id, generation, &[]);
            m.holdings.slot = slot;
            m
        };
        let slots = |assigned: &BTreeMap<String, Assignment>| -> Vec<Option<i32>> {
            assigned.values().map(|a| a.slot).collect()
        };
        // Alone, a restarted instance gets slot 0, its predecessor's.
        assert_eq!(
            slots(&assign(&[slot("x", -1, None)], &partitions(2))),
            [Some(0)]
        );
        // Slot 0's holder vanished: the others keep theirs, a newcomer
        // takes 0 (fencing whatever the vanished one left open).
        let members = [
            slot("a", 4, Some(1)),
            slot("b", 4, Some(2)),
            slot("c", -1, None),
            slot("d", -1, None),
        ];
        assert_eq!(
            slots(&assign(&members, &partitions(8))),
            [Some(1), Some(2), Some(0), Some(3)]
        );
        // Two claims of one slot: the newer generation's keeps it.
        let members = [slot("a", 3, Some(0)), slot("b", 5, Some(0))];
        assert_eq!(slots(&assign(&members, &partitions(2))), [Some(1), Some(0)]);
    }

    #[test]
    fn partitions_no_longer_copied_are_revoked() {
        let assigned = assign(&[member("a", 1, &[0, 1, 7])], &partitions(2));
        assert_eq!(numbers(&assigned["a"].partitions), [0, 1]);
        assert_eq!(numbers(&assigned["a"].revoke), [7]);
    }

    #[test]
    fn the_order_of_the_members_does_not_matter() {
        let mut a = member("a", 2, &[0, 1, 2, 3, 4]);
        a.holdings.recent_bytes.insert(tp("t", 2), 50);
        let mut members = vec![
            a,
            member("b", 2, &[5]),
            member("c", -1, &[]),
            member("d", 1, &[6]),
        ];
        let all = partitions(11);
        let first = assign(&members, &all);
        members.reverse();
        assert_eq!(assign(&members, &all), first);
        members.swap(0, 2);
        assert_eq!(assign(&members, &all), first);
    }

    /// One change to the group between rebalances.
    #[derive(Debug, Clone)]
    enum Change {
        Join,
        Leave(usize),
        /// Partitions added (positive) or removed from the end.
        Resize(i32),
        /// New recent bytes for a partition, reported by a member.
        Traffic {
            member: usize,
            partition: i32,
            bytes: u64,
        },
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            3 => Just(Change::Join),
            2 => any::<usize>().prop_map(Change::Leave),
            1 => (-5..8i32).prop_map(Change::Resize),
            2 => (any::<usize>(), 0..40i32, 0..10_000u64)
                .prop_map(|(member, partition, bytes)| Change::Traffic { member, partition, bytes }),
        ]
    }

    /// The group as the members see it: each member's holdings.
    struct Group {
        members: BTreeMap<String, Holdings>,
        partitions: BTreeSet<TopicPartition>,
        generation: i32,
        next_id: usize,
    }

    impl Group {
        fn apply(&mut self, change: &Change) {
            let ids: Vec<String> = self.members.keys().cloned().collect();
            match *change {
                Change::Join => {
                    self.next_id += 1;
                    self.members
                        .insert(format!("m{:03}", self.next_id), Holdings::default());
                }
                Change::Leave(i) if !ids.is_empty() => {
                    self.members.remove(&ids[i % ids.len()]);
                }
                Change::Leave(_) => {}
                Change::Resize(by) => {
                    let count = (self.partitions.len() as i32 + by).clamp(0, 40);
                    self.partitions = (0..count).map(|p| tp("t", p)).collect();
                }
                Change::Traffic {
                    member,
                    partition,
                    bytes,
                } if !ids.is_empty() => {
                    let holdings = self.members.get_mut(&ids[member % ids.len()]);
                    if let Some(holdings) = holdings {
                        holdings.recent_bytes.insert(tp("t", partition), bytes);
                    }
                }
                Change::Traffic { .. } => {}
            }
        }

        /// One rebalance: checks what must hold of any assignment, then each
        /// member revokes and takes what it was given. Whether anything was
        /// revoked (another rebalance follows).
        fn rebalance(&mut self) -> Result<bool, TestCaseError> {
            self.generation += 1;
            let members: Vec<Member> = self
                .members
                .iter()
                .map(|(id, holdings)| Member {
                    id: id.clone(),
                    holdings: holdings.clone(),
                })
                .collect();
            let assigned = assign(&members, &self.partitions);
            prop_assert_eq!(assigned.len(), self.members.len());
            // Writer slots: one each, never two alike, kept once held.
            let slots: BTreeSet<Option<i32>> = assigned.values().map(|a| a.slot).collect();
            prop_assert_eq!(slots.len(), assigned.len());
            prop_assert!(!slots.contains(&None));
            for (id, holdings) in &self.members {
                if holdings.slot.is_some() {
                    prop_assert_eq!(assigned[id].slot, holdings.slot);
                }
            }
            let n = self.members.len();
            let (floor, ceil) = (self.partitions.len() / n, self.partitions.len().div_ceil(n));
            let mut copying: BTreeMap<&TopicPartition, &str> = BTreeMap::new();
            let (mut moved, mut fewest_moves, mut at_ceil) = (0, 0, 0);
            for (id, holdings) in &self.members {
                let assignment = &assigned[id];
                prop_assert!(assignment.revoke.is_subset(&holdings.owned));
                prop_assert!(assignment.revoke.is_disjoint(&assignment.partitions));
                prop_assert!(assignment.partitions.is_subset(&self.partitions));
                // Sticky: a member holding no more than the smaller share
                // keeps it all, one holding more keeps at least that.
                let held = holdings.owned.intersection(&self.partitions).count();
                let kept = holdings.owned.intersection(&assignment.partitions).count();
                prop_assert!(kept >= held.min(floor), "{} kept {} of {}", id, kept, held);
                moved += held - kept;
                fewest_moves += held.saturating_sub(ceil);
                at_ceil += usize::from(held >= ceil);
                prop_assert!(assignment.partitions.len() <= ceil);
                // No partition is copied by two members at once, not even
                // while one of them is still stopping it.
                for p in assignment.partitions.iter().chain(&assignment.revoke) {
                    if let Some(other) = copying.insert(p, id) {
                        prop_assert!(false, "{:?} copied by {} and {}", p, other, id);
                    }
                }
            }
            // Only as many partitions move as the shares require: whoever
            // holds more than the larger share gives up the surplus, and if
            // more members hold that much than there are larger shares, the
            // rest give up one more each.
            let larger_shares = self.partitions.len() % n;
            if larger_shares > 0 {
                fewest_moves += at_ceil.saturating_sub(larger_shares);
            }
            prop_assert_eq!(moved, fewest_moves);
            let revoked = assigned.values().any(|a| !a.revoke.is_empty());
            if !revoked {
                // Nothing to stop: every partition is copied, within one of even.
                prop_assert_eq!(copying.len(), self.partitions.len());
                let counts = assigned.values().map(|a| a.partitions.len());
                prop_assert!(counts.clone().min() >= Some(floor), "{:?}", assigned);
                prop_assert!(counts.max() <= Some(ceil), "{:?}", assigned);
            }
            for (id, holdings) in &mut self.members {
                holdings.owned = assigned[id].partitions.clone();
                holdings.generation = self.generation;
                holdings.slot = assigned[id].slot;
            }
            Ok(revoked)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Members join and leave, partitions come and go, traffic shifts:
        /// after each change the group settles within two rebalances,
        /// balanced, with every partition copied by exactly one member, and
        /// a settled group's next rebalance moves nothing.
        #[test]
        fn rebalances_stay_balanced_sticky_and_exclusive(
            start in 0..25i32,
            changes in proptest::collection::vec(change(), 1..30),
        ) {
            let mut group = Group {
                members: BTreeMap::new(),
                partitions: partitions(start),
                generation: 0,
                next_id: 0,
            };
            for change in &changes {
                group.apply(change);
                if group.members.is_empty() {
                    continue;
                }
                if group.rebalance()? {
                    prop_assert!(!group.rebalance()?, "a second rebalance had to revoke");
                }
                let settled = group.members.clone();
                prop_assert!(!group.rebalance()?);
                for (id, holdings) in &group.members {
                    prop_assert_eq!(&holdings.owned, &settled[id].owned);
                }
            }
        }
    }
}
