//! Applying plans against a real PostgreSQL: the sync lifecycle, stale plans, concurrent
//! applies, all-or-nothing failures, drift, scale, and the store's run bookkeeping.

use std::collections::{BTreeMap, HashSet};

use ritmo::apply::{ApplyError, ApplyOutcome, ApplyReport, apply_plan};
use ritmo::hash::{Spec, content_hash};
use ritmo::model::{DesiredResource, Kind, ResourceId, Revision, SourceLocation};
use ritmo::plan::{self, Action, Plan, PlanBase, PlanPolicy};
use ritmo::store::{NewRun, NewTarget, RevisionAction, RunStatus, Store, Trigger};
use ritmo_tests::db::TestDb;
use serde_json::{Value, json};
use uuid::Uuid;

const TARGET: &str = "prod";

fn resource(kind: Kind, name: &str, spec: Value) -> DesiredResource {
    let labels = BTreeMap::from([("team".to_string(), "platform".to_string())]);
    let spec = Spec::from_value(&spec);
    DesiredResource {
        id: ResourceId::new(kind, name),
        hash: content_hash(&labels, &spec),
        labels,
        spec,
        source: SourceLocation::new(format!("{}/{name}.yaml", kind.directory()), 1, 1),
    }
}

fn job(name: &str, timeout: u64) -> DesiredResource {
    resource(
        Kind::Job,
        name,
        json!({"timeout": timeout, "enabled": true}),
    )
}

fn revision(commit: &str) -> Revision {
    Revision::Commit {
        branch: "main".into(),
        commit: commit.into(),
    }
}

fn lenient() -> PlanPolicy {
    PlanPolicy {
        max_delete_percent: 100,
        ..PlanPolicy::default()
    }
}

async fn connect(db: &TestDb, target: &str) -> Store {
    let store = Store::connect(&db.url).await.unwrap();
    store
        .ensure_target(&NewTarget {
            name: target.into(),
            repo_url: "https://git.example/acme/config.git".into(),
            branch: "main".into(),
            path: String::new(),
        })
        .await
        .unwrap();
    store
}

/// Plans `desired` at `commit` against the live database and stores the plan as a new run.
async fn plan_run(
    store: &Store,
    target: &str,
    commit: &str,
    desired: Vec<DesiredResource>,
    policy: &PlanPolicy,
) -> (Uuid, Plan) {
    let state = store.target(target).await.unwrap().unwrap();
    let live = store.live_state(target).await.unwrap();
    let plan = plan::plan(
        target,
        revision(commit),
        PlanBase {
            generation: state.generation,
            commit: state.last_applied_commit,
        },
        desired,
        &live,
        policy,
    );
    let sync_id = store
        .begin_run(&NewRun {
            target: target.into(),
            trigger: Trigger::Manual,
            actor: Some("test".into()),
            revision: Some(commit.into()),
            dry_run: false,
        })
        .await
        .unwrap();
    store
        .record_plan(sync_id, &plan, RunStatus::Planned)
        .await
        .unwrap();
    (sync_id, plan)
}

/// Plans and applies; the apply must succeed.
async fn sync(
    store: &mut Store,
    commit: &str,
    desired: Vec<DesiredResource>,
    policy: &PlanPolicy,
) -> (Uuid, Plan, ApplyReport) {
    let (sync_id, plan) = plan_run(store, TARGET, commit, desired, policy).await;
    match apply_plan(store, sync_id, &plan).await.unwrap() {
        ApplyOutcome::Applied(report) => (sync_id, plan, report),
        other => panic!("expected the plan to apply, got {other:?}"),
    }
}

fn lines(plan: &Plan) -> Vec<String> {
    plan.actions.iter().map(ToString::to_string).collect()
}

async fn names(store: &Store) -> Vec<String> {
    store
        .resources(None, None)
        .await
        .unwrap()
        .into_iter()
        .map(|row| format!("{}/{}", row.kind.slug(), row.name))
        .collect()
}

/// Every row of the tables an apply writes, as JSON text, in a stable order.
async fn dump(db: &TestDb) -> Vec<String> {
    let client = db.client().await;
    let mut out = Vec::new();
    for (table, order) in [
        ("resources", "kind, name"),
        ("inventory", "target, kind, name"),
        ("revisions", "id"),
        ("targets", "name"),
        ("drift_events", "id"),
    ] {
        let rows = client
            .query(
                &format!("SELECT row_to_json(t)::text FROM {table} t ORDER BY {order}"),
                &[],
            )
            .await
            .unwrap();
        out.extend(
            rows.iter()
                .map(|row| format!("{table}: {}", row.get::<_, String>(0))),
        );
    }
    out
}

