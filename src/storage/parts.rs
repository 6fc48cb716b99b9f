//! Multipart uploads whose parts draw on one byte budget shared by the whole process, so that
//! the sum of what all uploads buffer stays under `MAX_BUFFER_BYTES`.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload, PutPayloadMut};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// Bytes that the transfers of the process may hold in buffers at once. A transfer that needs
/// more waits (and so stops reading from its client) until others release theirs.
#[derive(Debug, Clone)]
pub struct BufferBudget {
    bytes: usize,
    free: Arc<Semaphore>,
}

impl BufferBudget {
    /// A budget of `bytes` (at least 1 MiB: a smaller one would only make tiny parts).
    pub fn new(bytes: usize) -> Self {
        let bytes = bytes.clamp(1 << 20, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        Self {
            bytes,
            free: Arc::new(Semaphore::new(bytes)),
        }
    }

    /// The whole budget, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes not held by any transfer right now.
    #[cfg(test)]
    fn available(&self) -> usize {
        self.free.available_permits()
    }

    /// Waits until `bytes` (at most the whole budget) are free; they are held until the permit
    /// is dropped.
    pub async fn reserve(&self, bytes: usize) -> OwnedSemaphorePermit {
        let wanted = bytes.min(self.bytes) as u32;
        self.free
            .clone()
            .acquire_many_owned(wanted)
            .await
            .expect("the budget's semaphore is never closed")
    }
}

/// Where a finished [`PartWriter`] left its bytes.
pub enum Finished {
    /// All of them fit in one part, which storage has not seen: the caller puts them in one
    /// operation, holding the reservation until then.
    Held(PutPayload, Option<OwnedSemaphorePermit>),
    /// The completed multipart upload at the staging name holds them.
    Staged,
}

/// Writes a multipart upload in parts of a fixed size, `in_flight` at most at a time. Each part
/// reserves its size from the budget before its first byte is buffered and gives it back once
/// storage has it. The upload starts only when the first part is full: what fits in one part
/// is handed back by [`PartWriter::finish`] for a single put, which costs storage one operation
/// instead of a multipart upload, a copy and a delete.
pub struct PartWriter {
    store: Arc<dyn ObjectStore>,
    staging: Path,
    upload: Option<Box<dyn MultipartUpload>>,
    part: PutPayloadMut,
    part_size: usize,
    in_flight: usize,
    budget: BufferBudget,
    reserved: Option<OwnedSemaphorePermit>,
    parts: JoinSet<object_store::Result<()>>,
}

impl PartWriter {
    /// An upload to `staging` in parts of `part_size` (smaller if the budget is), `in_flight`
    /// of them at a time.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        staging: Path,
        part_size: usize,
        in_flight: usize,
        budget: BufferBudget,
    ) -> Self {
        Self {
            store,
            staging,
            upload: None,
            part: PutPayloadMut::new(),
            part_size: part_size.min(budget.bytes()),
            in_flight: in_flight.max(1),
            budget,
            reserved: None,
            parts: JoinSet::new(),
        }
    }

    /// Buffers `bytes`, sending each full part once more follows; waits for room in flight and
    /// for budget.
    pub async fn put(&mut self, mut bytes: Bytes) -> object_store::Result<()> {
        while !bytes.is_empty() {
            // A full part goes only when more follows, so that a blob of exactly one part is
            // still held for a single put.
            if self.part.content_length() == self.part_size {
                self.send_part().await?;
            }
            if self.reserved.is_none() {
                while self.parts.len() >= self.in_flight {
                    self.join_one().await?;
                }
                self.reserved = Some(self.budget.reserve(self.part_size).await);
            }
            let room = self.part_size - self.part.content_length();
            self.part.push(bytes.split_to(room.min(bytes.len())));
        }
        Ok(())
    }

    /// Sends the last part, waits for every part, and completes the upload; or, when nothing
    /// was sent yet, hands back the bytes with their reservation.
    pub async fn finish(mut self) -> object_store::Result<Finished> {
        if self.upload.is_none() {
            let held = std::mem::take(&mut self.part).freeze();
            return Ok(Finished::Held(held, self.reserved.take()));
        }
        if self.part.content_length() > 0 {
            self.send_part().await?;
        }
        while !self.parts.is_empty() {
            if let Err(error) = self.join_one().await {
                self.abort().await;
                return Err(error);
            }
        }
        let upload = self.upload.as_mut().expect("started above");
        if let Err(error) = upload.complete().await {
            self.abort().await;
            return Err(error);
        }
        Ok(Finished::Staged)
    }

    /// Stops the parts in flight and removes what storage has of the upload (best effort).
    pub async fn abort(mut self) {
        self.parts.shutdown().await;
        if let Some(mut upload) = self.upload.take() {
            let _ = upload.abort().await;
        }
    }

