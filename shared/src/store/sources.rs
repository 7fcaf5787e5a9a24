//! What a plan asks the store: where the last applied commit stands, the live state of the
//! whole inventory (a full scan) or of the ids a change touches (an incremental plan), stored
//! source files, which managed rows mention given names, and the bookkeeping write that keeps
//! source paths current.
//!
//! Deciding whether an incremental plan is safe, and building it, is `crate::source::incremental`'s.

use std::collections::{BTreeMap, HashMap};

use tokio_postgres::types::ToSql;

use super::{Store, StoreError, get, id_from_row, parse};
use crate::hash::{HASH_VERSION, SpecHash};
use crate::model::{InventoryEntry, Kind, LiveResource, LiveState, ResourceId};

/// Where a target's last apply left it, as far as an incremental plan cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedBase {
    pub generation: i64,
    pub last_applied_commit: Option<String>,
    /// The target's repository, branch or path changed after the last apply: the stored
    /// source paths may be relative to another root. (A pin or a suspension changes nothing
    /// an incremental plan relies on.)
    pub settings_changed: bool,
    /// Unresolved drift events of the target.
    pub drift_recorded: bool,
    /// The last applied plan kept resources that left Git (prune was off, W100): the inventory
    /// holds ids the last applied commit does not (see [`Store::kept_stale`]).
    pub kept_stale: bool,
    /// The hash version of one managed row (all of a target's rows share it: every plan
    /// rewrites every row hashed with another version).
    pub sample_hash_version: Option<i16>,
    /// How many resources the target manages.
    pub inventory_size: usize,
}

/// Live state for planning one target, restricted to the rows a plan can look at (the
/// target's inventory and the ids asked for), and the stored file of the managed rows asked
/// about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanningState {
    pub live: LiveState,
    /// Stored `source_path` of the managed rows asked about (`None` when a row has none).
    pub sources: BTreeMap<ResourceId, Option<String>>,
}

impl PlanningState {
    /// Managed ids whose stored source path is `path`.
    pub fn ids_from(&self, path: &str) -> impl Iterator<Item = &ResourceId> {
        self.sources
            .iter()
            .filter(move |(_, source)| source.as_deref() == Some(path))
            .map(|(id, _)| id)
    }
}

impl Store {
    /// The target's generation and last applied commit, whether its settings changed since
    /// that apply, and whether drift is recorded. `None` for an unknown target.
    pub async fn applied_base(&self, target: &str) -> Result<Option<AppliedBase>, StoreError> {
        let row = self
            .db()
            .query_opt(
                "SELECT t.generation, t.last_applied_commit,
                        s.finished_at IS NULL OR t.source_changed_at > s.finished_at,
                        EXISTS (SELECT 1 FROM drift_events d
                                WHERE d.target = t.name AND d.resolved_sync_id IS NULL),
                        EXISTS (SELECT 1 FROM jsonb_array_elements(s.diagnostics) AS g
                                WHERE g ->> 'code' = 'W100'),
                        (SELECT r.hash_version FROM inventory i
                         JOIN resources r ON r.kind = i.kind AND r.name = i.name
                         WHERE i.target = t.name LIMIT 1),
                        t.inventory_size
                 FROM targets t LEFT JOIN sync_runs s ON s.id = t.last_sync_id
                 WHERE t.name = $1",
                &[&target],
            )
            .await
            .map_err(StoreError::query("read a target's applied base"))?;
        row.map(|row| {
            Ok(AppliedBase {
                generation: get(&row, 0)?,
                last_applied_commit: get(&row, 1)?,
                settings_changed: get(&row, 2)?,
                drift_recorded: get(&row, 3)?,
                kept_stale: get(&row, 4)?,
                sample_hash_version: get(&row, 5)?,
                inventory_size: usize::try_from(get::<i64>(&row, 6)?).unwrap_or(0),
            })
        })
        .transpose()
    }

