//! Which snapshots may be saved: rules `save_snapshot` and `delete_snapshots` check before they
//! touch a table.

use crate::error::EsError;

/// Why a stream cannot have a snapshot at `version`, if it cannot; `current` is the stream's
/// version (0 when it does not exist).
pub fn check_version(stream: &str, version: i64, current: i64) -> Result<(), EsError> {
    let reason = if version < 1 {
        format!("{version} is not a stream version (versions start at 1)")
    } else if current == 0 {
        format!("stream \"{stream}\" does not exist, so it has no version {version}")
    } else if version > current {
        format!("stream \"{stream}\" has no version {version} (it is at version {current})")
    } else {
        return Ok(());
    };
    Err(EsError::invalid("stream_version", reason))
}

/// A snapshot name that must be given: neither NULL nor empty.
pub fn check_name(name: Option<&str>) -> Result<&str, EsError> {
    EsError::required("snapshot_name", name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_versions_must_exist() {
        assert!(check_version("s", 3, 3).is_ok());
        assert!(check_version("s", 1, 3).is_ok());
        let e = check_version("s", 4, 3).unwrap_err();
        assert_eq!(e.sqlstate(), "22023");
        assert_eq!(
            e.to_string(),
            "invalid stream_version: stream \"s\" has no version 4 (it is at version 3)"
        );
        let e = check_version("s", 1, 0).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = check_version("s", 0, 3).unwrap_err();
        assert!(e.to_string().contains("versions start at 1"), "{e}");
    }

    #[test]
    fn snapshot_names_must_be_given() {
        assert_eq!(check_name(Some("x")), Ok("x"));
        assert!(check_name(None).is_err());
        assert_eq!(check_name(Some("")).unwrap_err().sqlstate(), "22023");
    }
}
