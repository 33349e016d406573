//! The argument rules of `replay` and `aggregate`, checked before any event is read.

use crate::error::EsError;

/// `replay`'s `until_version`: NULL (the whole stream) or a version, never negative.
pub fn check_until_version(until_version: Option<i64>) -> Result<Option<i64>, EsError> {
    match until_version {
        Some(v) if v < 0 => Err(EsError::invalid("until_version", format!("{v} is negative"))),
        v => Ok(v),
    }
}

/// `replay`'s `snapshot_name`: NULL (derived from the reducer) or a name, never empty.
pub fn check_snapshot_name(name: Option<&str>) -> Result<(), EsError> {
    match name {
        Some("") => Err(EsError::invalid("snapshot_name", "must not be empty")),
        _ => Ok(()),
    }
}

/// `aggregate`'s `snapshot_every`: NULL (never save) or a positive number of events.
pub fn check_snapshot_every(every: Option<i64>) -> Result<Option<i64>, EsError> {
    match every {
        Some(n) if n < 1 => Err(EsError::invalid(
            "snapshot_every",
            format!("{n} is not positive (use NULL to never save a snapshot)"),
        )),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_version_is_null_or_not_negative() {
        assert_eq!(check_until_version(None), Ok(None));
        assert_eq!(check_until_version(Some(0)), Ok(Some(0)));
        assert_eq!(check_until_version(Some(7)), Ok(Some(7)));
        let e = check_until_version(Some(-1)).unwrap_err();
        assert_eq!(e.sqlstate(), "22023");
        assert_eq!(e.to_string(), "invalid until_version: -1 is negative");
    }

    #[test]
    fn snapshot_name_may_be_null_but_not_empty() {
        assert!(check_snapshot_name(None).is_ok());
        assert!(check_snapshot_name(Some("counter")).is_ok());
        let e = check_snapshot_name(Some("")).unwrap_err();
        assert_eq!(e.to_string(), "invalid snapshot_name: must not be empty");
    }

    #[test]
    fn snapshot_every_is_null_or_positive() {
        assert_eq!(check_snapshot_every(None), Ok(None));
        assert_eq!(check_snapshot_every(Some(1)), Ok(Some(1)));
        for n in [0, -5] {
            let e = check_snapshot_every(Some(n)).unwrap_err();
            assert_eq!(e.sqlstate(), "22023");
            assert!(e.to_string().contains("use NULL to never save"), "{e}");
        }
    }
}
