//! A pool's status as the controller reports it: numbers, conditions, and the Events
//! worth emitting when a condition changes — decided from what was observed.

/// What the controller observed of one pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolView {
    /// Allocatable addresses, or why the spec is invalid.
    pub capacity: Result<u128, String>,
    /// The older overlapping pool that keeps this one from allocating, if any.
    pub shadowed_by: Option<String>,
    /// Addresses held in the pool's blocks.
    pub allocated: u128,
    /// Blocks claimed.
    pub blocks: u64,
    /// `spec.disabled`.
    pub disabled: bool,
    /// The pool is being deleted (deletionTimestamp set).
    pub deleting: bool,
}

/// One condition, without its times (the shell keeps `lastTransitionTime` when the
/// status does not change).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionReport {
    /// `Ready`, `Overlapping`, `Exhausted` or `Terminating`.
    pub kind: &'static str,
    /// True or False.
    pub status: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// For people.
    pub message: String,
}

/// What a pool's status should say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolReport {
    /// Allocatable addresses; `None` for an invalid pool.
    pub capacity: Option<u128>,
    /// Addresses held.
    pub allocated: u128,
    /// `capacity` less `allocated`; `None` for an invalid pool.
    pub free: Option<u128>,
    /// Blocks claimed.
    pub blocks: u64,
    /// Ready, Overlapping, Exhausted, Terminating, in that order.
    pub conditions: Vec<ConditionReport>,
}

/// An Event a pool's status change is worth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolEvent {
    /// `PoolExhausted`, `PoolNearlyFull` or `Overlapping`.
    pub reason: &'static str,
    /// For people.
    pub message: String,
}

/// The flags whose change is an Event, as the last written status says them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Alarms {
    /// No free address.
    pub exhausted: bool,
    /// At least 90% allocated ([`nearly_full`]).
    pub nearly_full: bool,
    /// Shadowed by an older overlapping pool.
    pub overlapping: bool,
}

impl PoolReport {
    /// The report for `view`.
    pub fn of(view: &PoolView) -> PoolReport {
        let capacity = view.capacity.as_ref().ok().copied();
        let free = capacity.map(|c| c.saturating_sub(view.allocated));
        let overlapping = match &view.shadowed_by {
            Some(older) => ConditionReport {
                kind: "Overlapping",
                status: true,
                reason: "OlderPoolOverlaps",
                message: format!(
                    "overlaps the older pool {older:?}, which allocates these addresses; this pool allocates nothing while it exists"
                ),
            },
            None => ConditionReport {
                kind: "Overlapping",
                status: false,
                reason: "NoOverlap",
                message: "no older pool shares an address with this one".into(),
            },
        };
        let exhausted = match (capacity, free) {
            (Some(capacity), Some(0)) => ConditionReport {
                kind: "Exhausted",
                status: true,
                reason: "AllAddressesAllocated",
                message: format!("all {capacity} addresses are allocated"),
            },
            (Some(capacity), Some(free)) => ConditionReport {
                kind: "Exhausted",
                status: false,
                reason: "AddressesFree",
                message: format!("{free} of {capacity} addresses are free"),
            },
            _ => ConditionReport {
                kind: "Exhausted",
                status: false,
                reason: "InvalidSpec",
                message: "the pool's spec is invalid".into(),
            },
        };
        let terminating = if view.deleting {
            ConditionReport {
                kind: "Terminating",
                status: true,
                reason: if view.allocated > 0 {
                    "AllocationsRemain"
                } else {
                    "ReleasingBlocks"
                },
                message: if view.allocated > 0 {
                    format!(
                        "deletion waits until the {} allocated addresses are released",
                        view.allocated
                    )
                } else {
                    format!("no address is allocated; deleting {} blocks", view.blocks)
                },
            }
        } else {
            ConditionReport {
                kind: "Terminating",
                status: false,
                reason: "NotDeleted",
                message: "the pool is not being deleted".into(),
            }
        };
        let (ready, reason, message) = match (&view.capacity, free) {
            (Err(why), _) => (false, "InvalidSpec", why.clone()),
            _ if view.deleting => (false, "Terminating", terminating.message.clone()),
            _ if view.shadowed_by.is_some() => (false, "Overlapping", overlapping.message.clone()),
            _ if view.disabled => (
                false,
                "Disabled",
                "spec.disabled is set: no new allocations".into(),
            ),
            (_, Some(0)) => (false, "Exhausted", exhausted.message.clone()),
            _ => (true, "Allocating", "the pool hands out addresses".into()),
        };
        PoolReport {
            capacity,
            allocated: view.allocated,
            free,
            blocks: view.blocks,
            conditions: vec![
                ConditionReport {
                    kind: "Ready",
                    status: ready,
                    reason,
                    message,
                },
                overlapping,
                exhausted,
                terminating,
            ],
        }
    }

    /// The flags of this report whose change is an Event.
    pub fn alarms(&self) -> Alarms {
        Alarms {
            exhausted: self.free == Some(0),
            nearly_full: self
                .capacity
                .is_some_and(|c| c > 0 && nearly_full(self.allocated, c)),
            overlapping: self.condition("Overlapping"),
        }
    }

    fn condition(&self, kind: &str) -> bool {
        self.conditions.iter().any(|c| c.kind == kind && c.status)
    }

