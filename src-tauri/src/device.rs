//! This installation's device id (`client.device` in `hello`): random, made on first run and
//! kept in the config directory, so that a block follows a person to their next session. Only
//! the server sees it.

use std::path::Path;

use rand::Rng;

const FILE_NAME: &str = "device-id";

/// The id kept in `dir`, made (and written, readable only by the user) when there is none or
/// the file does not hold a valid one. An unwritable directory still gives an id, for this run.
pub fn device_id(dir: &Path) -> String {
    let path = dir.join(FILE_NAME);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim();
        if duet_proto::valid_device_id(id) {
            return id.to_string();
        }
    }
    let id: String = (0..32).map(|_| format!("{:x}", rand::rng().random_range(0..16u8))).collect();
    let written = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, &id));
    #[cfg(unix)]
    if written.is_ok() {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    if let Err(e) = written {
        tracing::warn!(error = %e, "the device id could not be saved; blocks hold for this run only");
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = device_id(dir.path());
        assert!(duet_proto::valid_device_id(&first), "{first}");
        assert_eq!(device_id(dir.path()), first);
    }

    #[test]
    fn a_damaged_file_gets_a_fresh_id() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "not an id\u{0}").unwrap();
        let id = device_id(dir.path());
        assert!(duet_proto::valid_device_id(&id));
        assert_eq!(std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap(), id);
    }
}
