//! Opening a stored blob: checking its key and streaming its authenticated plaintext.

use std::ops::Range;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use super::segments::SegmentReader;
use super::{BlobFormat, TransferError};
use crate::crypto::CryptoError;
use crate::crypto::data_key::DataKey;
use crate::crypto::fernet::{self, FernetDecryptor, FernetVerifier, VerifiedToken};
use crate::crypto::stream::{self, SegmentKey, StreamHeader, StreamLayout};
use crate::storage::{BlobInfo, BlobName, Container, ContainerName, Storage, StorageError};

/// Plaintext pieces queued between decryption and the client.
const DOWNLOAD_QUEUE: usize = 2;
/// Plaintext bytes decrypted into one piece for the client: writes this large cost the socket a
/// fraction of what one write per 64 KiB segment did.
const PIECE_BYTES: u64 = 512 * 1024;
/// Stored size up to which a blob is read whole when opened: a stream blob of one default
/// segment is its header and its last segment, so a small download is one storage operation.
const WHOLE_READ_MAX: u64 =
    (stream::HEADER_LEN + stream::DEFAULT_SEGMENT_SIZE as usize + stream::TAG_LEN) as u64;
/// What one download reserves from the buffer budget while it runs: its queued pieces, the piece
/// being decrypted and the storage chunk it is decrypted from (1 MiB from the local backend).
const DOWNLOAD_BUFFER_BYTES: usize = (DOWNLOAD_QUEUE + 1) * PIECE_BYTES as usize + 1024 * 1024;

/// How an opened blob is laid out.
enum Layout {
    /// A Fernet token whose MAC has been checked.
    Fernet(VerifiedToken),
    /// A stream blob whose key commitment and last segment have been checked.
    Stream {
        key: SegmentKey,
        layout: StreamLayout,
        /// The last segment's authenticated plaintext, kept from the check: tail ranges and
        /// one-segment blobs are answered without reading storage again.
        last_plaintext: Bytes,
    },
}

/// A stored blob whose key has been checked, ready to stream its plaintext.
pub struct OpenedBlob {
    container: Container,
    blob: BlobName,
    info: BlobInfo,
    key: DataKey,
    layout: Layout,
}

impl OpenedBlob {
    /// [`Self::open`] of `blob` in the container `container` of `storage`; a missing container
    /// is a missing blob, so that a reader learns no more than that the blob is not there.
    pub async fn find(
        storage: &Storage,
        container: &ContainerName,
        blob: BlobName,
        key: DataKey,
    ) -> Result<Self, TransferError> {
        let container = storage
            .container(container)
            .await
            .map_err(|error| match error {
                StorageError::ContainerNotFound => StorageError::BlobNotFound,
                other => other,
            })?;
        Self::open(container, blob, key).await
    }

    /// Finds the blob, recognises its format and checks that `key` opens it.
    ///
    /// For a stream blob this checks the key commitment and the last segment (so a truncated
    /// blob is refused before any byte is sent). For a Fernet token it reads the whole blob once
    /// to check its MAC, so that no unauthenticated byte is ever released.
    pub async fn open(
        container: Container,
        blob: BlobName,
        key: DataKey,
    ) -> Result<Self, TransferError> {
        let (info, head) = container
            .head_and_prefix(&blob, WHOLE_READ_MAX, stream::HEADER_LEN as u64)
            .await?;
        if info.size == 0 {
            return Err(TransferError::Corrupt("the stored blob is empty".into()));
        }
        let layout = if head.starts_with(&stream::MAGIC) {
            open_stream(&container, &blob, &info, &key, &head).await?
        } else if head.starts_with(fernet::TOKEN_TEXT_PREFIX) {
            check_fernet_key(&container, &blob, &info, &key).await?;
            Layout::Fernet(verify_fernet(&container, &blob, &info, &key).await?)
        } else {
            return Err(TransferError::Corrupt(
                "it is neither a blobprox stream nor a Fernet token".into(),
            ));
        };
        Ok(Self {
            container,
            blob,
            info,
            key,
            layout,
        })
    }

    /// Length of the plaintext.
    pub fn plaintext_len(&self) -> u64 {
        match &self.layout {
            Layout::Fernet(verified) => verified.plaintext_len,
            Layout::Stream { layout, .. } => layout.plaintext_len(),
        }
    }

    /// The format the blob is stored in.
    pub fn format(&self) -> BlobFormat {
        match self.layout {
            Layout::Fernet(_) => BlobFormat::Fernet,
            Layout::Stream { .. } => BlobFormat::Stream,
        }
    }

