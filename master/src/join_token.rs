//! The join token agents present to register, as in Docker Swarm: kept in a file
//! (`--join-token-file`, mode 0600), created on first use, rotated by writing a new one. The master
//! reads the file at every registration, so a rotation takes effect at once, without a restart;
//! agents already admitted keep re-registering without it.

use std::path::Path;

use crate::error::StoreError;

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A new random token (122 random bits).
pub fn generate() -> String {
    format!("agora-{}", uuid::Uuid::new_v4().simple())
}

/// Reads the token in `path`, if the file exists and holds one.
///
/// # Errors
/// [`StoreError::Io`] for an unreadable file.
pub fn read(path: &Path) -> Result<Option<String>, StoreError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_string()).filter(|t| !t.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path, e)),
    }
}

/// Writes `token` to `path` atomically, readable by its owner only.
///
/// # Errors
/// [`StoreError::Io`].
pub fn write(path: &Path, token: &str) -> Result<(), StoreError> {
    agora_ha::store::write_private(path, format!("{token}\n").as_bytes()).map_err(|e| io(path, e))
}

/// The token in `path`, created when the file does not exist yet.
///
/// # Errors
/// [`StoreError::Io`].
pub fn load_or_create(path: &Path) -> Result<String, StoreError> {
    if let Some(t) = read(path)? {
        return Ok(t);
    }
    let token = generate();
    write(path, &token)?;
    Ok(token)
}

/// Replaces the token in `path` with a new one and returns it.
///
/// # Errors
/// [`StoreError::Io`].
pub fn rotate(path: &Path) -> Result<String, StoreError> {
    let token = generate();
    write(path, &token)?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_token_is_created_once_kept_private_and_rotated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secrets/join-token");
        let first = load_or_create(&path).expect("create");
        assert!(first.starts_with("agora-") && first.len() > 30, "{first}");
        assert_eq!(load_or_create(&path).expect("read"), first);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = rotate(&path).expect("rotate");
        assert_ne!(second, first);
        assert_eq!(read(&path).expect("read"), Some(second));
    }
}
