//! One compare-and-swap retry loop, used by every ledger write.

use std::fmt::Debug;
use std::time::Duration;

use kube::Resource;
use kube::api::{Api, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How often and how patiently a compare-and-swap write is retried after a 409 Conflict.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    /// Upper bound of the random delay before the first retry; doubles each retry.
    pub base_delay: Duration,
    /// Largest delay before any one retry.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 16,
            base_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(200),
        }
    }
}

impl RetryPolicy {
    /// Full jitter: a uniformly random delay up to the capped exponential bound, so that
    /// writers that lost the same race do not collide again in lockstep.
    fn delay(&self, retry: u32) -> Duration {
        let bound = self
            .base_delay
            .saturating_mul(1u32 << retry.min(16))
            .min(self.max_delay);
        bound.mul_f64(fastrand::f64())
    }
}

/// What the caller decided after looking at the current object.
pub enum Decision<K, T> {
    /// Nothing to write: the answer follows from the object as it is (an idempotent
    /// repeat, a release of something not held).
    Keep(T),
    /// Replace the object with this new version and answer `T` once the write lands.
    Replace(K, T),
}

/// The answer of a successful [`update`], with what it took to get there.
#[derive(Debug)]
pub struct Written<K, T> {
    /// The caller's answer.
    pub value: T,
    /// The object as the API server holds it after the last attempt.
    pub object: K,
    /// Whether a write was made (false when the decision was [`Decision::Keep`]).
    pub wrote: bool,
    /// 409 Conflicts met on the way: other writers that won the race first.
    pub conflicts: u32,
}

/// Why an [`update`] did not land.
#[derive(Debug, thiserror::Error)]
pub enum CasError<E> {
    /// The object does not exist (any more).
    #[error("{kind} {name:?} not found")]
    NotFound { kind: String, name: String },
    /// Every attempt lost the race to another writer.
    #[error("{kind} {name:?} is contended: {attempts} writes in a row lost to concurrent writers")]
    Contended {
        kind: String,
        name: String,
        attempts: u32,
    },
    /// The copy to replace carries no resourceVersion: the replace would be a blind write.
    #[error(
        "{kind} {name:?}: the copy to replace carries no resourceVersion; refusing a blind write"
    )]
    Unversioned { kind: String, name: String },
    /// The caller refused to go on after looking at the object.
    #[error(transparent)]
    Refused(E),
    /// The API server answered with an error other than a conflict, or could not be reached.
    #[error("API request for {kind} {name:?} failed: {source}")]
    Api {
        kind: String,
        name: String,
        source: kube::Error,
    },
}

/// True when an API error status means the server refused the request for good: a 4xx
/// the same request gets again (400 BadRequest, 401, 403 Forbidden, 422 Invalid, ...). A
/// 404, 408 Timeout, 409 Conflict, 410 Expired (a stale list continuation) or 429
/// TooManyRequests may change on a later try, and so may a 5xx.
pub fn refused_for_good(code: u16) -> bool {
    (400..500).contains(&code) && !matches!(code, 404 | 408 | 409 | 410 | 429)
}