    /// Whether parts of the plaintext can be read alone (a Fernet token must be read whole).
    pub fn supports_ranges(&self) -> bool {
        matches!(self.layout, Layout::Stream { .. })
    }

    /// Streams the plaintext, or only `range` of it (non-empty and within the plaintext; only
    /// when [`Self::supports_ranges`]). A failure after the first chunk arrives as an error
    /// item, so the consumer can abort rather than end cleanly.
    ///
    /// A client that takes nothing for `stall_timeout` is given up on, so it cannot hold a
    /// transfer slot and a storage connection forever.
    pub fn into_plaintext(
        self,
        range: Option<Range<u64>>,
        stall_timeout: Duration,
    ) -> impl Stream<Item = Result<Bytes, TransferError>> + Send {
        if let Some(piece) = self.held_piece(range.clone()) {
            // Already authenticated and in memory: no task, no queue, no buffer to reserve.
            return futures::stream::once(async move { Ok(piece) }).left_stream();
        }
        let (sender, receiver) = mpsc::channel(DOWNLOAD_QUEUE);
        let delivery = Delivery {
            sender,
            stall_timeout,
        };
        tokio::spawn(async move {
            let _reserved = self.container.reserve_buffer(self.buffer_needed()).await;
            let pumped = match &self.layout {
                Layout::Fernet(verified) => self.pump_fernet(verified, &delivery).await,
                Layout::Stream { key, layout, .. } => {
                    let range = range.unwrap_or(0..layout.plaintext_len());
                    self.pump_stream(key, layout, range, &delivery).await
                }
            };
            if let Err(error) = pumped {
                delivery.send(Err(error)).await;
            }
        });
        futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        })
        .right_stream()
    }

    /// What streaming this blob buffers at most: a small blob is in memory no more than three
    /// times (storage chunk, piece, queue), so it reserves no more.
    fn buffer_needed(&self) -> usize {
        usize::try_from(self.info.size)
            .map_or(usize::MAX, |size| size.saturating_mul(3))
            .min(DOWNLOAD_BUFFER_BYTES)
    }

    /// The plaintext of `range` (all of it for `None`) when it lies within the last segment of
    /// a stream blob, which opening has already read and authenticated: tail ranges and blobs
    /// of one segment are answered without reading storage again.
    fn held_piece(&self, range: Option<Range<u64>>) -> Option<Bytes> {
        let Layout::Stream {
            layout,
            last_plaintext,
            ..
        } = &self.layout
        else {
            return None;
        };
        let range = range.unwrap_or(0..layout.plaintext_len());
        let offset = (layout.segment_count() - 1) * layout.segment_size();
        (!range.is_empty() && range.start >= offset).then(|| {
            last_plaintext.slice((range.start - offset) as usize..(range.end - offset) as usize)
        })
    }

    async fn pump_fernet(
        &self,
        verified: &VerifiedToken,
        delivery: &Delivery,
    ) -> Result<(), TransferError> {
        let mut decryptor = FernetDecryptor::new(&self.key, verified)?;
        let mut chunks = self.container.read(&self.blob, &self.info, None).await?;
        while let Some(chunk) = chunks.next().await {
            let mut plaintext = Vec::new();
            decryptor.update(&chunk?, &mut plaintext)?;
            if !delivery.send(Ok(Bytes::from(plaintext))).await {
                return Ok(());
            }
        }
        let mut plaintext = Vec::new();
        decryptor
            .finish(&mut plaintext)
            .map_err(|error| match error {
                CryptoError::AuthenticationFailed => {
                    TransferError::Corrupt("the token changed while it was read".into())
                }
                other => other.into(),
            })?;
        delivery.send(Ok(Bytes::from(plaintext))).await;
        Ok(())
    }

    async fn pump_stream(
        &self,
        key: &SegmentKey,
        layout: &StreamLayout,
        range: Range<u64>,
        delivery: &Delivery,
    ) -> Result<(), TransferError> {
        if range.is_empty() {
            return Ok(());
        }
        let segments = layout.segments_for(&range);
        let stored = layout.stored_range(&segments);
        let stored_len = layout.stored_segment_len();
        let segment_size = layout.segment_size();
        let per_piece = (PIECE_BYTES / segment_size).max(1);
        let chunks = self
            .container
            .read(&self.blob, &self.info, Some(stored.clone()))
            .await?;
        let mut reader = SegmentReader::new(chunks);
        let mut remaining = stored.end - stored.start;
        let mut index = segments.start;
        while index < segments.end {
            let piece_start = index * segment_size;
            let count = per_piece.min(segments.end - index);
            let mut piece = BytesMut::zeroed((count * segment_size) as usize);
            let mut filled = 0;
            for _ in 0..count {
                // The last segment may be shorter; it ends where the stored range ends.
                let wanted = stored_len.min(remaining);
                let segment = reader.next(wanted as usize).await?;
                filled += key.open_segment(layout.nonce(index), &segment, &mut piece[filled..])?;
                remaining -= wanted;
                index += 1;
            }
            let from = range.start.saturating_sub(piece_start) as usize;
            let to = (range.end - piece_start).min(filled as u64) as usize;
            if !delivery.send(Ok(piece.freeze().slice(from..to))).await {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// The channel from decryption to the response body.
struct Delivery {
    sender: mpsc::Sender<Result<Bytes, TransferError>>,
    stall_timeout: Duration,
}

impl Delivery {
    /// Hands one item on; false when the client is gone or has taken nothing for too long.
    async fn send(&self, item: Result<Bytes, TransferError>) -> bool {
        matches!(
            tokio::time::timeout(self.stall_timeout, self.sender.send(item)).await,
            Ok(Ok(()))
        )
    }
}

/// Checks a stream blob's header, key commitment, size and last segment; `head` is the start of
/// the blob, or all of it.
async fn open_stream(
    container: &Container,
    blob: &BlobName,
    info: &BlobInfo,
    data_key: &DataKey,
    head: &[u8],
) -> Result<Layout, TransferError> {
    let header = StreamHeader::parse(head)?;
    let key = SegmentKey::open(data_key, &header)?;
    let layout = StreamLayout::new(header.segment_size, info.size)?;
    let last = layout.segment_count() - 1;
    let stored = layout.stored_range(&(last..last + 1));
    let read;
    let segment = match head.get(stored.start as usize..stored.end as usize) {
        Some(held) => held,
        None => {
            read = read_all(container, blob, info, Some(stored)).await?;
            &read[..]
        }
    };
    let mut last_plaintext = BytesMut::zeroed(segment.len());
    let plaintext_len = key
        .open_segment(layout.nonce(last), segment, &mut last_plaintext)
        .map_err(|_| {
            TransferError::Corrupt(
                "the last segment failed authentication (truncated or altered)".into(),
            )
        })?;
    last_plaintext.truncate(plaintext_len);
    Ok(Layout::Stream {
        key,
        layout,
        last_plaintext: last_plaintext.freeze(),
    })
}

/// Refuses most wrong keys from the token's last blocks before the MAC pass reads it all.
async fn check_fernet_key(
    container: &Container,
    blob: &BlobName,
    info: &BlobInfo,
    key: &DataKey,
) -> Result<(), TransferError> {
    // Shorter text is no valid token; the MAC pass says so.
    let Some(start) = info.size.checked_sub(fernet::KEY_CHECK_TEXT_LEN) else {
        return Ok(());
    };
    let tail = read_all(container, blob, info, Some(start..info.size)).await?;
    fernet::check_key_by_padding(key, &tail).map_err(|error| match error {
        CryptoError::AuthenticationFailed => TransferError::WrongKey,
        other => other.into(),
    })
}

async fn verify_fernet(
    container: &Container,
    blob: &BlobName,
    info: &BlobInfo,
    key: &DataKey,
) -> Result<VerifiedToken, TransferError> {
    let mut verifier = FernetVerifier::new(key);
    let mut chunks = container.read(blob, info, None).await?;
    while let Some(chunk) = chunks.next().await {
        verifier.update(&chunk?)?;
    }
    // Fernet cannot tell a wrong key from altered data: one MAC covers both.
    verifier.finish().map_err(|error| match error {
        CryptoError::AuthenticationFailed => TransferError::WrongKey,
        other => other.into(),
    })
}

async fn read_all(
    container: &Container,
    blob: &BlobName,
    info: &BlobInfo,
    range: Option<Range<u64>>,
) -> Result<Vec<u8>, TransferError> {
    let mut chunks = container.read(blob, info, range).await?;
    let mut out = Vec::new();
    while let Some(chunk) = chunks.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::storage::{Backend, memory_container};
    use crate::transfer::BlobWriter;
    use futures::TryStreamExt;
    use proptest::prelude::*;

    const SEGMENT: u64 = stream::DEFAULT_SEGMENT_SIZE as u64;

    async fn store(plaintext: &[u8], format: BlobFormat) -> (Container, BlobName, DataKey) {
        let container = memory_container().await;
        let name = BlobName::parse("blob").unwrap();
        let key = DataKey::generate().unwrap();
        let mut writer = BlobWriter::start(&container, &name, &key, format)
            .await
            .unwrap();
        for piece in plaintext.chunks(10_000) {
            writer.write(piece).await.unwrap();
        }
        writer.commit(false).await.unwrap();
        (container, name, key)
    }

    /// The plaintext of a stored blob, or of `range` of it.
    pub(in crate::transfer) async fn read(
        (container, name, key): (Container, BlobName, DataKey),
        range: Option<Range<u64>>,
    ) -> Vec<u8> {
        let opened = OpenedBlob::open(container, name, key).await.unwrap();
        let chunks: Vec<Bytes> = opened
            .into_plaintext(range, Duration::from_secs(5))
            .try_collect()
            .await
            .unwrap();
        chunks.concat()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A position near a segment boundary, or anywhere, within `0..=len`.
    fn position(len: u64, pick: u64, near_boundary: bool) -> u64 {
        if near_boundary && len > 0 {
            let boundary = (pick % (len / SEGMENT + 1)) * SEGMENT;
            (boundary + pick % 3).saturating_sub(1).min(len)
        } else {
            pick % (len + 1)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn random_ranges_equal_the_slice(
            len in 0u64..(2 * PIECE_BYTES + 4 * SEGMENT),
            picks in (any::<u64>(), any::<u64>()),
            near_boundary in any::<bool>(),
        ) {
            let plaintext: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let (a, b) = (position(len, picks.0, near_boundary), position(len, picks.1, near_boundary));
            let range = a.min(b)..a.max(b);
            prop_assume!(!range.is_empty());
            let got = runtime().block_on(async {
                read(store(&plaintext, BlobFormat::Stream).await, Some(range.clone())).await
            });
            prop_assert!(got == plaintext[range.start as usize..range.end as usize]);
        }
    }

    #[test]
    fn both_formats_round_trip_whole_files() {
        runtime().block_on(async {
            for format in [BlobFormat::Stream, BlobFormat::Fernet] {
                for len in [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT] {
                    let plaintext: Vec<u8> = (0..len).map(|i| i as u8).collect();
                    let stored = store(&plaintext, format).await;
                    assert_eq!(read(stored, None).await, plaintext, "{format:?} {len}");
                }
            }
        });
    }

    #[test]
    fn a_long_download_comes_in_whole_pieces_and_ranges_cross_them_intact() {
        runtime().block_on(async {
            let len = 2 * PIECE_BYTES + SEGMENT + 5;
            let plaintext: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
            let stored = store(&plaintext, BlobFormat::Stream).await;
            let opened = OpenedBlob::open(stored.0.clone(), stored.1.clone(), stored.2.clone())
                .await
                .unwrap();
            let sizes: Vec<u64> = opened
                .into_plaintext(None, Duration::from_secs(5))
                .map_ok(|piece| piece.len() as u64)
                .try_collect()
                .await
                .unwrap();
            assert_eq!(sizes, [PIECE_BYTES, PIECE_BYTES, SEGMENT + 5]);
            for range in [PIECE_BYTES - 1..PIECE_BYTES + 1, 1..len - 1, SEGMENT..len] {
                let got = read(stored.clone(), Some(range.clone())).await;
                assert!(
                    got == plaintext[range.start as usize..range.end as usize],
                    "{range:?}"
                );
            }
        });
    }

    #[test]
    fn a_running_download_holds_budget_for_its_buffers_until_it_ends() {
        use futures::FutureExt;
        let total = crate::storage::DEFAULT_MAX_BUFFER_BYTES;
        let held = DOWNLOAD_BUFFER_BYTES;
        runtime().block_on(async {
            // Long enough that the pump waits on a full queue, its reservation held.
            let plaintext = vec![5; 4 * PIECE_BYTES as usize];
            let (container, name, key) = store(&plaintext, BlobFormat::Stream).await;
            let opened = OpenedBlob::open(container.clone(), name, key)
                .await
                .unwrap();
            let pieces = opened.into_plaintext(None, Duration::from_secs(5));
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            let fits = container.reserve_buffer(total - held).now_or_never();
            assert!(fits.is_some(), "more than {held} held");
            drop(fits);
            let over = container.reserve_buffer(total - held + 1).now_or_never();
            assert!(over.is_none(), "less than {held} held");
            drop(pieces);
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            assert!(container.reserve_buffer(total).now_or_never().is_some());
        });
    }

    #[tokio::test]
    async fn a_missing_container_is_a_missing_blob() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(Backend::Local(dir.path().to_owned())).unwrap();
        let absent = ContainerName::parse("absent").unwrap();
        let blob = BlobName::parse("x").unwrap();
        let found = OpenedBlob::find(&storage, &absent, blob, DataKey::generate().unwrap()).await;
        assert!(matches!(
            found,
            Err(TransferError::Storage(StorageError::BlobNotFound))
        ));
    }
}
