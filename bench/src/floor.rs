//! The physical floors a sync is compared with: `git clone --depth 1 --bare` of the same URL,
//! and `psql \copy` of the same rows into the same tables.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use ritmo::apply::row_labels;
use ritmo::plan::{Action, Plan};
use ritmo::store::Store;
use ritmo_tests::db::TestDb;

pub fn git_clone_shallow_bare(url: &str, dir: &Path) -> Result<()> {
    let status = Command::new("git")
        .args(["clone", "--quiet", "--depth", "1", "--bare", url])
        .arg(dir)
        .status()?;
    if !status.success() {
        bail!("git clone failed");
    }
    Ok(())
}

/// `psql \copy` of the rows the full sync wrote (resources, inventory, revisions) into a
/// fresh database with the same schema, in one transaction: see [`copy_in`].
pub async fn copy_floor(plan: &Plan, target: &str, dir: &Path) -> Result<Duration> {
    let commit = plan.revision.commit().unwrap_or_default();
    let sync_id = "00000000-0000-7000-8000-000000000000";
    let mut resources = String::new();
    let mut inventory = String::new();
    let mut revisions = String::new();
    for action in &plan.actions {
        let Action::Create { desired } = action else {
            continue;
        };
        let kind = desired.id.kind.as_str();
        let name = &desired.id.name;
        let hash = desired.hash.as_str();
        let labels = row_labels(desired, target, commit).to_string();
        let spec = desired.spec.as_json().to_string();
        resources.push_str(&csv(&[
            kind,
            name,
            &spec,
            hash,
            "1",
            &labels,
            &desired.source.path,
            commit,
            target,
            "true",
        ]));
        inventory.push_str(&csv(&[target, kind, name, hash, commit]));
        revisions.push_str(&csv(&[
            sync_id, target, kind, name, "created", hash, commit,
        ]));
    }
    let files = [
        (COPIED[0].0, resources),
        (COPIED[1].0, inventory),
        (COPIED[2].0, revisions),
    ];
    for (table, text) in &files {
        std::fs::write(dir.join(format!("{table}.csv")), text)?;
    }
    copy_in(dir).await
}

/// The tables a sync fills and the columns the floor copies.
const COPIED: [(&str, &str); 3] = [
    (
        "resources",
        "kind, name, spec, spec_hash, hash_version, labels, source_path, git_commit, target, \
         owned",
    ),
    ("inventory", "target, kind, name, spec_hash, git_commit"),
    (
        "revisions",
        "sync_id, target, kind, name, action, new_hash, git_commit",
    ),
];

/// Writes `TABLE.csv` in `dir` for each of [`COPIED`], with the rows `database_url` holds.
pub fn dump_rows(database_url: &str, dir: &Path) -> Result<()> {
    for (table, columns) in COPIED {
        let file = dir.join(format!("{table}.csv"));
        psql(
            database_url,
            &[format!(
                "\\copy (SELECT {columns} FROM {table}) TO '{}' WITH (FORMAT csv)",
                file.display()
            )],
        )?;
    }
    Ok(())
}

/// Times `psql \copy` of `dir`'s `TABLE.csv` files into a fresh database with the product's
/// schema, in one transaction. The drift, ownership and inventory-size triggers are disabled:
/// the floor is the cost of moving the rows, not of the product's bookkeeping.
pub async fn copy_in(dir: &Path) -> Result<Duration> {
    let db = TestDb::new().await;
    drop(Store::connect(&db.url).await?);
    db.client()
        .await
        .batch_execute(
            "ALTER TABLE resources DISABLE TRIGGER resources_drift;
             ALTER TABLE inventory DISABLE TRIGGER inventory_ownership;
             ALTER TABLE inventory DISABLE TRIGGER inventory_size_added;",
        )
        .await?;
    let mut commands = vec!["BEGIN".to_string()];
    for (table, columns) in COPIED {
        commands.push(format!(
            "\\copy {table} ({columns}) FROM '{}' WITH (FORMAT csv)",
            dir.join(format!("{table}.csv")).display()
        ));
    }
    commands.push("COMMIT".into());
    let started = Instant::now();
    psql(&db.url, &commands)?;
    Ok(started.elapsed())
}

fn psql(database_url: &str, commands: &[String]) -> Result<()> {
    let mut command = Command::new("psql");
    command
        .arg(database_url)
        .args(["-q", "-v", "ON_ERROR_STOP=1"]);
    for sql in commands {
        command.arg("-c").arg(sql);
    }
    let output = command.output().context("run psql")?;
    if !output.status.success() {
        bail!("psql failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

fn csv(fields: &[&str]) -> String {
    let mut line = String::new();
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        line.push('"');
        line.push_str(&field.replace('"', "\"\""));
        line.push('"');
    }
    line.push('\n');
    line
}
