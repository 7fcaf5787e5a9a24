//! Ownership controls (issue 24): warning about rows labelled `managed-by: gitops` that no
//! inventory owns, and adopting one into a target when Git has it.

use serde::Serialize;

use crate::diagnostic::{Code, Diagnostic};
use crate::manifest::Limits;
use crate::model::{ResourceId, SourceLocation};
use crate::services::Services;
use crate::source::incremental;
use crate::source::spec::source_spec;
use crate::store::{NewTarget, StoreError};
use crate::{Error, Result};

/// One `W104` warning per unowned managed row, telling how `target` could adopt it.
pub(super) async fn unowned_warnings(services: &Services, target: &str) -> Result<Vec<Diagnostic>> {
    let unowned = services.database().await?.unowned_managed().await?;
    let repository = SourceLocation::new("", 0, 0);
    Ok(unowned
        .into_iter()
        .map(|id| {
            Diagnostic::new(
                Code::W104,
                &repository,
                format!(
                    "`{id}` is labelled managed-by: gitops but no target owns it, so it is \
                     neither updated nor pruned: `ritmo gitops adopt {}/{} --target {target}` \
                     takes it in when Git has it; otherwise delete the row or drop the label",
                    id.kind.slug(),
                    id.name
                ),
            )
        })
        .collect())
}

/// What [`adopt`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AdoptOutcome {
    /// The row is now in the target's inventory; the next sync makes it match Git (an update
    /// when `matches_git` is false) and prunes it once Git drops it.
    Adopted {
        target: String,
        resource: String,
        commit: String,
        matches_git: bool,
    },
}

/// Takes the unowned row `id` into `target`'s inventory, when the target's branch head has it.
/// Refused (`Error::InvalidRequest`) when Git does not have it, the row does not exist, or a
/// target owns it already.
pub async fn adopt(services: &Services, target: &str, id: &ResourceId) -> Result<AdoptOutcome> {
    let settings = services
        .settings
        .target(target)
        .ok_or_else(|| StoreError::UnknownTarget(target.to_string()))?;
    let source = source_spec(&services.settings, settings, false).await?;
    let located = incremental::locate(&source, None).await?;
    let commit = located.revision().commit().unwrap_or_default().to_string();
    let snapshot = crate::source::read_source(&source, Limits::default()).await?;
    let checks = services.checks().await?;
    let checked = crate::source::check(snapshot, checks, &Limits::default()).await;
    let Some(desired) = checked.desired.iter().find(|resource| &resource.id == id) else {
        return Err(Error::InvalidRequest(format!(
            "`{id}` is not in branch `{}` of target `{target}`: only a resource Git has can be \
             adopted (add its file first, or delete the row)",
            settings.branch
        )));
    };
    let store = services.database().await?;
    store
        .ensure_target(&NewTarget {
            name: settings.name.clone(),
            repo_url: settings.repo_url.clone(),
            branch: settings.branch.clone(),
            path: settings.path.clone(),
        })
        .await?;
    let live = store.resources(Some(id.kind), Some(&id.name)).await?;
    let Some(row) = live.first() else {
        return Err(Error::InvalidRequest(format!(
            "`{id}` is not in the database: nothing to adopt (a sync creates it)"
        )));
    };
    if !store.adopt(target, id, &commit).await? {
        return Err(Error::InvalidRequest(format!(
            "`{id}` is owned by a target already: `ritmo gitops status` shows which"
        )));
    }
    tracing::info!(%target, resource = %id, %commit, "resource adopted");
    Ok(AdoptOutcome::Adopted {
        target: target.to_string(),
        resource: id.to_string(),
        commit,
        matches_git: row.spec_hash == desired.hash.as_str()
            && row.hash_version == crate::hash::HASH_VERSION,
    })
}