#[tokio::test]
async fn a_first_sync_creates_every_resource_with_managed_labels_and_inventory() {
    let db = TestDb::new().await;
    let mut store = connect(&db, TARGET).await;
    let desired = vec![
        job("build", 30),
        resource(Kind::Credential, "token", json!({"secret_ref": "arn:x"})),
    ];

    let (sync_id, _, report) = sync(&mut store, "c1", desired, &lenient()).await;

    assert_eq!((report.created, report.updated, report.deleted), (2, 0, 0));
    assert_eq!(report.generation, 1);
    let rows = store
        .resources(Some(Kind::Job), Some("build"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].spec, json!({"timeout": 30, "enabled": true}));
    assert_eq!(rows[0].owner.as_deref(), Some(TARGET));
    assert_eq!(
        rows[0].labels,
        BTreeMap::from([
            ("team".into(), "platform".into()),
            ("managed-by".into(), "gitops".into()),
            ("git-commit".into(), "c1".into()),
            ("ritmo.dev/target".into(), TARGET.into()),
        ])
    );
    let live = store.live_state(TARGET).await.unwrap();
    assert_eq!(live.inventory.len(), 2);
    assert!(live.resources.values().all(|row| !row.drifted));
    let target = store.target(TARGET).await.unwrap().unwrap();
    assert_eq!(target.last_applied_commit.as_deref(), Some("c1"));
    assert_eq!(target.last_sync_id, Some(sync_id));
    let run = store.run(sync_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.summary.create, 2);
    assert!(run.finished_at.is_some() && run.apply_ms.is_some());
    let revisions = store.revisions(sync_id).await.unwrap();
    let changes: Vec<(RevisionAction, String)> = revisions
        .iter()
        .map(|r| (r.action, format!("{}/{}", r.kind.slug(), r.name)))
        .collect();
    assert_eq!(
        changes,
        [
            (RevisionAction::Created, "credential/token".into()),
            (RevisionAction::Created, "job/build".into())
        ]
    );
}

#[tokio::test]
async fn a_second_sync_of_the_same_content_changes_nothing() {
    let db = TestDb::new().await;
    let mut store = connect(&db, TARGET).await;
    sync(&mut store, "c1", vec![job("a", 1), job("b", 1)], &lenient()).await;
    let before = store.resources(None, None).await.unwrap();

    let (sync_id, plan, report) =
        sync(&mut store, "c2", vec![job("a", 1), job("b", 1)], &lenient()).await;

    assert!(!plan.has_changes());
    assert_eq!(plan.unchanged, 2);
    assert_eq!((report.created, report.updated, report.deleted), (0, 0, 0));
    assert_eq!(store.resources(None, None).await.unwrap(), before);
    assert!(store.revisions(sync_id).await.unwrap().is_empty());
    assert_eq!(store.target(TARGET).await.unwrap().unwrap().generation, 2);
}

#[tokio::test]
async fn an_edited_spec_is_updated_and_recorded_with_old_and_new_hashes() {
    let db = TestDb::new().await;
    let mut store = connect(&db, TARGET).await;
    sync(&mut store, "c1", vec![job("a", 1), job("b", 1)], &lenient()).await;

    let (sync_id, plan, report) =
        sync(&mut store, "c2", vec![job("a", 2), job("b", 1)], &lenient()).await;

    assert_eq!(lines(&plan), ["~ job/a"]);
    assert_eq!(report.updated, 1);
    let row = &store.resources(Some(Kind::Job), Some("a")).await.unwrap()[0];
    assert_eq!(row.spec["timeout"], 2);
    assert_eq!(row.labels["git-commit"], "c2");
    assert_eq!(row.spec_hash, job("a", 2).hash.as_str());
    let revisions = store.revisions(sync_id).await.unwrap();
    assert_eq!(revisions.len(), 1);
    assert_eq!(revisions[0].action, RevisionAction::Updated);
    assert_eq!(
        revisions[0].old_hash.as_deref(),
        Some(job("a", 1).hash.as_str())
    );
    assert_eq!(
        revisions[0].new_hash.as_deref(),
        Some(job("a", 2).hash.as_str())
    );
    let live = store.live_state(TARGET).await.unwrap();
    let entry = &live.inventory[&ResourceId::new(Kind::Job, "a")];
    assert_eq!(
        (entry.hash.clone(), entry.commit.as_str()),
        (job("a", 2).hash, "c2")
    );
}

