//! Argument checks for the read functions. The reads themselves are SQL (sql/finalize.sql) so
//! that the planner inlines them; these checks sit in their WHERE clause as a one-time filter.

use pgrx::prelude::*;

use crate::envelope::validate_stream_id;
use crate::error::{EsError, OrRaise};

fn check_max_count(max_count: Option<i64>) -> Result<(), EsError> {
    match max_count {
        Some(n) if n < 0 => Err(EsError::invalid("max_count", format!("{n} is negative"))),
        _ => Ok(()),
    }
}

pub fn check_stream_read(
    stream_id: Option<&str>,
    from_version: Option<i64>,
    backward: bool,
    max_count: Option<i64>,
) -> Result<(), EsError> {
    validate_stream_id(stream_id)?;
    match from_version {
        None if !backward => {
            return Err(EsError::invalid(
                "from_version",
                "must not be NULL (the first version is 1)",
            ))
        }
        Some(v) if v < 1 => {
            return Err(EsError::invalid(
                "from_version",
                format!("{v} is not a stream version (versions start at 1)"),
            ))
        }
        _ => {}
    }
    check_max_count(max_count)
}

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
    match category {
        None => Err(EsError::invalid("category", "must not be NULL")),
        Some(c) if c.is_empty() => Err(EsError::invalid("category", "must not be empty")),
        Some(_) => check_max_count(max_count),
    }
    .or_raise();
    true
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn stream_read_arguments() {
        assert!(check_stream_read(Some("s"), Some(1), false, None).is_ok());
        assert!(check_stream_read(Some("s"), None, true, Some(0)).is_ok());
        let e = check_stream_read(Some("s"), Some(0), false, None).unwrap_err();
        assert!(e.to_string().starts_with("invalid from_version"), "{e}");
        let e = check_stream_read(Some("s"), None, false, None).unwrap_err();
        assert!(e.to_string().starts_with("invalid from_version"), "{e}");
        let e = check_stream_read(Some("s"), Some(1), false, Some(-1)).unwrap_err();
        assert_eq!(e.to_string(), "invalid max_count: -1 is negative");
        let e = check_stream_read(Some(""), Some(1), false, None).unwrap_err();
        assert_eq!(e.sqlstate(), "22023");
    }
}
