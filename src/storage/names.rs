//! Container and blob names, checked against Azure's rules on every backend.

use object_store::path::Path;

use super::{STAGING_PREFIX, StorageError};

/// A container name that Azure accepts: 3–63 of `a-z`, `0-9`, single `-`, alphanumeric ends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerName(String);

impl ContainerName {
    /// Checks `name` against Azure's container naming rules.
    pub fn parse(name: &str) -> Result<Self, String> {
        let valid_chars = name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let alnum_ends = name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric());
        if (3..=63).contains(&name.len()) && valid_chars && alnum_ends && !name.contains("--") {
            Ok(Self(name.to_owned()))
        } else {
            Err(format!(
                "invalid container name {name:?}: use 3 to 63 lowercase letters, digits and single \
                 hyphens, starting and ending with a letter or digit"
            ))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A blob name: 1–1024 characters in at most 254 `/`-separated segments that are neither empty
/// nor `.`/`..`; no control characters, no backslash (Azure turns it into `/`, so `a\..\b` would
/// become a `..` segment there), no trailing `.` (Azure does not support it), and not under
/// [`STAGING_PREFIX`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobName(String);

/// Most `/`-separated segments Azure allows in a blob name.
const MAX_SEGMENTS: usize = 254;

impl BlobName {
    /// Checks `name` against the naming rules above.
    pub fn parse(name: &str) -> Result<Self, String> {
        let length = name.chars().count();
        let segments: Vec<&str> = name.split('/').collect();
        let problem = if !(1..=1024).contains(&length) {
            Some(format!("it has {length} characters; 1 to 1024 are allowed"))
        } else if name.chars().any(char::is_control) {
            Some("it contains a NUL or control character".into())
        } else if name.contains('\\') {
            Some("it contains a backslash, which Azure reads as '/'".into())
        } else if segments
            .iter()
            .any(|s| s.is_empty() || *s == "." || *s == "..")
        {
            Some("it has an empty, '.' or '..' path segment".into())
        } else if name.ends_with('.') {
            Some("it ends with '.', which Azure does not support".into())
        } else if segments.len() > MAX_SEGMENTS {
            Some(format!(
                "it has {} path segments; at most {MAX_SEGMENTS} are allowed",
                segments.len()
            ))
        } else if segments[0] == STAGING_PREFIX {
            Some(format!("names under {STAGING_PREFIX}/ are reserved"))
        } else {
            None
        };
        match problem {
            Some(problem) => Err(format!("invalid blob name: {problem}")),
            None => Ok(Self(name.to_owned())),
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(super) fn path(&self) -> Result<Path, StorageError> {
        Path::parse(&self.0)
            .map_err(|e| StorageError::InvalidName(format!("invalid blob name: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_follow_azure_rules() {
        for good in ["abc", "my-container-1", &"a".repeat(63)] {
            assert!(ContainerName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            "ABC",
            "a--b",
            "-abc",
            "abc-",
            "a_b",
            "a.b",
            &"a".repeat(64),
            "ab c",
        ] {
            assert!(ContainerName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn blob_names_refuse_traversal_and_control_characters() {
        for good in [
            "a",
            "dir/file.txt",
            "ünïcødé/文件.csv",
            "a..b",
            ".hidden",
            "a.b/c",
        ] {
            assert!(BlobName::parse(good).is_ok(), "{good}");
        }
        let long = "x".repeat(1025);
        for bad in [
            "", "../x", "a/../b", "./a", "a//b", "/a", "a/", "a\0b", "a\nb", &long,
        ] {
            assert!(BlobName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(BlobName::parse(".blobprox-staging/x").is_err());
    }

    #[test]
    fn parsed_names_keep_their_text_and_map_to_the_same_path() {
        assert_eq!(ContainerName::parse("box-1").unwrap().as_str(), "box-1");
        let blob = BlobName::parse("dir/ünï file.csv").unwrap();
        assert_eq!(blob.as_str(), "dir/ünï file.csv");
        assert_eq!(blob.path().unwrap().as_ref(), "dir/ünï file.csv");
    }

    #[test]
    fn blob_names_have_at_most_254_segments() {
        let with_segments = |n: usize| vec!["s"; n].join("/");
        assert!(BlobName::parse(&with_segments(254)).is_ok());
        let refused = BlobName::parse(&with_segments(255)).unwrap_err();
        assert!(refused.contains("255 path segments"), "{refused}");
    }
}
