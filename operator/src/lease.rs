//! Leader election with a `coordination.k8s.io/v1` Lease, so that of several replicas exactly
//! one runs the controllers.
//!
//! Every replica reads the Lease once per renew interval. The holder renews it (writes a new
//! `renewTime`); a replica that sees no holder, or a holder whose Lease did not change for
//! `leaseDurationSeconds`, takes it over. Every write carries the resourceVersion it read, so
//! of two replicas trying at once the API server lets exactly one win (the other gets 409).
//!
//! Expiry is judged by this replica's own clock: a Lease is expired when its resourceVersion
//! has not changed for the lease duration *since this replica first saw that version*, as
//! client-go does. The holder's `renewTime` is written for people to read but not trusted
//! for the decision, so clock skew between nodes cannot make two replicas lead.
//!
//! A leader that cannot renew for the renew deadline (two thirds of the lease duration)
//! stops leading by itself, before any other replica may take over.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use tokio::sync::watch;
use tracing::{info, instrument, warn};

use crate::{api_code, Result, FIELD_MANAGER};

/// How this replica takes part in the election.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Name of the Lease.
    pub name: String,
    /// Namespace of the Lease.
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long the Lease is valid without renewal.
    pub duration: Duration,
    /// How often to renew (or, when not leading, to check).
    pub renew_interval: Duration,
}

impl LeaseConfig {
    /// How long a leader keeps leading without a successful renewal: two thirds of the
    /// lease duration, so it stops before anyone else may take over.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }
}

/// The Lease as this replica last saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// `spec.holderIdentity` (`None` when released).
    pub holder: Option<String>,
    /// `metadata.resourceVersion`.
    pub resource_version: String,
    /// `spec.leaseDurationSeconds`.
    pub duration: Duration,
    /// `spec.leaseTransitions`.
    pub transitions: i32,
    /// When this replica first saw this resourceVersion.
    pub since: Instant,
}

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// No Lease exists: create it, holding it.
    Create,
    /// This replica holds it: renew.
    Renew,
    /// Nobody holds it, or the holder stopped renewing: take it over.
    TakeOver,
    /// Someone else holds it; it expires at `expires` unless renewed.
    Follow {
        /// The holder.
        holder: String,
        /// When it expires by this replica's clock.
        expires: Instant,
    },
}

/// Folds a freshly read Lease into what was seen before: the time of first sight is kept
/// while the resourceVersion stays the same.
pub fn observe(
    previous: Option<&Observed>,
    lease: &Lease,
    default_duration: Duration,
    now: Instant,
) -> Observed {
    let spec = lease.spec.clone().unwrap_or_default();
    let resource_version = lease.metadata.resource_version.clone().unwrap_or_default();
    let since = match previous {
        Some(p) if p.resource_version == resource_version => p.since,
        _ => now,
    };
    Observed {
        holder: spec.holder_identity.filter(|h| !h.is_empty()),
        resource_version,
        duration: spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0)
            .map_or(default_duration, Duration::from_secs),
        transitions: spec.lease_transitions.unwrap_or(0),
        since,
    }
}

/// Decides the next step from what was seen of the Lease (`None`: it does not exist).
pub fn next_step(observed: Option<&Observed>, identity: &str, now: Instant) -> Step {
    let Some(o) = observed else {
        return Step::Create;
    };
    match o.holder.as_deref() {
        Some(h) if h == identity => Step::Renew,
        None => Step::TakeOver,
        Some(h) => {
            let expires = o.since + o.duration;
            if now >= expires {
                Step::TakeOver
            } else {
                Step::Follow {
                    holder: h.to_owned(),
                    expires,
                }
            }
        }
    }
}

/// Whether a replica whose last successful renewal was at `last_renewed` still leads.
pub fn still_leading(last_renewed: Option<Instant>, now: Instant, deadline: Duration) -> bool {
    last_renewed.is_some_and(|t| now.saturating_duration_since(t) < deadline)
}

fn micro_now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

/// One replica's part in the election.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<Observed>,
    last_renewed: Option<Instant>,
}