#[tokio::test]
async fn a_resource_removed_from_git_is_deleted_with_prune_and_kept_without() {
    let db = TestDb::new().await;
    let mut store = connect(&db, TARGET).await;
    sync(
        &mut store,
        "c1",
        vec![job("a", 1), job("b", 1), job("c", 1)],
        &lenient(),
    )
    .await;

    let no_prune = PlanPolicy {
        prune: false,
        ..lenient()
    };
    let (_, kept_plan, kept) =
        sync(&mut store, "c2", vec![job("a", 1), job("b", 1)], &no_prune).await;
    let after_kept = names(&store).await;
    let (pruned_id, pruned_plan, pruned) =
        sync(&mut store, "c3", vec![job("a", 1), job("b", 1)], &lenient()).await;

    assert_eq!(kept_plan.actions[0].verb(), "warn");
    assert_eq!(kept.deleted, 0);
    assert_eq!(after_kept, ["job/a", "job/b", "job/c"]);
    assert_eq!(lines(&pruned_plan), ["- job/c"]);
    assert_eq!(pruned.deleted, 1);
    assert_eq!(names(&store).await, ["job/a", "job/b"]);
    let live = store.live_state(TARGET).await.unwrap();
    assert!(
        !live
            .inventory
            .contains_key(&ResourceId::new(Kind::Job, "c"))
    );
    let revisions = store.revisions(pruned_id).await.unwrap();
    assert_eq!(revisions[0].action, RevisionAction::Deleted);
    assert_eq!(
        revisions[0].old_hash.as_deref(),
        Some(job("c", 1).hash.as_str())
    );
}

#[tokio::test]
async fn a_rename_is_a_delete_and_a_create() {
    let db = TestDb::new().await;
    let mut store = connect(&db, TARGET).await;
    sync(
        &mut store,
        "c1",
        vec![job("keep", 1), job("old-name", 1)],
        &lenient(),
    )
    .await;

    let (_, plan, report) = sync(
        &mut store,
        "c2",
        vec![job("keep", 1), job("new-name", 1)],
        &lenient(),
    )
    .await;

    assert_eq!(lines(&plan), ["+ job/new-name", "- job/old-name"]);
    assert_eq!((report.created, report.deleted), (1, 1));
    assert_eq!(names(&store).await, ["job/keep", "job/new-name"]);
}

#[tokio::test]
async fn rows_outside_the_inventory_are_never_touched() {
    let db = TestDb::new().await;
    let mut store = connect(&db, TARGET).await;
    connect(&db, "other").await;
    let (other_id, other_plan) =
        plan_run(&store, "other", "o1", vec![job("theirs", 1)], &lenient()).await;
    apply_plan(&mut store, other_id, &other_plan).await.unwrap();

    let (_, plan, _) = sync(&mut store, "c1", vec![job("mine", 1)], &lenient()).await;
    sync(&mut store, "c2", vec![job("mine", 2)], &lenient()).await;

    assert_eq!(lines(&plan), ["+ job/mine"]);
    let theirs = &store
        .resources(Some(Kind::Job), Some("theirs"))
        .await
        .unwrap()[0];
    assert_eq!(theirs.owner.as_deref(), Some("other"));
    assert_eq!(theirs.labels["git-commit"], "o1");
}

#[tokio::test]
async fn a_plan_whose_generation_moved_applies_nothing_and_is_superseded() {
    let db = TestDb::new().await;
    let mut store = connect(&db, TARGET).await;
    let (stale_id, stale_plan) =
        plan_run(&store, TARGET, "c1", vec![job("a", 1)], &lenient()).await;
    sync(&mut store, "c2", vec![job("b", 1)], &lenient()).await;
    let before = dump(&db).await;

    let outcome = apply_plan(&mut store, stale_id, &stale_plan).await.unwrap();

    assert_eq!(
        outcome,
        ApplyOutcome::Stale {
            planned_generation: 0,
            current_generation: 1
        }
    );
    assert_eq!(dump(&db).await, before);
    let run = store.run(stale_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Superseded);
    assert!(run.error.unwrap_or_default().contains("generation 0"));
}

