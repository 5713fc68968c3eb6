//! PostgreSQL for the tests: the machine's server at `SFCDC_TEST_POSTGRES_URL` is shared, so
//! every test gets a fresh schema (for stores opened in this process) or a fresh database (for
//! `sfcdc run` processes, which take only a URL). Names carry their creation time; what runs
//! more than an hour old left behind is dropped on the way. Without the variable a test says
//! loudly that it skipped its PostgreSQL half; under `CI` it fails instead.

use sqlx::postgres::{PgPool, PgPoolOptions};

/// The PostgreSQL test URL, or a loud skip message (a failure under `CI`).
pub fn postgres_url() -> Option<String> {
    match std::env::var("SFCDC_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            // CI must run everything: a missing PostgreSQL there is a failure, not a skip.
            assert!(
                !super::in_ci(),
                "SFCDC_TEST_POSTGRES_URL is not set, and CI is: CI runs every PostgreSQL test"
            );
            eprintln!(
                "\n*** SKIPPED: SFCDC_TEST_POSTGRES_URL is not set, so the PostgreSQL half of this test did not run. ***\n"
            );
            None
        }
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A new test name, `sfcdc_t_<unix seconds>_<random>`.
fn fresh_name() -> String {
    format!(
        "sfcdc_t_{}_{}",
        now_secs(),
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Drops the test objects that `list` names and that are more than an hour old, with `drop`
/// (`DROP SCHEMA IF EXISTS {} CASCADE`, or the same for a database).
async fn drop_stale(pool: &PgPool, list: &str, drop: &str) {
    let names: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(list.to_owned()))
        .fetch_all(pool)
        .await
        .unwrap();
    for name in names {
        let stamp: u64 = name
            .split('_')
            .nth(2)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if stamp + 3600 < now_secs() {
            let _ = sqlx::query(sqlx::AssertSqlSafe(drop.replace("{}", &name)))
                .execute(pool)
                .await;
        }
    }
}

async fn admin_pool(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap()
}

/// A fresh schema name in the database of `url` (the store creates the schema).
pub async fn fresh_schema(url: &str) -> String {
    let pool = admin_pool(url).await;
    drop_stale(
        &pool,
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'sfcdc_t_%'",
        "DROP SCHEMA IF EXISTS {} CASCADE",
    )
    .await;
    pool.close().await;
    fresh_name()
}

/// A fresh database on the server of `url`; its URL.
pub async fn fresh_database(url: &str) -> String {
    let pool = admin_pool(url).await;
    drop_stale(
        &pool,
        "SELECT datname::text FROM pg_database WHERE datname LIKE 'sfcdc_t_%'",
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
    )
    .await;
    let name = fresh_name();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(url);
    format!("{base}/{name}")
}