impl Elector {
    /// An elector for the Lease `config.namespace/config.name`.
    pub fn new(client: kube::Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
            last_renewed: None,
        }
    }

    /// Whether this replica leads at `now`.
    pub fn is_leading(&self, now: Instant) -> bool {
        still_leading(self.last_renewed, now, self.config.renew_deadline())
    }

    /// One round: reads the Lease and creates, renews or takes it over when due. Returns
    /// whether this replica holds it now. A 409 means another replica won this round.
    #[instrument(skip(self), fields(lease = %self.config.name, identity = %self.config.identity))]
    pub async fn try_lead(&mut self) -> Result<bool> {
        let now = Instant::now();
        let current = self.api.get_opt(&self.config.name).await?;
        self.observed = current
            .as_ref()
            .map(|l| observe(self.observed.as_ref(), l, self.config.duration, now));
        let step = next_step(self.observed.as_ref(), &self.config.identity, now);
        let written = match (&step, current) {
            (Step::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.config.identity.clone()),
                        lease_duration_seconds: Some(seconds(self.config.duration)),
                        acquire_time: Some(micro_now()),
                        renew_time: Some(micro_now()),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&post_params(), &lease).await
            }
            (Step::Renew | Step::TakeOver, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if step == Step::TakeOver {
                    spec.holder_identity = Some(self.config.identity.clone());
                    spec.acquire_time = Some(micro_now());
                    spec.lease_transitions =
                        Some(self.observed.as_ref().map_or(0, |o| o.transitions) + 1);
                    info!(previous = ?self.observed.as_ref().and_then(|o| o.holder.clone()), "taking over the leader lease");
                }
                spec.lease_duration_seconds = Some(seconds(self.config.duration));
                spec.renew_time = Some(micro_now());
                lease.metadata.managed_fields = None;
                // `replace` sends the resourceVersion read above: a concurrent writer makes
                // this fail with 409 instead of being overwritten.
                self.api
                    .replace(&self.config.name, &post_params(), &lease)
                    .await
            }
            (Step::Renew | Step::TakeOver, None) | (Step::Follow { .. }, _) => {
                self.last_renewed = None;
                return Ok(false);
            }
        };
        match written {
            Ok(lease) => {
                if !self.is_leading(now) {
                    info!("acquired the leader lease");
                }
                self.observed = Some(observe(
                    self.observed.as_ref(),
                    &lease,
                    self.config.duration,
                    now,
                ));
                self.last_renewed = Some(now);
                Ok(true)
            }
            Err(e) if matches!(api_code(&e), Some(409)) => {
                self.last_renewed = None;
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the Lease up if this replica holds it, so another replica takes over at once
    /// instead of after the lease duration.
    pub async fn release(&mut self) -> Result<()> {
        if self.last_renewed.take().is_none() {
            return Ok(());
        }
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(micro_now());
        lease.metadata.managed_fields = None;
        match self
            .api
            .replace(&self.config.name, &post_params(), &lease)
            .await
        {
            Ok(_) => {
                info!("released the leader lease");
                Ok(())
            }
            Err(e) if matches!(api_code(&e), Some(409)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    }
}

/// Runs the election until `release` turns true, publishing on `leading` whether this
/// replica leads, and `true` on `api_ok` after each round that reached the API server. Then
/// gives the Lease up.
pub async fn run(
    mut elector: Elector,
    leading: watch::Sender<bool>,
    api_ok: watch::Sender<bool>,
    mut release: watch::Receiver<bool>,
) {
    loop {
        let reached = match elector.try_lead().await {
            Ok(_) => true,
            Err(error) => {
                warn!(%error, "leader election round failed");
                false
            }
        };
        api_ok.send_replace(reached);
        let now_leading = elector.is_leading(Instant::now());
        leading.send_if_modified(|l| {
            let changed = *l != now_leading;
            if changed && !now_leading {
                warn!("no longer leading: stopping the controllers");
            }
            *l = now_leading;
            changed
        });
        if *release.borrow() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(elector.config.renew_interval) => {}
            _ = release.changed() => {}
        }
        if *release.borrow() {
            break;
        }
    }
    leading.send_replace(false);
    if let Err(error) = elector.release().await {
        warn!(%error, "could not release the leader lease; another replica takes over when it expires");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(15);

    fn lease(holder: Option<&str>, rv: &str, secs: Option<i32>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(Into::into),
                lease_duration_seconds: secs,
                lease_transitions: Some(3),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn creates_a_missing_lease_and_renews_its_own() {
        let t0 = Instant::now();
        assert_eq!(next_step(None, "a", t0), Step::Create);
        let o = observe(None, &lease(Some("a"), "1", Some(15)), D, t0);
        assert_eq!(next_step(Some(&o), "a", t0), Step::Renew);
        assert_eq!(
            next_step(Some(&o), "a", t0 + Duration::from_secs(600)),
            Step::Renew,
            "a holder renews even if it was slow; the write decides"
        );
    }

    #[test]
    fn follows_a_live_holder_and_takes_over_an_expired_one() {
        let t0 = Instant::now();
        let o = observe(None, &lease(Some("b"), "7", Some(15)), D, t0);
        assert_eq!(
            next_step(Some(&o), "a", t0 + Duration::from_secs(14)),
            Step::Follow {
                holder: "b".into(),
                expires: t0 + D
            }
        );
        assert_eq!(
            next_step(Some(&o), "a", t0 + Duration::from_secs(15)),
            Step::TakeOver
        );
    }

    #[test]
    fn expiry_counts_from_when_a_version_was_first_seen() {
        let t0 = Instant::now();
        let l = lease(Some("b"), "7", Some(15));
        let first = observe(None, &l, D, t0);
        // Seen again unchanged: the clock keeps running from first sight...
        let again = observe(Some(&first), &l, D, t0 + Duration::from_secs(10));
        assert_eq!(again.since, t0);
        assert_eq!(
            next_step(Some(&again), "a", t0 + Duration::from_secs(16)),
            Step::TakeOver
        );
        // ...while a renewal (new resourceVersion) restarts it, whatever renewTime says.
        let renewed = observe(
            Some(&again),
            &lease(Some("b"), "8", Some(15)),
            D,
            t0 + Duration::from_secs(12),
        );
        assert_eq!(renewed.since, t0 + Duration::from_secs(12));
        assert!(matches!(
            next_step(Some(&renewed), "a", t0 + Duration::from_secs(16)),
            Step::Follow { .. }
        ));
    }

    #[test]
    fn released_leases_are_taken_at_once_and_durations_come_from_the_lease() {
        let t0 = Instant::now();
        let released = observe(None, &lease(None, "9", Some(1)), D, t0);
        assert_eq!(next_step(Some(&released), "a", t0), Step::TakeOver);
        let empty = observe(None, &lease(Some(""), "9", None), D, t0);
        assert_eq!(empty.holder, None, "an empty holder is no holder");
        assert_eq!(empty.duration, D, "missing duration: our default");
        let long = observe(None, &lease(Some("b"), "9", Some(60)), D, t0);
        assert_eq!(long.duration, Duration::from_secs(60));
        assert!(matches!(
            next_step(Some(&long), "a", t0 + Duration::from_secs(30)),
            Step::Follow { .. }
        ));
        assert_eq!(long.transitions, 3);
    }

    #[test]
    fn a_leader_that_cannot_renew_steps_down_before_others_may_take_over() {
        let cfg = LeaseConfig {
            name: "l".into(),
            namespace: "n".into(),
            identity: "a".into(),
            duration: D,
            renew_interval: Duration::from_secs(5),
        };
        let t0 = Instant::now();
        let deadline = cfg.renew_deadline();
        assert_eq!(deadline, Duration::from_secs(10));
        assert!(still_leading(
            Some(t0),
            t0 + Duration::from_secs(9),
            deadline
        ));
        assert!(!still_leading(
            Some(t0),
            t0 + Duration::from_secs(10),
            deadline
        ));
        assert!(!still_leading(None, t0, deadline));
        // Another replica that saw the last renewal at t0 (or later) waits the whole duration.
        assert!(deadline < cfg.duration);
    }
}