    /// The Events for the alarms raised since `before` (what the last written status
    /// said): only on a transition, so a steady state emits nothing however often it is
    /// reconciled.
    pub fn events(&self, before: Alarms) -> Vec<PoolEvent> {
        let now = self.alarms();
        let capacity = self.capacity.unwrap_or(0);
        let mut events = Vec::new();
        if now.exhausted && !before.exhausted {
            events.push(PoolEvent {
                reason: "PoolExhausted",
                message: format!(
                    "all {capacity} addresses are allocated: new pods get no address from this pool"
                ),
            });
        } else if now.nearly_full && !before.nearly_full && !now.exhausted {
            events.push(PoolEvent {
                reason: "PoolNearlyFull",
                message: format!(
                    "{} of {capacity} addresses are allocated (at least 90%)",
                    self.allocated
                ),
            });
        }
        if now.overlapping && !before.overlapping {
            let message = self
                .conditions
                .iter()
                .find(|c| c.kind == "Overlapping")
                .map(|c| c.message.clone())
                .unwrap_or_default();
            events.push(PoolEvent {
                reason: "Overlapping",
                message,
            });
        }
        events
    }
}

/// True when `allocated` is at least 90% of `capacity`: when the free addresses are at
/// most a tenth of it (checked, so IPv6 sizes cannot overflow).
pub fn nearly_full(allocated: u128, capacity: u128) -> bool {
    let free = capacity - allocated.min(capacity);
    free.checked_mul(10).is_some_and(|f| f <= capacity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(capacity: u128, allocated: u128) -> PoolView {
        PoolView {
            capacity: Ok(capacity),
            shadowed_by: None,
            allocated,
            blocks: 1,
            disabled: false,
            deleting: false,
        }
    }

    fn status(report: &PoolReport, kind: &str) -> (bool, &'static str) {
        let c = report.conditions.iter().find(|c| c.kind == kind).unwrap();
        (c.status, c.reason)
    }

    #[test]
    fn a_pool_with_room_is_ready_and_counts_its_addresses() {
        let report = PoolReport::of(&view(254, 3));
        assert_eq!(
            (report.capacity, report.allocated, report.free),
            (Some(254), 3, Some(251))
        );
        assert_eq!(status(&report, "Ready"), (true, "Allocating"));
        assert_eq!(status(&report, "Exhausted"), (false, "AddressesFree"));
        assert_eq!(status(&report, "Overlapping"), (false, "NoOverlap"));
        assert_eq!(status(&report, "Terminating"), (false, "NotDeleted"));
    }

    #[test]
    fn ipv6_sizes_beyond_64_bits_are_exact() {
        let capacity = 1u128 << 80;
        let report = PoolReport::of(&view(capacity, 5));
        assert_eq!(report.free, Some(capacity - 5));
        assert!(!report.alarms().nearly_full);
        assert!(nearly_full(capacity - capacity / 10, capacity));
        assert!(!nearly_full(capacity - capacity / 10 - 1, capacity));
    }

    #[test]
    fn nearly_full_starts_at_ninety_percent() {
        assert!(!nearly_full(89, 100));
        assert!(nearly_full(90, 100));
        assert!(!nearly_full(228, 254));
        assert!(nearly_full(229, 254));
        assert!(nearly_full(u128::MAX, u128::MAX));
    }

    #[test]
    fn what_keeps_a_pool_from_allocating_is_its_ready_reason() {
        let mut shadowed = view(254, 0);
        shadowed.shadowed_by = Some("older".into());
        let report = PoolReport::of(&shadowed);
        assert_eq!(status(&report, "Ready"), (false, "Overlapping"));
        assert_eq!(status(&report, "Overlapping"), (true, "OlderPoolOverlaps"));
        assert!(report.conditions[1].message.contains("\"older\""));

        let mut invalid = view(0, 0);
        invalid.capacity = Err("spec.cidr: not a CIDR".into());
        let report = PoolReport::of(&invalid);
        assert_eq!((report.capacity, report.free), (None, None));
        assert_eq!(status(&report, "Ready"), (false, "InvalidSpec"));
        assert_eq!(report.conditions[0].message, "spec.cidr: not a CIDR");

        let report = PoolReport::of(&view(4, 4));
        assert_eq!(status(&report, "Ready"), (false, "Exhausted"));
        assert_eq!(
            status(&report, "Exhausted"),
            (true, "AllAddressesAllocated")
        );

        let mut disabled = view(4, 1);
        disabled.disabled = true;
        assert_eq!(
            status(&PoolReport::of(&disabled), "Ready"),
            (false, "Disabled")
        );
    }

    #[test]
    fn a_terminating_pool_says_how_many_allocations_remain() {
        let mut deleting = view(254, 3);
        deleting.deleting = true;
        let report = PoolReport::of(&deleting);
        assert_eq!(status(&report, "Terminating"), (true, "AllocationsRemain"));
        assert!(report.conditions[3].message.contains("3 allocated"));
        assert_eq!(status(&report, "Ready"), (false, "Terminating"));
        deleting.allocated = 0;
        assert_eq!(
            status(&PoolReport::of(&deleting), "Terminating"),
            (true, "ReleasingBlocks")
        );
    }

    #[test]
    fn events_come_on_transitions_only() {
        let calm = Alarms::default();
        let nearly = PoolReport::of(&view(100, 95));
        let events = nearly.events(calm);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, "PoolNearlyFull");
        assert!(nearly.events(nearly.alarms()).is_empty());

        let full = PoolReport::of(&view(100, 100));
        let events = full.events(nearly.alarms());
        assert_eq!(
            events.iter().map(|e| e.reason).collect::<Vec<_>>(),
            ["PoolExhausted"]
        );
        assert!(full.events(full.alarms()).is_empty());
        // Straight from calm to full: exhausted, not also nearly full.
        assert_eq!(full.events(calm).len(), 1);

        let mut shadowed = view(100, 0);
        shadowed.shadowed_by = Some("older".into());
        let report = PoolReport::of(&shadowed);
        assert_eq!(report.events(calm)[0].reason, "Overlapping");
        assert!(report.events(report.alarms()).is_empty());
    }
}
