//! What connecting costs on every start: the migration check and TLS on a local server.

use ritmo::store::{DatabaseSettings, SslMode, Store, StoreError};
use ritmo_tests::db::{TestDb, connect};

/// `store::MIGRATION_LOCK`, the advisory lock refinery's run is serialised by.
const MIGRATION_LOCK: i64 = 0x7269_746d_6f2d_6d67;

/// Whether each `ritmo` session on `db` uses TLS.
async fn ritmo_sessions_use_tls(db: &TestDb) -> Vec<bool> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    connect(&url)
        .await
        .unwrap()
        .query(
            "SELECT coalesce(s.ssl, false) FROM pg_stat_activity a
               LEFT JOIN pg_stat_ssl s ON s.pid = a.pid
              WHERE a.datname = $1 AND a.application_name = 'ritmo'",
            &[&db.name],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

// Bug pinned: every start ran refinery's whole check under the advisory lock (five round trips,
// and a start waited behind any other process migrating). A migrated schema now costs one
// query and takes no lock. The lock timeout turns the old wait into an error instead of a hang.
#[tokio::test]
async fn a_migrated_schema_is_not_locked_again_on_connect() {
    let db = TestDb::new().await;
    drop(Store::connect(&db.url).await.unwrap());
    let holder = db.client().await;
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .unwrap();
    let impatient = format!("{}?options=-c%20lock_timeout%3D2000", db.url);

    let store = Store::connect(&impatient).await;

    assert!(store.is_ok(), "{:?}", store.err());
}

#[tokio::test]
async fn a_schema_newer_than_this_binary_is_still_refused() {
    let db = TestDb::new().await;
    drop(Store::connect(&db.url).await.unwrap());
    db.client()
        .await
        .batch_execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
             SELECT max(version) + 1, 'from_a_newer_release', '2030-01-01T00:00:00Z', '1'
               FROM refinery_schema_history",
        )
        .await
        .unwrap();

    let refused = Store::connect(&db.url).await;

    assert!(
        matches!(refused, Err(StoreError::Migrate(_))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn an_empty_database_is_migrated_and_a_second_start_finds_it_current() {
    let db = TestDb::new().await;

    let first = Store::connect(&db.url).await;
    let second = Store::connect(&db.url).await;

    assert!(first.is_ok(), "{:?}", first.err());
    assert!(second.is_ok(), "{:?}", second.err());
    let tables: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename IN ('targets', 'resources')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 2);
}

// Bug pinned: `prefer` (the default off Lambda) ran a TLS handshake with the loopback server
// on every start, about 80 ms of a whole `ritmo gitops sync`. TLS guards nothing on loopback
// that `prefer` (no certificate check) would guard; `require` still gets it.
#[tokio::test]
async fn prefer_on_loopback_starts_without_tls_and_require_still_uses_it() {
    let db = TestDb::new().await;
    let with = |mode| DatabaseSettings {
        url: Some(db.url.clone().into()),
        sslmode: Some(mode),
        ..DatabaseSettings::default()
    };
    let server_has_tls: String = db
        .client()
        .await
        .query_one("SHOW ssl", &[])
        .await
        .unwrap()
        .get(0);

    let preferred = Store::connect_with(&with(SslMode::Prefer), None)
        .await
        .unwrap();
    let preferred_tls = ritmo_sessions_use_tls(&db).await;
    drop(preferred);
    let required = Store::connect_with(&with(SslMode::Require), None).await;

    assert_eq!(preferred_tls, [false]);
    if server_has_tls == "on" {
        assert!(required.is_ok(), "{:?}", required.err());
        assert!(ritmo_sessions_use_tls(&db).await.contains(&true));
    }
}
