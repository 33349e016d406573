//! Argument checks for the read functions. The reads themselves are SQL (sql/finalize.sql) so
//! that the planner inlines them; these checks sit in their WHERE clause as a one-time filter.

use pgrx::prelude::*;

use eventstore_core::read::{check_category_read, check_max_count, check_stream_read};

use crate::error::OrRaise;

#[pg_extern(immutable, parallel_safe, name = "_check_stream_read")]
fn check_stream_read_sql(
    stream_id: Option<&str>,
    from_version: Option<i64>,
    backward: bool,
    max_count: Option<i64>,
) -> bool {
    check_stream_read(stream_id, from_version, backward, max_count).or_raise();
    true
}

#[pg_extern(immutable, parallel_safe, name = "_check_page_read")]
fn check_page_read_sql(max_count: Option<i64>) -> bool {
    check_max_count(max_count).or_raise();
    true
}

#[pg_extern(immutable, parallel_safe, name = "_check_category_read")]
fn check_category_read_sql(category: Option<&str>, max_count: Option<i64>) -> bool {
    check_category_read(category, max_count).or_raise();
    true
}