#[tokio::test]
async fn applying_the_same_run_twice_does_nothing_the_second_time() {
    let db = TestDb::new().await;
    let mut store = connect(&db, TARGET).await;
    let (sync_id, plan) = plan_run(&store, TARGET, "c1", vec![job("a", 1)], &lenient()).await;
    apply_plan(&mut store, sync_id, &plan).await.unwrap();
    let before = dump(&db).await;

    let again = apply_plan(&mut store, sync_id, &plan).await.unwrap();

    assert_eq!(
        again,
        ApplyOutcome::AlreadyFinished {
            status: RunStatus::Succeeded
        }
    );
    assert_eq!(dump(&db).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_applies_from_the_same_base_serialize() {
    let db = TestDb::new().await;
    let mut first = connect(&db, TARGET).await;
    let mut second = Store::connect(&db.url).await.unwrap();
    sync(&mut first, "c0", vec![job("base", 1)], &lenient()).await;
    let many = |tag: &str| -> Vec<DesiredResource> {
        (0..300)
            .map(|i| job(&format!("{tag}-{i}"), 1))
            .chain([
                job("base", 1),
                job("shared", if tag == "x" { 1 } else { 2 }),
            ])
            .collect()
    };
    let (id_x, plan_x) = plan_run(&first, TARGET, "cx", many("x"), &lenient()).await;
    let (id_y, plan_y) = plan_run(&second, TARGET, "cy", many("y"), &lenient()).await;

    let (x, y) = tokio::join!(
        apply_plan(&mut first, id_x, &plan_x),
        apply_plan(&mut second, id_y, &plan_y)
    );

    let (x, y) = (x.unwrap(), y.unwrap());
    let (winner, winner_id, loser_id) = match (&x, &y) {
        (ApplyOutcome::Applied(_), ApplyOutcome::Stale { .. }) => ("x", id_x, id_y),
        (ApplyOutcome::Stale { .. }, ApplyOutcome::Applied(_)) => ("y", id_y, id_x),
        other => panic!("expected one applied and one stale, got {other:?}"),
    };
    let mut expected: Vec<String> = many(winner).iter().map(|r| r.id.to_string()).collect();
    expected.sort();
    let mut actual = names(&first).await;
    actual.sort();
    assert_eq!(actual, expected);
    let live = first.live_state(TARGET).await.unwrap();
    assert_eq!(live.inventory.len(), expected.len());
    assert_eq!(first.revisions(winner_id).await.unwrap().len(), 301);
    assert!(first.revisions(loser_id).await.unwrap().is_empty());
    let loser = first.run(loser_id).await.unwrap().unwrap();
    assert_eq!(loser.status, RunStatus::Superseded);
    assert_eq!(first.target(TARGET).await.unwrap().unwrap().generation, 2);
}

#[tokio::test]
async fn a_failure_halfway_through_leaves_every_table_as_it_was() {
    let db = TestDb::new().await;
    let mut store = connect(&db, TARGET).await;
    sync(
        &mut store,
        "c1",
        vec![job("a", 1), job("gone", 1)],
        &lenient(),
    )
    .await;
    db.client()
        .await
        .batch_execute(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.name = 'poison' THEN RAISE EXCEPTION 'poisoned row'; END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER poison BEFORE INSERT ON resources
                 FOR EACH ROW EXECUTE FUNCTION poison();",
        )
        .await
        .unwrap();
    // 1,500 creates: the poisoned row sits in the second batch, after a whole batch written.
    let mut desired: Vec<DesiredResource> =
        (0..1500).map(|i| job(&format!("j{i:04}"), 1)).collect();
    desired.push(job("a", 2));
    desired.push(job("poison", 1));
    let (sync_id, plan) = plan_run(&store, TARGET, "c2", desired, &lenient()).await;
    let before = dump(&db).await;

    let error = apply_plan(&mut store, sync_id, &plan).await.unwrap_err();

    assert!(!error.is_retryable(), "{error:?}");
    assert_eq!(dump(&db).await, before);
    let run = store.run(sync_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    let reason = run.error.unwrap_or_default();
    assert!(reason.contains("poisoned row"), "{reason}");
    assert!(run.finished_at.is_some());
}

#[tokio::test]
async fn a_create_colliding_with_a_row_another_target_owns_fails_cleanly() {
    let db = TestDb::new().await;
    let mut store = connect(&db, TARGET).await;
    connect(&db, "other").await;
    let (mine_id, mine) = plan_run(
        &store,
        TARGET,
        "c1",
        vec![job("x", 1), job("y", 1)],
        &lenient(),
    )
    .await;
    let (theirs_id, theirs) = plan_run(&store, "other", "o1", vec![job("x", 2)], &lenient()).await;
    apply_plan(&mut store, theirs_id, &theirs).await.unwrap();
    let before = dump(&db).await;

    let error = apply_plan(&mut store, mine_id, &mine).await.unwrap_err();

    assert!(matches!(error, ApplyError::Conflict { .. }), "{error:?}");
    assert!(error.to_string().contains("(Job, x)"), "{error}");
    let after: Vec<String> = dump(&db).await;
    assert_eq!(after, before);
    assert_eq!(
        store.run(mine_id).await.unwrap().unwrap().status,
        RunStatus::Failed
    );
}

#[tokio::test]
async fn an_out_of_band_edit_is_drift_until_the_next_apply_restores_it() {
    let db = TestDb::new().await;
    let mut store = connect(&db, TARGET).await;
    let desired = vec![job("a", 1), job("b", 1)];
    sync(&mut store, "c1", desired.clone(), &lenient()).await;

    db.client()
        .await
        .batch_execute(
            "UPDATE resources SET spec = '{\"timeout\": 999}' WHERE name = 'a';
             DELETE FROM resources WHERE name = 'b';",
        )
        .await
        .unwrap();
    let live = store.live_state(TARGET).await.unwrap();
    let events = store.drift(TARGET).await.unwrap();
    let (sync_id, plan, report) = sync(&mut store, "c1", desired, &lenient()).await;

    assert!(live.resources[&ResourceId::new(Kind::Job, "a")].drifted);
    assert!(
        !live
            .resources
            .contains_key(&ResourceId::new(Kind::Job, "b"))
    );
    let operations: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.name.as_str(), e.operation.as_str()))
        .collect();
    assert_eq!(operations, [("a", "UPDATE"), ("b", "DELETE")]);
    assert!(matches!(
        plan.actions[..],
        [Action::Update { drifted: true, .. }, Action::Create { .. }]
    ));
    assert_eq!((report.created, report.updated), (1, 1));
    let rows = store.resources(Some(Kind::Job), None).await.unwrap();
    assert!(rows.iter().all(|row| row.drifted_at.is_none()));
    assert_eq!(rows[0].spec["timeout"], 1);
    assert!(store.drift(TARGET).await.unwrap().is_empty());
    let live = store.live_state(TARGET).await.unwrap();
    assert!(live.resources.values().all(|row| !row.drifted));
    let resolved = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM drift_events WHERE resolved_sync_id = $1",
            &[&sync_id],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(resolved, 2);
}

#[tokio::test]
async fn touching_only_bookkeeping_columns_is_not_drift() {
    let db = TestDb::new().await;
    let mut store = connect(&db, TARGET).await;
    sync(&mut store, "c1", vec![job("a", 1)], &lenient()).await;

    db.client()
        .await
        .batch_execute("UPDATE resources SET updated_at = now(), source_path = 'moved.yaml'")
        .await
        .unwrap();

    assert!(store.drift(TARGET).await.unwrap().is_empty());
    let live = store.live_state(TARGET).await.unwrap();
    assert!(live.resources.values().all(|row| !row.drifted));
}

#[tokio::test]
async fn ten_thousand_resources_apply_in_one_transaction() {
    let db = TestDb::new().await;
    let mut store = connect(&db, TARGET).await;
    let desired: Vec<DesiredResource> = (0..10_000)
        .map(|i| {
            resource(
                Kind::ALL[i % Kind::ALL.len()],
                &format!("r{i:05}"),
                json!({"index": i, "description": "a resource with a few fields", "enabled": true}),
            )
        })
        .collect();
    let (sync_id, plan) = plan_run(&store, TARGET, "c1", desired, &lenient()).await;

    let outcome = apply_plan(&mut store, sync_id, &plan).await.unwrap();

    let ApplyOutcome::Applied(report) = outcome else {
        panic!("expected the plan to apply, got {outcome:?}");
    };
    eprintln!("10,000 creates applied in {:?}", report.duration);
    assert_eq!(report.created, 10_000);
    let started = std::time::Instant::now();
    let live = store.live_state(TARGET).await.unwrap();
    eprintln!("live state of 10,000 rows read in {:?}", started.elapsed());
    assert_eq!(
        (live.resources.len(), live.inventory.len()),
        (10_000, 10_000)
    );
    assert_eq!(store.revisions(sync_id).await.unwrap().len(), 10_000);
    let counts = db
        .client()
        .await
        .query_one("SELECT count(DISTINCT xmin::text) FROM resources", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(counts, 1, "every row written by the same transaction");
}

#[tokio::test]
async fn a_plan_with_errors_is_refused_without_writing_anything() {
    let db = TestDb::new().await;
    let mut store = connect(&db, TARGET).await;
    sync(&mut store, "c1", vec![job("a", 1)], &lenient()).await;
    let (sync_id, plan) = plan_run(&store, TARGET, "c2", Vec::new(), &PlanPolicy::default()).await;
    let before = dump(&db).await;

    let error = apply_plan(&mut store, sync_id, &plan).await.unwrap_err();

    assert!(
        matches!(error, ApplyError::PlanHasErrors { .. }),
        "{error:?}"
    );
    assert_eq!(dump(&db).await, before);
}

#[tokio::test]
async fn a_run_waiting_for_approval_is_applied_only_once_approved() {
    let db = TestDb::new().await;
    let mut store = connect(&db, TARGET).await;
    sync(&mut store, "c1", vec![job("a", 1)], &lenient()).await;
    let (sync_id, plan) = plan_run(&store, TARGET, "c2", vec![job("a", 2)], &lenient()).await;
    store
        .record_plan(sync_id, &plan, RunStatus::PendingApproval)
        .await
        .unwrap();

    let refused = apply_plan(&mut store, sync_id, &plan).await;
    let approved = store.approve_run(sync_id, "alice").await.unwrap();
    let approved_again = store.approve_run(sync_id, "bob").await.unwrap();
    let applied = apply_plan(&mut store, sync_id, &plan).await.unwrap();

    assert!(
        matches!(refused, Err(ApplyError::NotApplicable { .. })),
        "{refused:?}"
    );
    assert!(approved);
    assert!(!approved_again);
    assert!(matches!(applied, ApplyOutcome::Applied(_)));
    let run = store.run(sync_id).await.unwrap().unwrap();
    assert_eq!(run.approved_by.as_deref(), Some("alice"));
    assert!(run.approved_at.is_some());
}

#[tokio::test]
async fn stored_plans_round_trip_and_runs_page_newest_first() {
    let db = TestDb::new().await;
    let store = connect(&db, TARGET).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let (id, plan) = plan_run(
            &store,
            TARGET,
            &format!("c{i}"),
            vec![job("a", i)],
            &lenient(),
        )
        .await;
        ids.push((id, plan));
    }

    let first_page = store.runs(Some(TARGET), 3, None).await.unwrap();
    let second_page = store
        .runs(Some(TARGET), 3, Some(first_page[2].started_at))
        .await
        .unwrap();
    let loaded = store.load_plan(ids[1].0).await.unwrap();

    let page_ids: Vec<Uuid> = first_page
        .iter()
        .chain(&second_page)
        .map(|r| r.id)
        .collect();
    let expected: Vec<Uuid> = ids.iter().rev().map(|(id, _)| *id).collect();
    assert_eq!(page_ids, expected);
    assert_eq!(loaded.as_ref(), Some(&ids[1].1));
    assert_eq!(first_page[0].revision.as_deref(), Some("main@sha1:c4"));
    assert_eq!(first_page[0].commit.as_deref(), Some("c4"));
    assert_eq!(first_page[0].summary.create, 1);
    assert!(
        store
            .runs(Some("nobody"), 10, None)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.load_plan(Uuid::now_v7()).await.unwrap(), None);
}

#[tokio::test]
async fn a_failed_run_keeps_its_reason_and_diagnostics() {
    let db = TestDb::new().await;
    let store = connect(&db, TARGET).await;
    let sync_id = store
        .begin_run(&NewRun {
            target: TARGET.into(),
            trigger: Trigger::Webhook,
            actor: None,
            revision: None,
            dry_run: false,
        })
        .await
        .unwrap();
    let diagnostic = ritmo::diagnostic::Diagnostic::in_file(
        ritmo::diagnostic::Code::E100,
        "jobs/a.yaml",
        "bad yaml",
    );

    store
        .fail_run(
            sync_id,
            "validation failed",
            std::slice::from_ref(&diagnostic),
        )
        .await
        .unwrap();

    let run = store.run(sync_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.trigger, Trigger::Webhook);
    assert_eq!(run.error.as_deref(), Some("validation failed"));
    assert_eq!(run.diagnostics, [diagnostic]);
    assert!(store.fail_run(Uuid::now_v7(), "x", &[]).await.is_err());
}

#[tokio::test]
async fn registering_a_target_again_keeps_its_generation() {
    let db = TestDb::new().await;
    let mut store = connect(&db, TARGET).await;
    sync(&mut store, "c1", vec![job("a", 1)], &lenient()).await;

    let updated = store
        .ensure_target(&NewTarget {
            name: TARGET.into(),
            repo_url: "https://git.example/acme/moved.git".into(),
            branch: "release".into(),
            path: "config".into(),
        })
        .await
        .unwrap();

    assert_eq!(updated.generation, 1);
    assert_eq!(updated.branch, "release");
    assert_eq!(updated.last_applied_commit.as_deref(), Some("c1"));
    assert_eq!(store.targets().await.unwrap().len(), 1);
}

/// Each target's inventory size as the database keeps it on the target's row, beside a count
/// of its entries.
async fn inventory_sizes(db: &TestDb) -> Vec<(String, i64, i64)> {
    db.client()
        .await
        .query(
            "SELECT t.name, t.inventory_size,
                    (SELECT count(*) FROM inventory i WHERE i.target = t.name)
             FROM targets t ORDER BY t.name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

/// The size a plan reads off the target's row follows every write of the inventory: the
/// applier's creates and deletes, and entries deleted, moved or written by hand.
#[tokio::test]
async fn the_inventory_size_kept_on_the_target_follows_every_write() {
    let db = TestDb::new().await;
    let mut store = connect(&db, TARGET).await;
    connect(&db, "other").await;
    sync(
        &mut store,
        "c1",
        vec![job("a", 1), job("b", 1), job("c", 1)],
        &lenient(),
    )
    .await;
    let (other_id, other_plan) =
        plan_run(&store, "other", "o1", vec![job("theirs", 1)], &lenient()).await;
    apply_plan(&mut store, other_id, &other_plan).await.unwrap();
    let applied = inventory_sizes(&db).await;
    sync(
        &mut store,
        "c2",
        vec![job("a", 1), job("b", 2), job("d", 1), job("e", 1)],
        &lenient(),
    )
    .await;
    let pruned_and_created = inventory_sizes(&db).await;
    let client = db.client().await;
    client
        .batch_execute(
            "DELETE FROM inventory WHERE name = 'a';
             UPDATE inventory SET target = 'other' WHERE name = 'b';
             INSERT INTO inventory (target, kind, name, spec_hash, git_commit)
             VALUES ('late', 'Job', 'early', 'by-hand', 'x');",
        )
        .await
        .unwrap();
    connect(&db, "late").await;
    connect(&db, TARGET).await;
    let by_hand = inventory_sizes(&db).await;

    let sizes = |rows: &[(String, i64, i64)]| -> Vec<(String, i64)> {
        rows.iter()
            .map(|(name, kept, _)| (name.clone(), *kept))
            .collect()
    };
    let counted = |rows: &[(String, i64, i64)]| -> Vec<(String, i64)> {
        rows.iter()
            .map(|(name, _, counted)| (name.clone(), *counted))
            .collect()
    };
    assert_eq!(sizes(&applied), [("other".into(), 1), (TARGET.into(), 3)]);
    assert_eq!(sizes(&pruned_and_created), counted(&pruned_and_created));
    assert_eq!(
        sizes(&pruned_and_created),
        [("other".into(), 1), (TARGET.into(), 4)]
    );
    assert_eq!(
        sizes(&by_hand),
        [("late".into(), 1), ("other".into(), 2), (TARGET.into(), 2)]
    );
    assert_eq!(sizes(&by_hand), counted(&by_hand));
    let base = store.applied_base(TARGET).await.unwrap().unwrap();
    assert_eq!(base.inventory_size, 2);
}

#[tokio::test]
async fn starting_a_run_for_an_unknown_target_says_so() {
    let db = TestDb::new().await;
    let store = Store::connect(&db.url).await.unwrap();

    let error = store
        .begin_run(&NewRun {
            target: "ghost".into(),
            trigger: Trigger::Cli,
            actor: None,
            revision: None,
            dry_run: true,
        })
        .await
        .unwrap_err();

    assert_eq!(error.to_string(), "target `ghost` is not registered");
}

#[tokio::test]
async fn a_webhook_delivery_is_new_only_once() {
    let db = TestDb::new().await;
    let store = Store::connect(&db.url).await.unwrap();

    let first = store.record_delivery("d-1", Some(TARGET)).await.unwrap();
    let replay = store.record_delivery("d-1", Some(TARGET)).await.unwrap();

    assert!(first);
    assert!(!replay);
}

#[tokio::test]
async fn recording_a_delivery_also_says_which_of_the_named_targets_are_suspended() {
    let db = TestDb::new().await;
    let store = connect(&db, TARGET).await;
    connect(&db, "other").await;
    store
        .set_suspended(TARGET, true, Some("ops"))
        .await
        .unwrap();
    let names = [TARGET, "other", "ghost"];

    let first = store
        .record_delivery_reading_suspended("d-1", Some(TARGET), &names)
        .await
        .unwrap();
    let replay = store
        .record_delivery_reading_suspended("d-1", Some(TARGET), &names)
        .await
        .unwrap();
    let unnamed = store
        .record_delivery_reading_suspended("d-2", None, &["other"])
        .await
        .unwrap();

    assert_eq!(first, (true, HashSet::from([TARGET.to_string()])));
    assert_eq!(replay, (false, HashSet::from([TARGET.to_string()])));
    assert_eq!(unnamed, (true, HashSet::new()));
    assert!(!store.record_delivery("d-2", None).await.unwrap());
}

#[tokio::test]
async fn processes_connecting_at_once_migrate_the_schema_once() {
    let db = TestDb::new().await;

    let stores = futures_join_all(&db.url, 4).await;

    assert!(stores.iter().all(Result::is_ok), "{stores:?}");
    let applied = db
        .client()
        .await
        .query_one("SELECT count(*) FROM refinery_schema_history", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    let migrations =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/migrations"))
            .unwrap()
            .count();
    assert_eq!(applied as usize, migrations, "each migration recorded once");
}

async fn futures_join_all(url: &str, n: usize) -> Vec<Result<Store, ritmo::store::StoreError>> {
    let mut handles = Vec::new();
    for _ in 0..n {
        let url = url.to_string();
        handles.push(tokio::spawn(async move { Store::connect(&url).await }));
    }
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test]
async fn connection_errors_hide_the_password_and_are_retryable() {
    let error = Store::connect("postgres://ritmo:hunter2@127.0.0.1:1/ritmo")
        .await
        .unwrap_err();

    let text = format!("{error} {error:?}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn pruning_history_keeps_the_newest_runs_and_the_last_applied_one() {
    let db = TestDb::new().await;
    let mut store = connect(&db, TARGET).await;
    let (applied_id, _, _) = sync(&mut store, "c0", vec![job("a", 0)], &lenient()).await;
    let mut failed = Vec::new();
    for i in 1..=4 {
        let (id, _) = plan_run(
            &store,
            TARGET,
            &format!("c{i}"),
            vec![job("a", i)],
            &lenient(),
        )
        .await;
        store.fail_run(id, "broken", &[]).await.unwrap();
        failed.push(id);
    }
    let (in_progress, _) = plan_run(&store, TARGET, "c5", vec![job("a", 5)], &lenient()).await;

    let deleted = store.prune_history(2).await.unwrap();

    assert_eq!(deleted, 3);
    let left: Vec<Uuid> = store
        .runs(Some(TARGET), 100, None)
        .await
        .unwrap()
        .iter()
        .map(|run| run.id)
        .collect();
    assert_eq!(left, [in_progress, failed[3], applied_id]);
    assert_eq!(store.revisions(applied_id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_rollback_pin_and_suspension_are_kept_on_the_target() {
    let db = TestDb::new().await;
    let store = connect(&db, TARGET).await;

    let pinned = store.set_pin(TARGET, Some("c1")).await.unwrap();
    let suspended = store
        .set_suspended(TARGET, true, Some("ops"))
        .await
        .unwrap();
    let unpinned = store.set_pin(TARGET, None).await.unwrap();
    let missing = store.set_pin("ghost", None).await;

    assert_eq!(pinned.pinned_commit.as_deref(), Some("c1"));
    assert!(suspended.suspended);
    assert_eq!(unpinned.pinned_commit, None);
    assert!(unpinned.suspended);
    assert!(matches!(
        missing,
        Err(ritmo::store::StoreError::UnknownTarget(_))
    ));
}

#[test]
fn an_apply_report_serializes_its_duration_in_milliseconds() {
    let report = ApplyReport {
        sync_id: Uuid::nil(),
        target: TARGET.into(),
        generation: 3,
        commit: Some("c1".into()),
        created: 1,
        updated: 2,
        deleted: 3,
        unchanged: 4,
        duration: std::time::Duration::from_millis(1500),
    };

    let json = serde_json::to_value(ApplyOutcome::Applied(report)).unwrap();

    assert_eq!(json["outcome"], "applied");
    assert_eq!(json["duration_ms"], 1500);
    assert_eq!(json["created"], 1);
}
