//! Operator API keys: loaded once at startup (a file with one key per line,
//! and/or a comma-separated list from the environment) and checked on every
//! OperatorService call by a tonic interceptor, so unary and streaming calls
//! alike answer UNAUTHENTICATED without a valid `authorization: Bearer <key>`.
//!
//! Keys are compared in constant time, so response timing does not tell an
//! attacker how much of a guess was right.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tonic::{Request, Status};

/// Shortest key accepted: shorter ones are too easy to guess.
pub const MIN_KEY_LEN: usize = 16;

/// Why the operator keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The keys file cannot be read.
    #[error("operator keys file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A key is too short.
    #[error("operator key {origin}: shorter than {MIN_KEY_LEN} characters")]
    TooShort { origin: String },
    /// A key contains characters that cannot appear in a gRPC header.
    #[error("operator key {origin}: only visible ASCII characters are allowed")]
    BadCharacters { origin: String },
}

/// The accepted operator API keys.
#[derive(Clone, Default)]
pub struct OperatorKeys {
    keys: Arc<Vec<Vec<u8>>>,
}

impl std::fmt::Debug for OperatorKeys {
    /// Never prints the keys themselves.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OperatorKeys({} keys)", self.keys.len())
    }
}

impl OperatorKeys {
    /// Loads the keys of `file` (one per line; blank lines and `#` comments
    /// skipped) and of `list` (comma-separated). Warns when the file can be
    /// read by anyone.
    pub fn load(file: Option<&Path>, list: Option<&str>) -> Result<OperatorKeys, KeysError> {
        let mut keys = Vec::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| KeysError::Read {
                path: path.to_owned(),
                source,
            })?;
            warn_if_world_readable(path);
            for (i, line) in text.lines().enumerate() {
                let key = line.trim();
                if key.is_empty() || key.starts_with('#') {
                    continue;
                }
                keys.push(checked(key, || format!("at {}:{}", path.display(), i + 1))?);
            }
        }
        if let Some(list) = list {
            for (i, key) in list.split(',').map(str::trim).enumerate() {
                if !key.is_empty() {
                    keys.push(checked(key, || {
                        format!("#{} of CROWD_OPERATOR_KEYS", i + 1)
                    })?);
                }
            }
        }
        Ok(OperatorKeys {
            keys: Arc::new(keys),
        })
    }

    /// Keys given directly, e.g. by tests.
    pub fn from_keys<I: IntoIterator<Item = S>, S: AsRef<str>>(keys: I) -> OperatorKeys {
        OperatorKeys {
            keys: Arc::new(
                keys.into_iter()
                    .map(|k| k.as_ref().as_bytes().to_vec())
                    .collect(),
            ),
        }
    }

    /// How many keys are accepted.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is configured (every operator call is refused).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `candidate` is one of the keys. Every key is compared, each in
    /// constant time.
    pub fn accepts(&self, candidate: &[u8]) -> bool {
        self.keys
            .iter()
            .fold(false, |found, key| found | constant_time_eq(key, candidate))
    }

    /// The interceptor guarding the operator service.
    pub fn check(&self, request: Request<()>) -> Result<Request<()>, Status> {
        if self.is_empty() {
            return Err(Status::unauthenticated(
                "no operator keys are configured on this server",
            ));
        }
        let header = request.metadata().get("authorization").ok_or_else(|| {
            Status::unauthenticated("authorization: missing; send `Bearer <key>`")
        })?;
        let key = header
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .ok_or_else(|| Status::unauthenticated("authorization: expected `Bearer <key>`"))?;
        if self.accepts(key) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(
                "authorization: unknown operator key",
            ))
        }
    }
}

fn checked(key: &str, origin: impl Fn() -> String) -> Result<Vec<u8>, KeysError> {
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(KeysError::BadCharacters { origin: origin() });
    }
    if key.len() < MIN_KEY_LEN {
        return Err(KeysError::TooShort { origin: origin() });
    }
    Ok(key.as_bytes().to_vec())
}

/// Equal length and equal bytes, without an early exit on the first
/// difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(unix)]
fn warn_if_world_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o004 != 0
    {
        tracing::warn!(
            path = %path.display(),
            "operator keys file is readable by every user; chmod 600 it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_world_readable(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef-key";

    fn call(header: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(h) = header {
            request
                .metadata_mut()
                .insert("authorization", h.parse().unwrap());
        }
        request
    }

    #[test]
    fn only_a_configured_bearer_key_passes() {
        let keys = OperatorKeys::from_keys([KEY, "another-key-0123456789"]);
        assert!(keys.check(call(Some(&format!("Bearer {KEY}")))).is_ok());
        let refused = |h| keys.check(call(h)).unwrap_err();
        assert_eq!(refused(None).code(), tonic::Code::Unauthenticated);
        assert!(refused(None).message().contains("missing"));
        assert!(refused(Some(KEY)).message().contains("Bearer"));
        assert!(
            refused(Some("Bearer 0123456789abcdef-kez"))
                .message()
                .contains("unknown")
        );
        let none = OperatorKeys::default();
        assert!(
            none.check(call(Some(&format!("Bearer {KEY}"))))
                .unwrap_err()
                .message()
                .contains("no operator keys")
        );
    }

    #[test]
    fn comparison_needs_equal_length_and_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn keys_load_from_a_file_and_a_list() {
        let dir = std::env::temp_dir().join(format!("crowd-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keys");
        std::fs::write(&file, format!("# operators\n{KEY}\n\n")).unwrap();
        let keys =
            OperatorKeys::load(Some(&file), Some("list-key-0123456789, ")).expect("keys load");
        assert_eq!(keys.len(), 2);
        assert!(keys.accepts(KEY.as_bytes()));
        assert!(keys.accepts(b"list-key-0123456789"));

        std::fs::write(&file, "short\n").unwrap();
        let err = OperatorKeys::load(Some(&file), None)
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("keys:1: shorter than 16 characters"), "{err}");
        let missing = dir.join("absent");
        let err = OperatorKeys::load(Some(&missing), None)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("operator keys file "), "{err}");
        assert!(err.contains("absent"), "{err}");
        let err = OperatorKeys::load(None, Some("has space in it 0123")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "operator key #1 of CROWD_OPERATOR_KEYS: only visible ASCII characters are allowed"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
