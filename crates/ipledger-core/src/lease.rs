//! Leader election over a Lease, decided from what a candidate has observed.
//!
//! As client-go's leaderelection does, expiry is judged on the candidate's own clock: a
//! record has expired when it has not changed for its whole duration since this candidate
//! first saw it as it is. Another machine's `renewTime` is never compared with the local
//! time, so clock skew between nodes cannot make two leaders.

use std::time::Duration;

/// What a Lease says, as far as the election is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The holder's identity; `None` (or empty) once the holder released it.
    pub holder: Option<String>,
    /// How long the holder's last renewal counts.
    pub duration: Duration,
    /// How often the Lease changed hands.
    pub transitions: i32,
}

/// What a candidate does next with the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseStep {
    /// No Lease exists: create it, held by this candidate.
    Create,
    /// This candidate holds the Lease: renew it.
    Renew,
    /// The Lease was released, or its holder let it expire: take it over, counting one
    /// more transition.
    TakeOver {
        /// The transitions count to write.
        transitions: i32,
    },
    /// Another candidate holds a live Lease: look again later.
    Follow {
        /// Who leads.
        holder: String,
    },
}

/// The next step of candidate `me`, given the Lease (`None` when none exists) and how long
/// this candidate has seen it unchanged.
pub fn lease_step(me: &str, lease: Option<&LeaseRecord>, unchanged_for: Duration) -> LeaseStep {
    let Some(lease) = lease else {
        return LeaseStep::Create;
    };
    let take_over = LeaseStep::TakeOver {
        transitions: lease.transitions.saturating_add(1),
    };
    match lease.holder.as_deref() {
        None | Some("") => take_over,
        Some(holder) if holder == me => LeaseStep::Renew,
        Some(_) if unchanged_for >= lease.duration => take_over,
        Some(holder) => LeaseStep::Follow {
            holder: holder.to_string(),
        },
    }
}

/// Why election timings cannot work together.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    /// A leader must give up before anyone may consider its Lease expired.
    #[error(
        "the lease duration ({duration:?}) must be longer than the renew deadline ({deadline:?})"
    )]
    DeadlineNotShorter {
        /// The lease duration.
        duration: Duration,
        /// The renew deadline.
        deadline: Duration,
    },
    /// A leader must be able to retry a failed renewal before its deadline.
    #[error(
        "the renew deadline ({deadline:?}) must be longer than 1.2 times the retry period ({retry:?})"
    )]
    RetryNotShorter {
        /// The renew deadline.
        deadline: Duration,
        /// The retry period.
        retry: Duration,
    },
    /// The Lease's `leaseDurationSeconds` counts whole seconds, at least one.
    #[error("the lease duration ({0:?}) must be a whole number of seconds, at least 1s")]
    DurationNotWholeSeconds(Duration),
}

/// Checks that a leader that stops renewing stops acting before another candidate may take
/// over: renew deadline < lease duration, and room for a retry before the deadline (the
/// same rules client-go applies).
pub fn check_timings(
    duration: Duration,
    deadline: Duration,
    retry: Duration,
) -> Result<(), TimingError> {
    if duration.subsec_nanos() != 0 || duration.as_secs() == 0 {
        return Err(TimingError::DurationNotWholeSeconds(duration));
    }
    if deadline >= duration {
        return Err(TimingError::DeadlineNotShorter { duration, deadline });
    }
    if deadline <= retry.mul_f64(1.2) {
        return Err(TimingError::RetryNotShorter { deadline, retry });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: Option<&str>) -> LeaseRecord {
        LeaseRecord {
            holder: holder.map(str::to_string),
            duration: Duration::from_secs(15),
            transitions: 3,
        }
    }

    #[test]
    fn a_missing_lease_is_created() {
        assert_eq!(lease_step("a", None, Duration::ZERO), LeaseStep::Create);
    }

    #[test]
    fn the_holder_renews_however_long_it_was_unchanged() {
        let lease = held_by(Some("a"));
        for unchanged in [0, 14, 15, 600] {
            assert_eq!(
                lease_step("a", Some(&lease), Duration::from_secs(unchanged)),
                LeaseStep::Renew
            );
        }
    }

    #[test]
    fn another_holder_is_followed_until_its_lease_is_unchanged_for_its_duration() {
        let lease = held_by(Some("b"));
        assert_eq!(
            lease_step("a", Some(&lease), Duration::from_millis(14_999)),
            LeaseStep::Follow { holder: "b".into() }
        );
        assert_eq!(
            lease_step("a", Some(&lease), Duration::from_secs(15)),
            LeaseStep::TakeOver { transitions: 4 }
        );
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        for holder in [None, Some("")] {
            assert_eq!(
                lease_step("a", Some(&held_by(holder)), Duration::ZERO),
                LeaseStep::TakeOver { transitions: 4 }
            );
        }
    }

    #[test]
    fn timings_must_let_a_leader_stop_before_its_lease_expires() {
        let s = Duration::from_secs;
        assert_eq!(check_timings(s(15), s(10), s(2)), Ok(()));
        assert!(matches!(
            check_timings(s(10), s(10), s(2)),
            Err(TimingError::DeadlineNotShorter { .. })
        ));
        assert!(matches!(
            check_timings(s(15), s(10), s(9)),
            Err(TimingError::RetryNotShorter { .. })
        ));
        assert!(matches!(
            check_timings(
                Duration::from_millis(1500),
                s(1),
                Duration::from_millis(100)
            ),
            Err(TimingError::DurationNotWholeSeconds(_))
        ));
    }
}
