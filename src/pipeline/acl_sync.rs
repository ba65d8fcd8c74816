//! ACL sync while running (`acls.sync`): a task per forward flow that
//! copies the ACLs of the flow's topics and groups ([`crate::acls`]) at
//! start and every `topics.refresh_interval_ms`, beside the engine, so a
//! slow or refused ACL request never holds the data back.
//!
//! A cluster without an authorizer (SECURITY_DISABLED) is said once and
//! ends the task; other failures are logged and tried again at the next
//! interval. A run with `until_caught_up` syncs once, and ends only once
//! that sync has.

use std::sync::Arc;

use tokio::task::JoinHandle;

use super::lifecycle::selected_topics;
use crate::acls::{sync_acls, AclChanges};
use crate::cluster::{AclError, Cluster};
use crate::config::{Direction, Flow};

/// Starts the flow's ACL sync, when it is on; the caller aborts it when
/// the run ends.
pub(super) fn spawn(
    flow: &Flow,
    source: &Arc<Cluster>,
    target: &Arc<Cluster>,
    once: bool,
) -> Option<JoinHandle<()>> {
    // Going back, the ACLs are the origin's own: nothing to copy.
    if !flow.acls.sync || flow.direction == Direction::Back {
        return None;
    }
    let (flow, source, target) = (flow.clone(), source.clone(), target.clone());
    Some(tokio::spawn(async move {
        loop {
            match sync_once(&flow, &source, &target).await {
                Ok(changes) if changes.is_empty() => {}
                Ok(changes) => tracing::info!(
                    flow = %flow.name,
                    created = changes.create.len(),
                    deleted = changes.delete.len(),
                    "ACLs synced onto the target"
                ),
                Err(e @ AclError::SecurityDisabled { .. }) => {
                    tracing::warn!(flow = %flow.name, "{e}; copying data goes on");
                    return;
                }
                Err(e) => tracing::warn!(
                    flow = %flow.name,
                    error = %e,
                    "ACL sync failed; trying again at the next topic refresh"
                ),
            }
            if once {
                return;
            }
            tokio::time::sleep(flow.topic_refresh_interval).await;
        }
    }))
}

/// One sync over the topics the source has now.
async fn sync_once(
    flow: &Flow,
    source: &Arc<Cluster>,
    target: &Cluster,
) -> Result<AclChanges, AclError> {
    let metadata = source.metadata().await?;
    let topics: Vec<String> = selected_topics(flow, &metadata)
        .map(|(name, _)| name.clone())
        .collect();
    sync_acls(flow, &topics, source, target).await
}