    async fn send_part(&mut self) -> object_store::Result<()> {
        let upload = match &mut self.upload {
            Some(upload) => upload,
            None => self
                .upload
                .insert(self.store.put_multipart(&self.staging).await?),
        };
        let part = std::mem::take(&mut self.part).freeze();
        let reserved = self.reserved.take();
        let sent = upload.put_part(part);
        self.parts.spawn(async move {
            let result = sent.await;
            drop(reserved);
            result
        });
        Ok(())
    }

    async fn join_one(&mut self) -> object_store::Result<()> {
        match self.parts.join_next().await {
            None => Ok(()),
            Some(Ok(result)) => result,
            Some(Err(error)) => Err(object_store::Error::Generic {
                store: "blobprox",
                source: Box::new(error),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;
    use object_store::path::Path;

    use super::*;

    async fn writer(store: &Arc<InMemory>, name: &str, budget: &BufferBudget) -> PartWriter {
        PartWriter::new(store.clone(), Path::from(name), 1 << 20, 4, budget.clone())
    }

    async fn stored(store: &InMemory, name: &str) -> Option<Bytes> {
        let got = store.get(&Path::from(name)).await.ok()?;
        Some(got.bytes().await.unwrap())
    }

    #[tokio::test]
    async fn what_fits_in_one_part_is_held_and_never_staged() {
        let store = Arc::new(InMemory::new());
        let budget = BufferBudget::new(4 << 20);
        let mut upload = writer(&store, "small", &budget).await;
        upload.put(Bytes::from(vec![3u8; 1 << 20])).await.unwrap();
        let Finished::Held(held, reserved) = upload.finish().await.unwrap() else {
            panic!("a blob of exactly one part was staged");
        };
        assert_eq!(Bytes::from(held), vec![3u8; 1 << 20]);
        // The held bytes keep their reservation until the caller has stored them.
        assert_eq!(budget.available(), 3 << 20);
        drop(reserved);
        assert_eq!(budget.available(), 4 << 20);
        assert_eq!(stored(&store, "small").await, None);
    }

    #[tokio::test]
    async fn one_byte_more_than_a_part_is_staged() {
        let store = Arc::new(InMemory::new());
        let budget = BufferBudget::new(4 << 20);
        let mut upload = writer(&store, "staged", &budget).await;
        upload
            .put(Bytes::from(vec![4u8; (1 << 20) + 1]))
            .await
            .unwrap();
        assert!(matches!(upload.finish().await.unwrap(), Finished::Staged));
        assert_eq!(stored(&store, "staged").await.unwrap().len(), (1 << 20) + 1);
        assert_eq!(budget.available(), 4 << 20);
    }

    #[tokio::test]
    async fn parts_hold_budget_while_buffered_and_return_it_when_stored() {
        let store = Arc::new(InMemory::new());
        let budget = BufferBudget::new(4 << 20);
        let mut upload = writer(&store, "a", &budget).await;
        let data: Vec<u8> = (0..(5 << 20) + 17).map(|i| i as u8).collect();
        for chunk in data.chunks(300_000) {
            upload.put(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        // The part being filled is reserved in full; the stored ones gave theirs back.
        assert!(budget.available() <= 3 << 20);
        assert!(matches!(upload.finish().await.unwrap(), Finished::Staged));
        assert_eq!(budget.available(), 4 << 20);
        assert_eq!(stored(&store, "a").await.unwrap(), data);
    }

    #[tokio::test]
    async fn an_upload_waits_for_budget_that_another_holds() {
        let store = Arc::new(InMemory::new());
        let budget = BufferBudget::new(1 << 20);
        let mut first = writer(&store, "first", &budget).await;
        first
            .put(Bytes::from_static(b"holds the whole budget"))
            .await
            .unwrap();
        let mut second = writer(&store, "second", &budget).await;
        let waiting = second.put(Bytes::from_static(b"x")).now_or_never();
        assert!(waiting.is_none(), "the second upload did not wait");
        first.finish().await.unwrap();
        second.put(Bytes::from_static(b"x")).await.unwrap();
        second.finish().await.unwrap();
        assert_eq!(budget.available(), 1 << 20);
    }

    #[tokio::test]
    async fn an_aborted_upload_gives_its_budget_back() {
        let store = Arc::new(InMemory::new());
        let budget = BufferBudget::new(2 << 20);
        let mut upload = writer(&store, "gone", &budget).await;
        upload
            .put(Bytes::from(vec![7u8; 1536 << 10]))
            .await
            .unwrap();
        upload.abort().await;
        assert_eq!(budget.available(), 2 << 20);
    }
}
