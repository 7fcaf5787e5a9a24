//! Throwaway PostgreSQL databases: one per test, on the server at `DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`).
//!
//! Each database is named `ritmo_test_<unix seconds>_<pid>_<counter>` and dropped
//! (`WITH (FORCE)`) when its `TestDb` is dropped, panics included. Databases left by a killed
//! process are swept by the next process once they are an hour old and nobody is connected
//! (the server may be shared with other machines' processes, so a dead pid proves nothing).

use std::sync::atomic::{AtomicU64, Ordering};

use tokio_postgres::{Client, NoTls};

const PREFIX: &str = "ritmo_test_";
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

static COUNTER: AtomicU64 = AtomicU64::new(0);
static SWEPT: std::sync::Once = std::sync::Once::new();

/// A fresh, empty database, dropped with this value.
#[derive(Debug)]
pub struct TestDb {
    /// URL of the new database.
    pub url: String,
    /// Its name.
    pub name: String,
    admin_url: String,
}

impl TestDb {
    /// Creates a new empty database.
    ///
    /// # Panics
    /// When the server cannot be reached: the message says which URL was tried.
    pub async fn new() -> TestDb {
        TestDb::create("").await
    }

    /// A new database holding a copy of `template` (`CREATE DATABASE … TEMPLATE`): the same
    /// starting state for each of several runs, without repeating the work that made it.
    /// Nobody may be connected to `template` meanwhile.
    ///
    /// # Panics
    /// As [`TestDb::new`].
    pub async fn copy_of(template: &TestDb) -> TestDb {
        TestDb::create(&format!(" TEMPLATE \"{}\"", template.name)).await
    }

    async fn create(clause: &str) -> TestDb {
        let admin_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_string());
        let name = format!(
            "{PREFIX}{}_{}_{}",
            unix_seconds(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let admin = connect(&admin_url).await.unwrap_or_else(|error| {
            panic!(
                "cannot reach PostgreSQL at `{}` (set DATABASE_URL): {error}",
                ritmo::store::redact_url(&admin_url)
            )
        });
        if !SWEPT.is_completed() {
            sweep_dead(&admin).await;
            SWEPT.call_once(|| {});
        }
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\"{clause}"))
            .await
            .unwrap_or_else(|error| panic!("cannot create database `{name}`: {error}"));
        TestDb {
            url: with_database(&admin_url, &name),
            name,
            admin_url,
        }
    }

    /// A plain client on the test database, for raw SQL (out-of-band edits, dumps).
    pub async fn client(&self) -> Client {
        connect(&self.url)
            .await
            .unwrap_or_else(|error| panic!("cannot connect to `{}`: {error}", self.name))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on: use a thread with
        // its own small runtime.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let admin = connect(&admin_url).await.ok()?;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("warning: could not drop test database `{}`", self.name);
        }
    }
}

/// Connects and drives the connection on the current runtime.
pub async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Drops test databases over an hour old that nobody is connected to.
async fn sweep_dead(admin: &Client) {
    let Ok(rows) = admin
        .query(
            "SELECT datname FROM pg_database d WHERE datname LIKE $1
               AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)",
            &[&format!("{PREFIX}%")],
        )
        .await
    else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let created = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        let stale = created.is_some_and(|created| unix_seconds().saturating_sub(created) > 3600);
        if stale {
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
        }
    }
}

/// `url` pointing at database `name` (URL form; the query string is kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_replaces_the_one_in_the_url() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres?sslmode=disable", "t1"),
            "postgres://u@h:5432/t1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "t1"), "postgres://u@h/t1");
    }
}
