//! Garbage collection of BehaviorObservations.
//!
//! An observation is only a channel: the profile reconciler merges it into the profile as
//! soon as it changes, so deleting one later loses nothing the profile has not already got.
//! Two kinds are deleted, every `--observation-gc-interval`:
//!
//! - observations of a node that no longer exists, once not updated for [`NODE_GONE_GRACE`]
//!   (time for a node that re-registers to come back, and for the last merge);
//! - observations not updated for `--observation-retention` (the workload stopped running
//!   there, or was never profiled: an agent that still runs it rewrites its observation
//!   whenever something new is seen, and at least every few minutes of activity).

use std::collections::HashSet;
use std::time::Duration;

use herdwatch_api::convert::from_time;
use herdwatch_api::BehaviorObservation;
use herdwatch_model::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, ResourceExt};
use tokio::sync::watch;
use tracing::{info, instrument, warn};

use crate::context::Context;
use crate::{api_code, Result};

/// How long an observation of a vanished node is kept after its last update.
pub const NODE_GONE_GRACE: Duration = Duration::from_secs(3600);
/// Observations listed per page.
const PAGE: u32 = 200;

/// Why an observation is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// Its node no longer exists.
    NodeGone,
    /// Not updated for the retention.
    Stale,
}

/// Whether an observation last updated at `updated` is to be deleted.
pub fn expiry(
    node_exists: bool,
    updated: Timestamp,
    now: Timestamp,
    retention: Duration,
) -> Option<Expiry> {
    let age = now.since(updated);
    if age >= retention {
        Some(Expiry::Stale)
    } else if !node_exists && age >= NODE_GONE_GRACE {
        Some(Expiry::NodeGone)
    } else {
        None
    }
}

/// One collection pass; returns how many observations were deleted.
#[instrument(skip(ctx))]
pub async fn collect(ctx: &Context) -> Result<usize> {
    let now = ctx.now();
    let nodes: HashSet<String> = Api::<Node>::all(ctx.client.clone())
        .list_metadata(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|n| n.name_any())
        .collect();
    let api: Api<BehaviorObservation> = Api::all(ctx.client.clone());
    let mut deleted = 0;
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(PAGE);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await?;
        for o in &page.items {
            let updated = from_time(&o.spec.updated_at);
            let Some(why) = expiry(
                nodes.contains(&o.spec.node),
                updated,
                now,
                ctx.settings.observation_retention,
            ) else {
                continue;
            };
            let ns = o.namespace().unwrap_or_default();
            match Api::<BehaviorObservation>::namespaced(ctx.client.clone(), &ns)
                .delete(&o.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {
                    deleted += 1;
                    info!(observation = %o.name_any(), namespace = %ns, node = %o.spec.node, reason = ?why, "deleted an observation");
                }
                Err(e) if api_code(&e) == Some(404) => {}
                Err(e) => return Err(e.into()),
            }
        }
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(deleted);
        }
    }
}

/// Collects every `interval` until `stop` turns true.
pub async fn run(
    ctx: std::sync::Arc<Context>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(error) = collect(&ctx).await {
            warn!(%error, "observation garbage collection failed; trying again next interval");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEEK: Duration = Duration::from_secs(7 * 86_400);

    #[test]
    fn stale_or_orphaned_observations_expire() {
        let now = Timestamp(10 * 86_400);
        let ago = |s: i64| Timestamp(now.0 - s);
        assert_eq!(expiry(true, ago(60), now, WEEK), None);
        assert_eq!(
            expiry(true, ago(7 * 86_400), now, WEEK),
            Some(Expiry::Stale)
        );
        assert_eq!(
            expiry(false, ago(60), now, WEEK),
            None,
            "a node may be re-registering"
        );
        assert_eq!(expiry(false, ago(3600), now, WEEK), Some(Expiry::NodeGone));
        assert_eq!(
            expiry(true, Timestamp(now.0 + 100), now, WEEK),
            None,
            "a clock ahead of ours is not old"
        );
    }
}
