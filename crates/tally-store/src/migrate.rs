//! Forward-only schema migrations, compiled into the binary.
//!
//! Each `migrations/NNNN_name.sql` file runs once, in order, recorded in
//! `schema_migrations` with a checksum of its text. The whole run is one
//! transaction under a transaction-level advisory lock, so several processes
//! starting at once (a rollout of many workers) apply each migration exactly
//! once and never see a half-migrated schema; a failing migration leaves the
//! database as it was. Editing a file after it was applied is refused rather
//! than silently ignored.

use serde::Serialize;
use tokio_postgres::{Client, IsolationLevel, NoTls};

use crate::error::StoreError;
use crate::locks;
use crate::tx::{self, Budget};

/// A migration known to this build.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its number, from the file name; applied in increasing order.
    pub version: i32,
    /// Its name, from the file name.
    pub name: &'static str,
    /// The SQL text.
    pub sql: &'static str,
}

/// Every migration, in order. A test checks this list against the directory.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "core_schema",
        sql: include_str!("../migrations/0001_core_schema.sql"),
    },
    Migration {
        version: 2,
        name: "leaderboards_and_standings",
        sql: include_str!("../migrations/0002_leaderboards_and_standings.sql"),
    },
    Migration {
        version: 3,
        name: "outbox_and_repair",
        sql: include_str!("../migrations/0003_outbox_and_repair.sql"),
    },
];

/// A migration applied by one [`migrate`] call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedMigration {
    /// Its number.
    pub version: i32,
    /// Its name.
    pub name: String,
    /// The checksum recorded for it.
    pub checksum: String,
}

impl Migration {
    /// FNV-1a (64 bit) of the SQL text, as hex. It detects edits of applied
    /// files; it is not meant to resist deliberate collisions.
    pub fn checksum(&self) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self.sql.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{hash:016x}")
    }
}

/// Applies the pending migrations and returns them (empty when up to date).
pub async fn migrate(client: &mut Client) -> Result<Vec<AppliedMigration>, StoreError> {
    // READ COMMITTED: after waiting for the advisory lock, the read of
    // schema_migrations must see what the previous holder committed; a
    // REPEATABLE READ snapshot would date from before the wait and apply
    // the same migrations again.
    let tx = tx::begin(client, IsolationLevel::ReadCommitted, Budget::UNBOUNDED).await?;
    // Lock before anything else, even before creating the bookkeeping table:
    // two concurrent CREATE TABLE IF NOT EXISTS can still collide.
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&locks::CLASS, &locks::MIGRATE],
    )
    .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             checksum   text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let recorded = tx
        .query(
            "SELECT version, name, checksum FROM schema_migrations ORDER BY version",
            &[],
        )
        .await?;

    let mut applied_versions = Vec::with_capacity(recorded.len());
    for row in &recorded {
        let version: i32 = row.get(0);
        let name: String = row.get(1);
        let checksum: String = row.get(2);
        let Some(known) = MIGRATIONS.iter().find(|m| m.version == version) else {
            return Err(StoreError::UnknownMigration { version, name });
        };
        let current = known.checksum();
        if current != checksum {
            return Err(StoreError::MigrationChecksum {
                version,
                name,
                recorded: checksum,
                current,
            });
        }
        applied_versions.push(version);
    }

    let mut applied = Vec::new();
    for migration in MIGRATIONS {
        if applied_versions.contains(&migration.version) {
            continue;
        }
        tracing::info!(version = migration.version, name = migration.name, "applying migration");
        tx.batch_execute(migration.sql).await?;
        let checksum = migration.checksum();
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&migration.version, &migration.name, &checksum],
        )
        .await?;
        applied.push(AppliedMigration {
            version: migration.version,
            name: migration.name.to_owned(),
            checksum,
        });
    }
    tx.commit().await?;
    Ok(applied)
}

/// Connects to `database_url`, applies the pending migrations, disconnects.
pub async fn migrate_url(database_url: &str) -> Result<Vec<AppliedMigration>, StoreError> {
    let (mut client, connection) = tokio_postgres::connect(database_url, NoTls).await?;
    let driver = tokio::spawn(connection);
    let result = migrate(&mut client).await;
    drop(client);
    // The connection future ends once the client is gone; its own error, if
    // any, already surfaced through the client.
    let _ = driver.await;
    result
}
