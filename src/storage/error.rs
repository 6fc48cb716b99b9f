//! Storage failures, and the one-line summaries of backend errors that name no blob.

use thiserror::Error;

/// Storage failures, in terms a client can act on.
#[derive(Debug, Clone, Error)]
pub enum StorageError {
    /// The container does not exist.
    #[error("container not found")]
    ContainerNotFound,
    /// The blob does not exist.
    #[error("blob not found")]
    BlobNotFound,
    /// A blob already has the name and overwriting was not asked for.
    #[error("blob already exists")]
    AlreadyExists,
    /// The blob changed while it was being read.
    #[error("the blob changed while it was being read")]
    Changed,
    /// The name cannot be stored on this backend.
    #[error("{0}")]
    InvalidName(String),
    /// The name is a directory of other blobs, or runs through a blob (local backend).
    #[error("the blob name collides with an existing blob or blob path")]
    NameConflict,
    /// The storage has no space left for the upload.
    #[error("storage is full: {0}")]
    Full(String),
    /// The storage service refused this proxy's own credentials.
    #[error("storage refused the proxy's credentials: {0}")]
    Unauthorized(String),
    /// The storage service failed or could not be reached.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The storage URL or its settings are unusable.
    #[error("invalid storage configuration: {0}")]
    Config(String),
}

impl From<object_store::Error> for StorageError {
    fn from(error: object_store::Error) -> Self {
        use object_store::Error as E;
        match &error {
            E::NotFound { .. } => StorageError::BlobNotFound,
            E::AlreadyExists { .. } => StorageError::AlreadyExists,
            E::Precondition { .. } | E::NotModified { .. } => StorageError::Changed,
            E::InvalidPath { .. } => {
                StorageError::InvalidName("the blob name cannot be stored on this backend".into())
            }
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
                StorageError::Unauthorized(summarize(&error))
            }
            // Local disk trouble surfaces as generic errors; the OS error tells which.
            _ => match innermost_io_error(&error) {
                Some(io) => StorageError::from_io(io),
                None => StorageError::Unavailable(summarize(&error)),
            },
        }
    }
}

impl StorageError {
    /// Classifies a local disk failure by its OS error.
    pub(super) fn from_io(error: &std::io::Error) -> Self {
        use std::io::ErrorKind;
        match error.kind() {
            ErrorKind::StorageFull => StorageError::Full(summarize(error)),
            ErrorKind::NotADirectory | ErrorKind::IsADirectory => StorageError::NameConflict,
            _ => StorageError::Unavailable(summarize(error)),
        }
    }
}

/// One line about a storage error that names no blob, path or URL (blob names can identify
/// patients, and these texts reach logs and clients). Only texts that cannot hold a name are
/// used: Azure's error code and message when the error carries Azure's XML body, else the OS
/// error, else the kind of HTTP failure or the HTTP status.
pub(super) fn summarize(error: &(dyn std::error::Error + 'static)) -> String {
    let text = error.to_string();
    let tag = |name: &str| {
        let start = text.find(&format!("<{name}>"))? + name.len() + 2;
        let end = text[start..].find(&format!("</{name}>"))? + start;
        text[start..end].lines().next().map(str::trim)
    };
    if let (Some(code), Some(message)) = (tag("Code"), tag("Message")) {
        return format!("Azure answered {code}: {message}");
    }
    if let Some(io) = innermost_io_error(error) {
        // A raw OS error prints only its description; other I/O errors may carry a path.
        return match io.raw_os_error() {
            Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
            None => io.kind().to_string(),
        };
    }
    let mut chain = std::iter::successors(Some(error), |e| e.source());
    if let Some(http) = chain.find_map(|e| e.downcast_ref::<object_store::client::HttpError>()) {
        return format!("the request to storage failed ({:?})", http.kind());
    }
    // object_store's request errors read "... status code: 503 Service Unavailable: ...".
    let status = text
        .split_once("status code: ")
        .and_then(|(_, rest)| rest.get(..3))
        .filter(|code| code.bytes().all(|b| b.is_ascii_digit()));
    match status {
        Some(code) => format!("storage answered HTTP {code}"),
        None => "the storage backend failed".into(),
    }
}

/// The innermost I/O error among the causes of `error`.
pub(super) fn innermost_io_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a std::io::Error> {
    std::iter::successors(Some(error), |e| e.source())
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .last()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_become_one_line_without_names() {
        let azure = std::io::Error::other(
            "Error performing GET http://h/a/c/patient-42.csv in 3ms - 403 Forbidden: \
             <?xml version=\"1.0\"?>\n<Error>\n  <Code>AuthorizationFailure</Code>\n  \
             <Message>Server failed to authenticate the request.\nRequestId:1</Message>\n</Error>",
        );
        assert_eq!(
            summarize(&azure),
            "Azure answered AuthorizationFailure: Server failed to authenticate the request."
        );
        let local = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(Named {
                text: "Unable to copy file from /data/c/patient-42.csv".into(),
                source: Some(std::io::Error::from_raw_os_error(28)),
            }),
        };
        let summary = summarize(&local);
        assert!(summary.starts_with("No space left on device"), "{summary}");
        assert!(
            matches!(StorageError::from(local), StorageError::Full(text) if !text.contains("patient"))
        );
        // object_store's own refusal of a local name ends with the name itself.
        let refused = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(Named {
                text: "Filenames containing trailing '/#\\d+/' are not supported: dir/p-42#7"
                    .into(),
                source: None,
            }),
        };
        let error = StorageError::from(refused).to_string();
        assert!(!error.contains("p-42"), "{error}");
        let path_in_io = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(std::io::Error::other("cannot open /data/c/patient-42.csv")),
        };
        let error = StorageError::from(path_in_io).to_string();
        assert!(!error.contains("patient"), "{error}");
    }

    /// An error whose text names a blob, as object_store's local errors do.
    #[derive(Debug)]
    struct Named {
        text: String,
        source: Option<std::io::Error>,
    }

    impl std::fmt::Display for Named {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match &self.source {
                Some(source) => write!(f, "{}: {source}", self.text),
                None => f.write_str(&self.text),
            }
        }
    }

    impl std::error::Error for Named {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.source.as_ref().map(|e| e as _)
        }
    }
}