    /// The target's inventory joined with its resource rows, plus the resource rows of
    /// `extra` ids (any owner), in one round trip: enough for `plan::plan` of any desired set
    /// whose ids are in the inventory or in `extra`. `sources` is left empty (see
    /// [`Store::source_paths`]) and inventory entries carry no commit (planning does not use
    /// it), so that 10,000 rows stay cheap to send: a row whose hash equals its inventory hash
    /// is sent without it.
    ///
    /// As in [`Store::live_state`], a row hashed with another canonical form than this build's
    /// reports a hash that matches nothing.
    pub async fn planning_state(
        &self,
        target: &str,
        extra: &[&ResourceId],
    ) -> Result<PlanningState, StoreError> {
        let params: [&(dyn ToSql + Sync); 2] = [&target, &HASH_VERSION];
        let (inventory_rows, extra_rows) = futures_util::try_join!(
            self.db().query(
                "SELECT i.kind, i.name, i.spec_hash,
                        CASE WHEN r.kind IS NULL THEN NULL
                             WHEN r.spec_hash = i.spec_hash AND r.hash_version = $2 THEN ''
                             ELSE r.spec_hash END,
                        r.hash_version, r.drifted_at IS NOT NULL
                 FROM inventory i LEFT JOIN resources r ON r.kind = i.kind AND r.name = i.name
                 WHERE i.target = $1",
                &params,
            ),
            self.resource_rows(extra),
        )
        .map_err(StoreError::query("read the planning state"))?;

        let mut state = PlanningState::default();
        for row in &inventory_rows {
            let id = id_from_row(row, "inventory")?;
            let hash = SpecHash::from_hex(get::<String>(row, 2)?);
            let row_hash: Option<String> = get(row, 3)?;
            if let Some(row_hash) = row_hash {
                let live_hash = if row_hash.is_empty() {
                    hash.clone()
                } else {
                    versioned(row_hash, get(row, 4)?)
                };
                state.live.resources.insert(
                    id.clone(),
                    LiveResource {
                        id: id.clone(),
                        hash: live_hash,
                        drifted: get(row, 5)?,
                    },
                );
            }
            state
                .live
                .inventory
                .insert(id.clone(), inventory_entry(id, hash));
        }
        add_resource_rows(&mut state.live, &extra_rows)?;
        Ok(state)
    }

    /// What an incremental plan needs of the live state, without reading the rest of the
    /// inventory: the inventory entries among `ids` and the resource rows of `extra` ids (any
    /// owner). The size of the whole inventory comes with the [`AppliedBase`].
    ///
    /// The entries are trusted: each managed row among `ids` is reported as its entry says
    /// (same hash, not drifted), unless it is also in `extra`. That holds when no drift is
    /// recorded (the drift trigger sees every write outside a sync) and the hash version is
    /// this build's, which the caller checks first.
    pub async fn planning_slice(
        &self,
        target: &str,
        ids: &[&ResourceId],
        extra: &[&ResourceId],
    ) -> Result<PlanningState, StoreError> {
        let kinds: Vec<&str> = ids.iter().map(|id| id.kind.as_str()).collect();
        let names: Vec<&str> = ids.iter().map(|id| id.name.as_str()).collect();
        let inventory_params: [&(dyn ToSql + Sync); 3] = [&target, &kinds, &names];
        const READ: &str = "read the planning state";
        let (inventory_rows, extra_rows) = futures_util::try_join!(
            async {
                self.db()
                    .query(
                        "SELECT i.kind, i.name, i.spec_hash
                         FROM unnest($2::text[], $3::text[]) AS x(kind, name)
                         JOIN inventory i
                           ON i.kind = x.kind AND i.name = x.name AND i.target = $1",
                        &inventory_params,
                    )
                    .await
                    .map_err(StoreError::query(READ))
            },
            async {
                self.resource_rows(extra)
                    .await
                    .map_err(StoreError::query(READ))
            },
        )?;

        let mut state = PlanningState::default();
        for row in &inventory_rows {
            let id = id_from_row(row, "inventory")?;
            let hash = SpecHash::from_hex(get::<String>(row, 2)?);
            state.live.resources.insert(
                id.clone(),
                LiveResource {
                    id: id.clone(),
                    hash: hash.clone(),
                    drifted: false,
                },
            );
            state
                .live
                .inventory
                .insert(id.clone(), inventory_entry(id, hash));
        }
        add_resource_rows(&mut state.live, &extra_rows)?;
        Ok(state)
    }

    /// The resource rows of `ids`, whoever owns them.
    async fn resource_rows(
        &self,
        ids: &[&ResourceId],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let kinds: Vec<&str> = ids.iter().map(|id| id.kind.as_str()).collect();
        let names: Vec<&str> = ids.iter().map(|id| id.name.as_str()).collect();
        self.db()
            .query(
                "SELECT r.kind, r.name, r.spec_hash, r.hash_version, r.drifted_at IS NOT NULL
                 FROM resources r
                 JOIN unnest($1::text[], $2::text[]) AS x(kind, name)
                   ON r.kind = x.kind AND r.name = x.name",
                &[&kinds, &names],
            )
            .await
    }

