//! Statements prepared once per connection.
//!
//! Given SQL text, tokio-postgres prepares the statement on every call: a round trip of its
//! own, and a parse on the server, before the round trip that runs it. Every statement the
//! store runs is fixed text (the data travels as parameters), so the set is small and
//! bounded: each is prepared on first use and kept until the server says it is stale.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, GenericClient, Row, Statement};

/// The statements prepared on one connection, by SQL text.
#[derive(Default)]
pub(crate) struct StatementCache {
    prepared: Mutex<HashMap<String, Statement>>,
}

impl StatementCache {
    async fn prepare<C: GenericClient + Sync>(
        &self,
        client: &C,
        sql: &str,
    ) -> Result<Statement, Error> {
        if let Some(statement) = self.lock().get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(sql).await?;
        self.lock().insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    /// Drops `sql`'s statement when `error` says the server no longer has it (`DEALLOCATE`,
    /// a pooler's reset) or its result columns changed under it (another deployment's
    /// migration): the next call prepares it again instead of failing for the connection's life.
    fn forget_if_stale(&self, sql: &str, error: &Error) {
        let stale = [
            SqlState::INVALID_SQL_STATEMENT_NAME,
            // "cached plan must not change result type"
            SqlState::FEATURE_NOT_SUPPORTED,
        ];
        if error.code().is_some_and(|code| stale.contains(code)) {
            self.lock().remove(sql);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Statement>> {
        // The map is only read or inserted into while locked, so it is whole after a panic.
        self.prepared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection or transaction that runs SQL text through the connection's [`StatementCache`].
pub(crate) struct Prepared<'c, C> {
    client: &'c C,
    cache: &'c StatementCache,
}

// Not derived: that would ask `C: Copy`.
impl<C> Clone for Prepared<'_, C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C> Copy for Prepared<'_, C> {}

impl<'c, C: GenericClient + Sync> Prepared<'c, C> {
    /// `client` must be the connection `cache` belongs to, or a transaction on it: a statement
    /// exists only on the connection that prepared it.
    pub(crate) fn new(client: &'c C, cache: &'c StatementCache) -> Self {
        Prepared { client, cache }
    }

    /// Prepares `sql` now, so that calls sent together (pipelined) find it prepared instead of
    /// each preparing it.
    pub(crate) async fn prepare(self, sql: &str) -> Result<(), Error> {
        self.cache.prepare(self.client, sql).await.map(drop)
    }

    pub(crate) async fn query(
        self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        let statement = self.cache.prepare(self.client, sql).await?;
        self.client
            .query(&statement, params)
            .await
            .inspect_err(|error| self.cache.forget_if_stale(sql, error))
    }

    pub(crate) async fn query_one(
        self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, Error> {
        let statement = self.cache.prepare(self.client, sql).await?;
        self.client
            .query_one(&statement, params)
            .await
            .inspect_err(|error| self.cache.forget_if_stale(sql, error))
    }

    pub(crate) async fn query_opt(
        self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        let statement = self.cache.prepare(self.client, sql).await?;
        self.client
            .query_opt(&statement, params)
            .await
            .inspect_err(|error| self.cache.forget_if_stale(sql, error))
    }

    pub(crate) async fn execute(
        self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error> {
        let statement = self.cache.prepare(self.client, sql).await?;
        self.client
            .execute(&statement, params)
            .await
            .inspect_err(|error| self.cache.forget_if_stale(sql, error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session of its own on the server at `DATABASE_URL`.
    async fn session() -> tokio_postgres::Client {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|error| panic!("cannot reach PostgreSQL (set DATABASE_URL): {error}"));
        tokio::spawn(connection);
        client
    }

    const ADD: &str = "SELECT $1::int + 1";
    const DOUBLE: &str = "SELECT $1::int * 2";

    /// On the server at `DATABASE_URL`; it creates nothing, as prepared statements belong to
    /// the session.
    #[tokio::test]
    async fn each_statement_is_prepared_once_and_outlives_a_rolled_back_transaction() {
        let mut client = session().await;
        let cache = StatementCache::default();

        for n in [1, 2] {
            let row = Prepared::new(&client, &cache)
                .query_one(ADD, &[&n])
                .await
                .unwrap();
            assert_eq!(row.get::<_, i32>(0), n + 1);
        }
        let tx = client.transaction().await.unwrap();
        let row = Prepared::new(&tx, &cache)
            .query_one(DOUBLE, &[&3])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), 6);
        tx.rollback().await.unwrap();
        let row = Prepared::new(&client, &cache)
            .query_one(DOUBLE, &[&4])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), 8);

        let on_server: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_prepared_statements WHERE statement IN ($1, $2)",
                &[&ADD, &DOUBLE],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(on_server, 2, "one server-side statement per SQL text");
        assert_eq!(cache.lock().len(), 2);
    }

    /// A temporary table: it lives and dies with the test's session.
    #[tokio::test]
    async fn a_statement_the_server_calls_stale_fails_once_and_is_prepared_again() {
        const READ: &str = "SELECT * FROM pg_temp.stale";
        let client = session().await;
        client
            .batch_execute("CREATE TEMPORARY TABLE stale (a int); INSERT INTO stale VALUES (1)")
            .await
            .unwrap();
        let cache = StatementCache::default();
        let db = Prepared::new(&client, &cache);
        assert_eq!(db.query(READ, &[]).await.unwrap()[0].len(), 1);

        client
            .batch_execute("ALTER TABLE stale ADD COLUMN b int")
            .await
            .unwrap();
        let changed = db.query(READ, &[]).await.unwrap_err();
        assert_eq!(changed.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED));
        assert_eq!(db.query(READ, &[]).await.unwrap()[0].len(), 2);

        client.batch_execute("DEALLOCATE ALL").await.unwrap();
        let gone = db.query(READ, &[]).await.unwrap_err();
        assert_eq!(gone.code(), Some(&SqlState::INVALID_SQL_STATEMENT_NAME));
        assert_eq!(db.query(READ, &[]).await.unwrap()[0].len(), 2);
    }
}
