//! One upload as a whole: its data key, its size limit, the key wrapped for its recipients, and
//! publishing that runs to its end.

use std::collections::BTreeMap;

use super::{BlobFormat, BlobWriter, TransferError};
use crate::crypto::data_key::DataKey;
use crate::crypto::rsa::RecipientKey;
use crate::keys::ProxyKeys;
use crate::storage::{BlobName, Container, StorageError};

/// Where an upload's data key comes from.
#[derive(Clone)]
pub enum DataKeyPolicy {
    /// Every upload is encrypted under this one key, as the original did (`STATIC_DATA_KEY`).
    Static(DataKey),
    /// Every upload gets a fresh random key.
    Fresh,
}

/// What every upload follows.
#[derive(Clone)]
pub struct UploadRules {
    /// Where the data key comes from.
    pub data_key: DataKeyPolicy,
    /// The format the blob is written in.
    pub format: BlobFormat,
    /// Largest plaintext accepted, in bytes; `None` for no limit.
    pub max_bytes: Option<u64>,
}

/// An upload in progress: plaintext is encrypted into a staged blob that only
/// [`Upload::publish`] makes visible. Dropped unpublished, the staged blob is removed.
pub struct Upload {
    writer: BlobWriter,
    data_key: DataKey,
    max_bytes: Option<u64>,
}

impl Upload {
    /// Starts staging `blob` under `rules`. With `create_only` an existing blob is refused at
    /// once, before any byte is stored; publishing checks again, atomically.
    pub async fn start(
        container: &Container,
        blob: &BlobName,
        rules: &UploadRules,
        create_only: bool,
    ) -> Result<Self, TransferError> {
        if create_only && container.exists(blob).await? {
            return Err(StorageError::AlreadyExists.into());
        }
        let data_key = match &rules.data_key {
            DataKeyPolicy::Static(key) => key.clone(),
            DataKeyPolicy::Fresh => DataKey::generate()?,
        };
        let writer = BlobWriter::start(container, blob, &data_key, rules.format).await?;
        Ok(Self {
            writer,
            data_key,
            max_bytes: rules.max_bytes,
        })
    }

    /// Encrypts and stores the next piece of plaintext; refused once the whole passes the limit.
    pub async fn write(&mut self, plaintext: &[u8]) -> Result<(), TransferError> {
        self.writer.write(plaintext).await?;
        self.check_size()
    }

    /// Refuses an upload whose plaintext has passed the limit.
    fn check_size(&self) -> Result<(), TransferError> {
        match self.max_bytes {
            Some(limit) if self.writer.plaintext_len() > limit => {
                Err(TransferError::TooLarge { limit })
            }
            _ => Ok(()),
        }
    }

    /// The data key wrapped for each recipient, by recipient id.
    pub fn wrap_for(
        &self,
        recipients: &[(String, RecipientKey)],
        own_keys: &ProxyKeys,
    ) -> Result<BTreeMap<String, String>, TransferError> {
        wrap_for_recipients(&self.data_key, recipients, own_keys)
    }

    /// Publishes the blob (only if its name is free, unless `overwrite`); never one past the
    /// size limit. Publishing runs to its end even if the caller stops waiting, so that it never
    /// stops halfway through a storage operation.
    pub async fn publish(self, overwrite: bool) -> Result<(), TransferError> {
        self.check_size()?;
        tokio::spawn(self.writer.commit(overwrite))
            .await
            .map_err(|e| StorageError::Unavailable(e.to_string()))?
    }
}

