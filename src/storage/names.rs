//! Container and blob names, checked against Azure's rules on every backend.

use object_store::path::Path;
use thiserror::Error;

use super::{STAGING_PREFIX, StorageError};

/// Why a container or blob name is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    /// The container name breaks Azure's container naming rules.
    #[error(
        "invalid container name {0:?}: use 3 to 63 lowercase letters, digits and single \
         hyphens, starting and ending with a letter or digit"
    )]
    Container(String),
    /// The blob name breaks one of the blob naming rules.
    #[error("invalid blob name: {0}")]
    Blob(BlobNameProblem),
}

/// The first rule a blob name breaks.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BlobNameProblem {
    /// Not 1 to 1024 characters long.
    #[error("it has {0} characters; 1 to 1024 are allowed")]
    Length(usize),
    /// A NUL or other control character.
    #[error("it contains a NUL or control character")]
    ControlCharacter,
    /// An invisible format character (Unicode category Cf).
    #[error("it contains the invisible format character U+{code:04X}", code = u32::from(*.0))]
    FormatCharacter(char),
    /// A backslash.
    #[error("it contains a backslash, which Azure reads as '/'")]
    Backslash,
    /// An empty, `.` or `..` path segment.
    #[error("it has an empty, '.' or '..' path segment")]
    DotOrEmptySegment,
    /// A trailing `.`.
    #[error("it ends with '.', which Azure does not support")]
    TrailingDot,
    /// More path segments than Azure allows.
    #[error("it has {0} path segments; at most {max} are allowed", max = MAX_SEGMENTS)]
    TooManySegments(usize),
    /// Under the prefix reserved for staged uploads.
    #[error("names under {prefix}/ are reserved", prefix = STAGING_PREFIX)]
    Reserved,
}

/// A container name that Azure accepts: 3–63 of `a-z`, `0-9`, single `-`, alphanumeric ends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerName(String);

