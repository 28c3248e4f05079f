//! Reading a column of a row: by name, and never by panicking. `Row::get` panics when the stored type is
//! not the one asked for (a migration that changed a column, a wrong alias), which on a request path
//! would take the request's task down; [`col`] turns that into [`StoreError::Corrupt`] instead.

use tokio_postgres::Row;
use tokio_postgres::types::FromSql;
use wallet_actors::StoreError;

/// The value of the column `name` of `row`, or `Corrupt` naming the column when it is missing or of
/// another type.
pub(crate) fn col<'a, T: FromSql<'a>>(row: &'a Row, name: &str) -> Result<T, StoreError> {
    row.try_get(name)
        .map_err(|e| StoreError::Corrupt(format!("column {name}: {e}")))
}
