//! The change feed on PostgreSQL (`MetadataStore::change_feed`): LISTEN/NOTIFY on one
//! channel. A write transaction that changed a repository's manifests or tags sends one
//! `pg_notify(CHANNEL, <repository>)` per such repository as its last statement before
//! COMMIT, so PostgreSQL delivers it to every listening node if and only if the transaction
//! commits, after it is visible. Each node listens on one connection of its own; when that
//! connection is lost, notifications sent meanwhile are gone, so the feed yields a `Gap`
//! (caches drop everything) and listens again.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use sqlx::postgres::{PgListener, PgPool};
use sqlx::{Postgres, Transaction};

use crate::meta::{Change, ChangeFeed, MetaError};

/// The channel every node listens on; the payload is a repository name.
pub(super) const CHANNEL: &str = "cairn_changes";

/// How long the feed waits before listening again after the connection failed.
const RETRY: Duration = Duration::from_secs(1);

/// Announces `changed` repositories inside `tx` (delivered at commit); nothing when empty.
pub(super) async fn announce(
    tx: &mut Transaction<'static, Postgres>,
    changed: &BTreeSet<String>,
) -> Result<(), MetaError> {
    if changed.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = changed.iter().map(String::as_str).collect();
    sqlx::query("SELECT pg_notify($1, r) FROM unnest($2::text[]) r")
        .bind(CHANNEL)
        .bind(names)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Listens on [`CHANNEL`] over a connection taken from `pool` (kept for the feed's life).
pub(super) async fn feed(pool: &PgPool) -> Result<ChangeFeed, MetaError> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    let stream = futures::stream::unfold(listener, |mut listener| async move {
        let change = match listener.try_recv().await {
            Ok(Some(n)) => Change::Repository(n.payload().to_owned()),
            // The connection was lost; the next `try_recv` connects and listens again.
            Ok(None) => Change::Gap,
            Err(e) => {
                tracing::warn!(error = %e, "the change feed cannot listen; cached reads expire by themselves meanwhile");
                tokio::time::sleep(RETRY).await;
                Change::Gap
            }
        };
        Some((change, listener))
    });
    Ok(stream.boxed())
}
