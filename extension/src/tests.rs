//! In-database tests of every function and error path (`cargo pgrx test`).

#[pg_schema]
mod tests {}
