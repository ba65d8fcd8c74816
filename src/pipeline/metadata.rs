//! What the flow knows of both clusters' metadata, and when it asks again.
//!
//! [`MetadataView`] holds the latest snapshot of each cluster, the topic-id
//! to name maps their responses are read with, and per cluster whether a
//! refresh is wanted, in flight, and when the last one went. Stages read it
//! and ask for a refresh through a shared reference (a stage that finds a
//! leader gone asks; the engine starts the request): the asking is a flag,
//! not a request, so it can be set by code that holds the view read-only.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::{Metadata, Role, TopicNames};

/// Shortest time between two metadata refreshes of one cluster.
const REFRESH_MIN_INTERVAL: Duration = Duration::from_millis(250);

/// A metadata refresh that someone asked for.
#[derive(Debug, Default)]
struct Refresh {
    wanted: Cell<bool>,
    in_flight: bool,
    last: Option<Instant>,
}

/// One cluster's snapshot and the names its responses are read with.
#[derive(Debug, Default)]
struct Side {
    metadata: Arc<Metadata>,
    names: TopicNames,
    refresh: Refresh,
}

/// Both clusters' metadata as the flow last saw it.
#[derive(Debug, Default)]
pub(super) struct MetadataView {
    source: Side,
    target: Side,
}

impl MetadataView {
    fn side(&self, role: Role) -> &Side {
        match role {
            Role::Source => &self.source,
            Role::Target => &self.target,
        }
    }

    fn side_mut(&mut self, role: Role) -> &mut Side {
        match role {
            Role::Source => &mut self.source,
            Role::Target => &mut self.target,
        }
    }

    /// The latest snapshot of one cluster.
    pub(super) fn get(&self, role: Role) -> &Arc<Metadata> {
        &self.side(role).metadata
    }

    pub(super) fn source(&self) -> &Arc<Metadata> {
        self.get(Role::Source)
    }

    pub(super) fn target(&self) -> &Arc<Metadata> {
        self.get(Role::Target)
    }

    /// Topic names by id on one cluster.
    pub(super) fn names(&self, role: Role) -> &TopicNames {
        &self.side(role).names
    }

    /// Takes a new snapshot of one cluster.
    pub(super) fn set(&mut self, role: Role, metadata: Metadata) {
        let side = self.side_mut(role);
        side.names = TopicNames::of(&metadata);
        side.metadata = Arc::new(metadata);
    }

    /// Asks for fresh metadata of one cluster (leaders moved, a broker failed).
    pub(super) fn want_refresh(&self, role: Role) {
        self.side(role).refresh.wanted.set(true);
    }

    /// The clusters whose refresh should start now, each marked in flight:
    /// wanted, none in flight, and the last one not too recent.
    pub(super) fn due_refreshes(&mut self, now: Instant) -> Vec<Role> {
        let mut due = Vec::new();
        for role in [Role::Source, Role::Target] {
            let refresh = &mut self.side_mut(role).refresh;
            let recent = refresh
                .last
                .is_some_and(|last| now.duration_since(last) < REFRESH_MIN_INTERVAL);
            if !refresh.wanted.get() || refresh.in_flight || recent {
                continue;
            }
            refresh.wanted.set(false);
            refresh.in_flight = true;
            refresh.last = Some(now);
            due.push(role);
        }
        due
    }

    /// A refresh of one cluster answered; a failed one is wanted again.
    pub(super) fn refresh_answered(&mut self, role: Role, succeeded: bool) {
        self.side_mut(role).refresh.in_flight = false;
        if !succeeded {
            self.want_refresh(role);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wanted_refresh_starts_once_and_not_again_too_soon() {
        let mut view = MetadataView::default();
        let now = Instant::now();
        assert!(view.due_refreshes(now).is_empty(), "nobody asked");
        view.want_refresh(Role::Target);
        assert_eq!(view.due_refreshes(now), [Role::Target]);
        view.want_refresh(Role::Target);
        assert!(view.due_refreshes(now).is_empty(), "one in flight");
        view.refresh_answered(Role::Target, false);
        assert!(
            view.due_refreshes(now + Duration::from_millis(100))
                .is_empty(),
            "the last one went 100 ms ago"
        );
        assert_eq!(
            view.due_refreshes(now + REFRESH_MIN_INTERVAL),
            [Role::Target],
            "a failed refresh is wanted again"
        );
    }
}
