//! How the PostgreSQL backend meets faults: SQLSTATEs sorted into the `MetaError` kinds every
//! backend shares (a race is a `Conflict`, never a 500; a full disk is `Full`; a server that
//! is down, restarting or out of connections is `Unavailable`), and the message `open` gives
//! for a URL or server it cannot use.

use super::super::MetaError;

/// The SQLSTATE of an error that came from PostgreSQL.
fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(d) => {
            d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().map(|pg| pg.code().to_string())
        }
        _ => None,
    }
}

/// Sorts an error from PostgreSQL; `None` when it did not come from PostgreSQL.
///
/// - `23505` unique violation, `40001` serialization failure, `40P01` deadlock, `23503`
///   foreign-key violation (another node removed or added a referenced row after this
///   transaction read it): `Conflict`, which the service retries and then answers 503.
/// - `53100` disk full: `Full` (507).
/// - class `08` connection exception, `53` (memory, too many connections), `57P0x` shutdown
///   and start-up, `57014` statement timeout, `55P03` lock timeout, `25006` read-only
///   transaction (a standby): `Unavailable` (503).
pub(in crate::meta) fn classify(e: &sqlx::Error) -> Option<MetaError> {
    let code = sqlstate(e)?;
    let msg = e.to_string();
    Some(match code.as_str() {
        "23505" | "40001" | "40P01" | "23503" => MetaError::Conflict(msg),
        "53100" => MetaError::Full(msg),
        c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57P0") => MetaError::Unavailable(msg),
        "57014" | "55P03" | "25006" => MetaError::Unavailable(msg),
        _ => return None,
    })
}

/// True for a foreign-key violation: the schema refused to orphan a reference.
pub(super) fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    sqlstate(e).as_deref() == Some("23503")
}

/// An error while opening: connection and authentication failures say which server and
/// what to check; anything else is sorted as usual.
pub(super) fn open_error(shown: &str, e: sqlx::Error) -> MetaError {
    let code = sqlstate(&e);
    match (&e, code.as_deref()) {
        (_, Some("28P01" | "28000")) => MetaError::Unusable(format!(
            "PostgreSQL at {shown} refused the login ({e}): check the user and password in database.url \
             (or CAIRN_DATABASE_URL) and pg_hba.conf"
        )),
        (_, Some("3D000")) => MetaError::Unusable(format!(
            "PostgreSQL at {shown}: the database does not exist ({e}); create it (`createdb`) and run `cairn migrate`"
        )),
        (_, Some("42501")) => MetaError::Unusable(format!(
            "PostgreSQL at {shown}: permission denied ({e}); Cairn's user needs to create tables in its database \
             (for `cairn migrate`) and to read and write them"
        )),
        (sqlx::Error::Configuration(_), _) => {
            MetaError::Unusable(format!("database.url {shown} is not a PostgreSQL URL Cairn can use: {e}"))
        }
        (sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut, _) => MetaError::Unavailable(format!(
            "cannot reach PostgreSQL at {shown} ({e}): is the server running and listening there?"
        )),
        _ => e.into(),
    }
}