/// Reads `name`, lets `decide` choose the new version, and replaces the object carrying the
/// resourceVersion that was read. On 409 Conflict (another writer changed the object in
/// between) it re-reads and decides again, after a jittered backoff, up to the policy's
/// bound. `first` may hold a recent copy (from a watch cache) to save the first read; a
/// stale copy only costs a conflict, and a copy without resourceVersion is refused
/// ([`CasError::Unversioned`]) rather than written blindly.
pub async fn update<K, T, E>(
    api: &Api<K>,
    name: &str,
    policy: &RetryPolicy,
    first: Option<K>,
    mut decide: impl FnMut(&K) -> Result<Decision<K, T>, E>,
) -> Result<Written<K, T>, CasError<E>>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let kind = K::kind(&()).to_string();
    let api_error = |source| CasError::Api {
        kind: kind.clone(),
        name: name.to_string(),
        source,
    };
    let mut current = first;
    let mut conflicts = 0;
    for attempt in 0..policy.max_attempts {
        let object = match current.take() {
            Some(object) => object,
            None => match api.get_opt(name).await.map_err(api_error)? {
                Some(object) => object,
                None => {
                    return Err(CasError::NotFound {
                        kind,
                        name: name.to_string(),
                    });
                }
            },
        };
        let read_version = object.meta().resource_version.clone();
        match decide(&object).map_err(CasError::Refused)? {
            Decision::Keep(value) => {
                return Ok(Written {
                    value,
                    object,
                    wrote: false,
                    conflicts,
                });
            }
            Decision::Replace(mut new, value) => {
                // The precondition of the swap: never a blind write. Without a
                // resourceVersion the API server would replace unconditionally.
                let Some(version) = read_version else {
                    return Err(CasError::Unversioned {
                        kind,
                        name: name.to_string(),
                    });
                };
                new.meta_mut().resource_version = Some(version);
                match api.replace(name, &PostParams::default(), &new).await {
                    Ok(object) => {
                        return Ok(Written {
                            value,
                            object,
                            wrote: true,
                            conflicts,
                        });
                    }
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        conflicts += 1;
                        tracing::debug!(kind, name, attempt, "conflict, re-reading");
                        tokio::time::sleep(policy.delay(attempt)).await;
                    }
                    Err(kube::Error::Api(status)) if status.code == 404 => {
                        return Err(CasError::NotFound {
                            kind,
                            name: name.to_string(),
                        });
                    }
                    Err(source) => return Err(api_error(source)),
                }
            }
        }
    }
    Err(CasError::Contended {
        kind,
        name: name.to_string(),
        attempts: policy.max_attempts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{IPBlock, IPBlockSpec};

    #[test]
    fn retry_delays_stay_within_the_capped_exponential_bound() {
        let policy = RetryPolicy {
            max_attempts: 8,
            base_delay: Duration::from_millis(4),
            max_delay: Duration::from_millis(50),
        };
        for retry in 0..40 {
            let bound = Duration::from_millis(4)
                .saturating_mul(1 << retry.min(16))
                .min(Duration::from_millis(50));
            for _ in 0..50 {
                assert!(
                    policy.delay(retry) <= bound,
                    "retry {retry} exceeded {bound:?}"
                );
            }
        }
    }

    /// A copy without resourceVersion (offered by a cache, or read) would make the
    /// replace unconditional: it is refused before any request is sent.
    #[tokio::test]
    async fn a_copy_without_resource_version_is_never_written() {
        // Nothing listens there: any request would fail as CasError::Api.
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let api: Api<IPBlock> = Api::all(kube::Client::try_from(config).unwrap());
        let mut copy = IPBlock::new(
            "b",
            IPBlockSpec {
                pool: "p".into(),
                cidr: "10.0.0.0/28".parse().unwrap(),
                node: "n".into(),
                last_allocated: None,
                allocations: Vec::new(),
                released: Vec::new(),
            },
        );
        copy.metadata.resource_version = None;
        let result = update(&api, "b", &RetryPolicy::default(), Some(copy), |o| {
            Ok::<_, std::convert::Infallible>(Decision::Replace(o.clone(), ()))
        })
        .await;
        match result {
            Err(CasError::Unversioned { kind, name }) => {
                assert_eq!((kind.as_str(), name.as_str()), ("IPBlock", "b"));
            }
            other => panic!("expected a refusal to write blindly, got {other:?}"),
        }
    }

    #[test]
    fn retry_delays_are_jittered() {
        let policy = RetryPolicy::default();
        let delays: std::collections::HashSet<_> = (0..20).map(|_| policy.delay(5)).collect();
        assert!(delays.len() > 1, "every writer would retry in lockstep");
    }
}