    /// The live rows of `ids` as diff documents (`{"labels": …, "spec": …}`, see
    /// `crate::diff::document`), for the field diffs of a plan's updates. Ids without a row
    /// are left out.
    pub async fn live_documents(
        &self,
        ids: &[&ResourceId],
    ) -> Result<HashMap<ResourceId, serde_json::Value>, StoreError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let kinds: Vec<&str> = ids.iter().map(|id| id.kind.as_str()).collect();
        let names: Vec<&str> = ids.iter().map(|id| id.name.as_str()).collect();
        let rows = self
            .db()
            .query(
                "SELECT r.kind, r.name, jsonb_build_object('labels', r.labels, 'spec', r.spec)
                 FROM resources r
                 JOIN unnest($1::text[], $2::text[]) AS x(kind, name)
                   ON r.kind = x.kind AND r.name = x.name",
                &[&kinds, &names],
            )
            .await
            .map_err(StoreError::query("read live resources to diff"))?;
        rows.iter()
            .map(|row| Ok((id_from_row(row, "resources")?, get(row, 2)?)))
            .collect()
    }

    /// Ids in the target's inventory.
    pub async fn inventory_ids(&self, target: &str) -> Result<Vec<ResourceId>, StoreError> {
        let rows = self
            .db()
            .query(
                "SELECT kind, name FROM inventory WHERE target = $1",
                &[&target],
            )
            .await
            .map_err(StoreError::query("read the inventory"))?;
        rows.iter()
            .map(|row| id_from_row(row, "inventory"))
            .collect()
    }

    /// Stored source paths of the target's managed rows that are among `ids` or stored at one
    /// of `paths`.
    pub async fn source_paths(
        &self,
        target: &str,
        ids: &[&ResourceId],
        paths: &[&str],
    ) -> Result<BTreeMap<ResourceId, Option<String>>, StoreError> {
        if ids.is_empty() && paths.is_empty() {
            return Ok(BTreeMap::new());
        }
        let kinds: Vec<&str> = ids.iter().map(|id| id.kind.as_str()).collect();
        let names: Vec<&str> = ids.iter().map(|id| id.name.as_str()).collect();
        // Two statements rather than one with an OR, which would scan every row: ids are
        // primary-key lookups; paths (rarely asked, never indexed) scan.
        let by_id = "SELECT r.kind, r.name, r.source_path
             FROM unnest($2::text[], $3::text[]) AS x(kind, name)
             JOIN resources r ON r.kind = x.kind AND r.name = x.name
             JOIN inventory i ON i.kind = r.kind AND i.name = r.name AND i.target = $1";
        let by_path = "SELECT r.kind, r.name, r.source_path
             FROM resources r
             JOIN inventory i ON i.kind = r.kind AND i.name = r.name AND i.target = $1
             WHERE r.source_path = ANY($2)";
        let mut found = BTreeMap::new();
        if !ids.is_empty() {
            let rows = self
                .db()
                .query(by_id, &[&target, &kinds, &names])
                .await
                .map_err(StoreError::query("read stored source paths"))?;
            for row in &rows {
                found.insert(id_from_row(row, "resources")?, get(row, 2)?);
            }
        }
        if !paths.is_empty() {
            let rows = self
                .db()
                .query(by_path, &[&target, &paths])
                .await
                .map_err(StoreError::query("read stored source paths"))?;
            for row in &rows {
                found.insert(id_from_row(row, "resources")?, get(row, 2)?);
            }
        }
        Ok(found)
    }

    /// How many resources of each of `kinds` the target's inventory holds (kinds it holds none
    /// of are absent): what `plan::hold_unexplained_emptying` needs of the inventory an
    /// incremental plan does not read.
    pub async fn inventory_count_by_kind(
        &self,
        target: &str,
        kinds: &[Kind],
    ) -> Result<BTreeMap<Kind, usize>, StoreError> {
        let kinds: Vec<&str> = kinds.iter().map(|kind| kind.as_str()).collect();
        let rows = self
            .db()
            .query(
                "SELECT kind, count(*) FROM inventory
                 WHERE target = $1 AND kind = ANY($2) GROUP BY kind",
                &[&target, &kinds],
            )
            .await
            .map_err(StoreError::query("count the inventory by kind"))?;
        rows.iter()
            .map(|row| {
                let count = usize::try_from(get::<i64>(row, 1)?).unwrap_or(0);
                Ok((parse::<Kind>(row, 0, "inventory")?, count))
            })
            .collect()
    }

    /// Ids of the target's inventory whose stored spec holds any of `names` as a string value
    /// (a superset of the resources that refer to them: every reference is a string value),
    /// with their source path.
    ///
    /// Each spec's strings are listed once and joined with the names by hash, so the cost
    /// follows the inventory plus the names; a text search of each spec for each name took
    /// 82 s for 980 names in a 10,000-resource inventory.
    pub async fn mentioning(
        &self,
        target: &str,
        names: &[&str],
    ) -> Result<Vec<(ResourceId, Option<String>)>, StoreError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self
            .db()
            .query(
                "SELECT DISTINCT r.kind, r.name, r.source_path
                 FROM inventory i JOIN resources r ON r.kind = i.kind AND r.name = i.name
                 CROSS JOIN LATERAL jsonb_path_query(r.spec, 'strict $.**') AS v(value)
                 JOIN unnest($2::text[]) AS q(name) ON q.name = v.value #>> '{}'
                 WHERE i.target = $1 AND jsonb_typeof(v.value) = 'string'",
                &[&target, &names],
            )
            .await
            .map_err(StoreError::query("find resources mentioning removed names"))?;
        rows.iter()
            .map(|row| Ok((id_from_row(row, "resources")?, get(row, 2)?)))
            .collect()
    }

    /// Ids the target's last applied plan kept although Git no longer has them (prune off):
    /// they are in the inventory but not in the last applied commit.
    pub async fn kept_stale(&self, target: &str) -> Result<Vec<ResourceId>, StoreError> {
        let rows = self
            .db()
            .query(
                "SELECT a -> 'id' ->> 'kind', a -> 'id' ->> 'name'
                 FROM targets t JOIN sync_runs s ON s.id = t.last_sync_id,
                      json_array_elements(s.plan::json -> 'actions') AS a
                 WHERE t.name = $1 AND a ->> 'action' = 'prune_skipped'",
                &[&target],
            )
            .await
            .map_err(StoreError::query("read the ids a plan kept"))?;
        rows.iter()
            .map(|row| {
                Ok(ResourceId::new(
                    parse::<Kind>(row, 0, "sync_runs")?,
                    get::<String>(row, 1)?,
                ))
            })
            .collect()
    }

    /// Sets the stored source path of managed rows of `target` that moved to another file
    /// without changing (an unchanged resource is not rewritten by an apply). Bookkeeping only:
    /// not drift. Returns how many rows changed.
    pub async fn record_source_paths(
        &self,
        target: &str,
        moved: &[(&ResourceId, &str)],
    ) -> Result<u64, StoreError> {
        if moved.is_empty() {
            return Ok(0);
        }
        let kinds: Vec<&str> = moved.iter().map(|(id, _)| id.kind.as_str()).collect();
        let names: Vec<&str> = moved.iter().map(|(id, _)| id.name.as_str()).collect();
        let paths: Vec<&str> = moved.iter().map(|(_, path)| *path).collect();
        self.db()
            .execute(
                "UPDATE resources r SET source_path = m.path
                 FROM unnest($2::text[], $3::text[], $4::text[]) AS m(kind, name, path), inventory i
                 WHERE r.kind = m.kind AND r.name = m.name
                   AND i.target = $1 AND i.kind = r.kind AND i.name = r.name
                   AND r.source_path IS DISTINCT FROM m.path",
                &[&target, &kinds, &names, &paths],
            )
            .await
            .map_err(StoreError::query("record moved source paths"))
    }
}

fn inventory_entry(id: ResourceId, hash: SpecHash) -> InventoryEntry {
    InventoryEntry {
        id,
        hash,
        commit: String::new(),
    }
}

/// Adds rows of `kind, name, spec_hash, hash_version, drifted` to `live.resources`.
pub(super) fn add_resource_rows(
    live: &mut LiveState,
    rows: &[tokio_postgres::Row],
) -> Result<(), StoreError> {
    for row in rows {
        let id = id_from_row(row, "resources")?;
        let version: i16 = get(row, 3)?;
        live.resources.insert(
            id.clone(),
            LiveResource {
                id,
                hash: versioned(get(row, 2)?, version),
                drifted: get(row, 4)?,
            },
        );
    }
    Ok(())
}

fn versioned(hash: String, version: i16) -> SpecHash {
    if version == HASH_VERSION {
        SpecHash::from_hex(hash)
    } else {
        SpecHash::from_hex(format!("v{version}:{hash}"))
    }
}