/// `data_key` wrapped for each recipient, by recipient id; what is wrapped for this proxy itself
/// is remembered in `own_keys`, so that it unwraps without RSA.
pub fn wrap_for_recipients(
    data_key: &DataKey,
    recipients: &[(String, RecipientKey)],
    own_keys: &ProxyKeys,
) -> Result<BTreeMap<String, String>, TransferError> {
    let mut wrapped_keys = BTreeMap::new();
    for (id, recipient) in recipients {
        let wrapped = recipient
            .wrap_key(data_key)
            .map_err(TransferError::Crypto)?;
        own_keys.remember_wrapped(recipient, &wrapped, data_key);
        wrapped_keys.insert(id.clone(), wrapped);
    }
    Ok(wrapped_keys)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::FutureExt;

    use super::*;
    use crate::storage::memory_container;
    use crate::transfer::opened::tests::read;

    fn rules(data_key: DataKeyPolicy, max_bytes: Option<u64>) -> UploadRules {
        UploadRules {
            data_key,
            format: BlobFormat::Stream,
            max_bytes,
        }
    }

    /// A container, the blob `name` in it, a static key and the rules that use it.
    async fn with_static_key(name: &str) -> (Container, BlobName, DataKey, UploadRules) {
        let key = DataKey::generate().unwrap();
        let static_rules = rules(DataKeyPolicy::Static(key.clone()), None);
        let blob = BlobName::parse(name).unwrap();
        (memory_container().await, blob, key, static_rules)
    }

    /// An upload of `plaintext` to `blob`, started and written, not yet published.
    async fn written(
        container: &Container,
        blob: &BlobName,
        rules: &UploadRules,
        create_only: bool,
        plaintext: &[u8],
    ) -> Upload {
        let mut upload = Upload::start(container, blob, rules, create_only)
            .await
            .unwrap();
        upload.write(plaintext).await.unwrap();
        upload
    }

    #[tokio::test]
    async fn an_upload_past_the_limit_publishes_nothing() {
        let container = memory_container().await;
        let blob = BlobName::parse("big").unwrap();
        let limited = rules(DataKeyPolicy::Fresh, Some(10));
        let mut upload = written(&container, &blob, &limited, false, b"0123456789").await;
        let refused = upload.write(b"!").await.unwrap_err();
        assert!(
            matches!(refused, TransferError::TooLarge { limit: 10 }),
            "{refused}"
        );
        let refused = upload.publish(true).await.unwrap_err();
        assert!(matches!(refused, TransferError::TooLarge { limit: 10 }));
        assert!(!container.exists(&blob).await.unwrap());
    }

    #[tokio::test]
    async fn the_static_policy_encrypts_under_the_static_key() {
        let (container, blob, key, static_rules) = with_static_key("static").await;
        written(
            &container,
            &blob,
            &static_rules,
            false,
            b"same key every time",
        )
        .await
        .publish(false)
        .await
        .unwrap();
        assert_eq!(
            read((container, blob, key), None).await,
            b"same key every time"
        );
    }

    #[tokio::test]
    async fn publishing_runs_to_its_end_when_the_caller_leaves() {
        let container = memory_container().await;
        let blob = BlobName::parse("left").unwrap();
        let fresh = rules(DataKeyPolicy::Fresh, None);
        let upload = written(&container, &blob, &fresh, false, &vec![7; 3 << 20]).await;
        // Polled once, then dropped, as when the client's connection closes.
        assert!(upload.publish(true).now_or_never().is_none());
        let mut published = false;
        for _ in 0..100 {
            if container.exists(&blob).await.unwrap() {
                published = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(published);
    }

    #[tokio::test]
    async fn create_only_uploads_leave_an_existing_blob_alone() {
        let (container, blob, key, static_rules) = with_static_key("taken").await;
        let first = written(&container, &blob, &static_rules, true, b"first").await;
        // Started while the name was free; the publish of the first takes it meanwhile.
        let second = written(&container, &blob, &static_rules, true, b"second").await;
        first.publish(false).await.unwrap();
        let refused = Upload::start(&container, &blob, &static_rules, true).await;
        assert!(matches!(
            refused,
            Err(TransferError::Storage(StorageError::AlreadyExists))
        ));
        assert!(matches!(
            second.publish(false).await,
            Err(TransferError::Storage(StorageError::AlreadyExists))
        ));
        assert_eq!(read((container, blob, key), None).await, b"first");
    }
}