impl ContainerName {
    /// Checks `name` against Azure's container naming rules.
    pub fn parse(name: &str) -> Result<Self, NameError> {
        let valid_chars = name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let alnum_ends = name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric());
        if (3..=63).contains(&name.len()) && valid_chars && alnum_ends && !name.contains("--") {
            Ok(Self(name.to_owned()))
        } else {
            Err(NameError::Container(name.to_owned()))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A blob name: 1–1024 characters in at most 254 `/`-separated segments that are neither empty
/// nor `.`/`..`; no control or format characters (bidi overrides and zero-width characters would
/// let a name pose as another in listings and `Content-Disposition`), no backslash (Azure turns it into `/`, so `a\..\b` would
/// become a `..` segment there), no trailing `.` (Azure does not support it), and not under
/// [`STAGING_PREFIX`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobName(String);

/// Most `/`-separated segments Azure allows in a blob name.
const MAX_SEGMENTS: usize = 254;
/// Longest path segment a local filesystem stores (NAME_MAX on Linux).
const LOCAL_MAX_SEGMENT_BYTES: usize = 255;

impl BlobName {
    /// Checks `name` against the naming rules above.
    pub fn parse(name: &str) -> Result<Self, NameError> {
        let length = name.chars().count();
        let segments: Vec<&str> = name.split('/').collect();
        let problem = if !(1..=1024).contains(&length) {
            Some(BlobNameProblem::Length(length))
        } else if name.chars().any(char::is_control) {
            Some(BlobNameProblem::ControlCharacter)
        } else if let Some(format) = name.chars().find(|&c| is_format_character(c)) {
            Some(BlobNameProblem::FormatCharacter(format))
        } else if name.contains('\\') {
            Some(BlobNameProblem::Backslash)
        } else if segments
            .iter()
            .any(|s| s.is_empty() || *s == "." || *s == "..")
        {
            Some(BlobNameProblem::DotOrEmptySegment)
        } else if name.ends_with('.') {
            Some(BlobNameProblem::TrailingDot)
        } else if segments.len() > MAX_SEGMENTS {
            Some(BlobNameProblem::TooManySegments(segments.len()))
        } else if segments[0] == STAGING_PREFIX {
            Some(BlobNameProblem::Reserved)
        } else {
            None
        };
        match problem {
            Some(problem) => Err(NameError::Blob(problem)),
            None => Ok(Self(name.to_owned())),
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Why a local directory cannot hold this name, if it cannot: a segment longer than a
    /// filename may be, or a last segment that object_store reserves for its own part files
    /// (`#` followed by digits only, as in `scan#2`).
    pub(super) fn local_problem(&self) -> Option<String> {
        if self
            .0
            .split('/')
            .any(|segment| segment.len() > LOCAL_MAX_SEGMENT_BYTES)
        {
            return Some(format!(
                "a path segment is longer than {LOCAL_MAX_SEGMENT_BYTES} bytes"
            ));
        }
        let last = self.0.rsplit('/').next().unwrap_or_default();
        match last.split_once('#') {
            Some((_, suffix))
                if !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()) =>
            {
                Some("the last path segment ends in '#' and digits only".into())
            }
            _ => None,
        }
    }

    pub(super) fn path(&self) -> Result<Path, StorageError> {
        Path::parse(&self.0)
            .map_err(|e| StorageError::InvalidName(format!("invalid blob name: {e}")))
    }
}

/// The characters of Unicode general category Cf (format), as of Unicode 15.1.
const FORMAT_CHARACTERS: [(u32, u32); 21] = [
    (0xAD, 0xAD),
    (0x600, 0x605),
    (0x61C, 0x61C),
    (0x6DD, 0x6DD),
    (0x70F, 0x70F),
    (0x890, 0x891),
    (0x8E2, 0x8E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

fn is_format_character(c: char) -> bool {
    let code = u32::from(c);
    FORMAT_CHARACTERS
        .iter()
        .any(|&(first, last)| (first..=last).contains(&code))
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
    fn format_characters_that_spoof_names_are_refused() {
        for spoof in [
            "invoice\u{202E}fdp.exe",
            "a\u{2066}b",
            "zero\u{200B}width",
            "\u{FEFF}bom",
            "soft\u{AD}hyphen",
            "tag\u{E0041}",
            "mark\u{200E}",
        ] {
            let error = BlobName::parse(spoof).unwrap_err().to_string();
            assert!(error.contains("format character U+"), "{error}");
        }
        // Visible non-ASCII text stays allowed.
        assert!(BlobName::parse("ärzte/東京/مرحبا.txt").is_ok());
    }

    #[test]
    fn local_rules_match_object_stores_part_file_names() {
        for local_only in ["p-42#7", "dir/a#0", "a#b#12"] {
            let name = BlobName::parse(local_only).unwrap();
            let expected = local_only != "a#b#12"; // object_store splits at the first '#'.
            assert_eq!(name.local_problem().is_some(), expected, "{local_only}");
        }
        for fine in ["a#", "a#b", "dir#7/a", "#x1", "a#1b"] {
            assert_eq!(
                BlobName::parse(fine).unwrap().local_problem(),
                None,
                "{fine}"
            );
        }
        assert!(
            BlobName::parse(&"x".repeat(256))
                .unwrap()
                .local_problem()
                .is_some()
        );
    }

    #[test]
    fn parsed_names_keep_their_text_and_map_to_the_same_path() {
        assert_eq!(ContainerName::parse("box-1").unwrap().as_str(), "box-1");
        let blob = BlobName::parse("dir/ünï file.csv").unwrap();
        assert_eq!(blob.as_str(), "dir/ünï file.csv");
        assert_eq!(blob.path().unwrap().as_ref(), "dir/ünï file.csv");
    }

    #[test]
    fn refusals_read_as_clients_see_them() {
        assert_eq!(
            ContainerName::parse("A").unwrap_err().to_string(),
            "invalid container name \"A\": use 3 to 63 lowercase letters, digits and single \
             hyphens, starting and ending with a letter or digit"
        );
        assert_eq!(
            BlobName::parse("a\u{202E}b").unwrap_err().to_string(),
            "invalid blob name: it contains the invisible format character U+202E"
        );
        assert_eq!(
            BlobName::parse(".blobprox-staging/x").unwrap_err(),
            NameError::Blob(BlobNameProblem::Reserved)
        );
        assert_eq!(
            BlobName::parse(".blobprox-staging/x")
                .unwrap_err()
                .to_string(),
            "invalid blob name: names under .blobprox-staging/ are reserved"
        );
    }

    #[test]
    fn blob_names_have_at_most_254_segments() {
        let with_segments = |n: usize| vec!["s"; n].join("/");
        assert!(BlobName::parse(&with_segments(254)).is_ok());
        let refused = BlobName::parse(&with_segments(255))
            .unwrap_err()
            .to_string();
        assert!(refused.contains("255 path segments"), "{refused}");
    }
}
