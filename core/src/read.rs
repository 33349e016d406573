//! Argument rules of the read functions (`read_stream`, `read_stream_backward`,
//! `read_category`), checked once before the SQL reads a row.

use crate::envelope::validate_stream_id;
use crate::error::EsError;

/// `max_count`: NULL (no limit) or a count, never negative.
pub fn check_max_count(max_count: Option<i64>) -> Result<(), EsError> {
    match max_count {
        Some(n) if n < 0 => Err(EsError::invalid("max_count", format!("{n} is negative"))),
        _ => Ok(()),
    }
}

/// A stream read's arguments: a valid stream id, a `from_version` of 1 or more (NULL only when
/// reading backward, meaning from the end) and a `max_count` as [`check_max_count`] says.
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

/// `read_category`'s arguments: a category must be given and not be empty.
pub fn check_category_read(category: Option<&str>, max_count: Option<i64>) -> Result<(), EsError> {
    EsError::required("category", category)?;
    check_max_count(max_count)
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

    #[test]
    fn category_read_arguments() {
        assert!(check_category_read(Some("order"), None).is_ok());
        assert!(check_category_read(Some("order"), Some(0)).is_ok());
        let e = check_category_read(None, None).unwrap_err();
        assert_eq!(e.to_string(), "invalid category: must not be NULL");
        let e = check_category_read(Some(""), None).unwrap_err();
        assert_eq!(e.to_string(), "invalid category: must not be empty");
        let e = check_category_read(Some("order"), Some(-2)).unwrap_err();
        assert_eq!(e.to_string(), "invalid max_count: -2 is negative");
    }
}
