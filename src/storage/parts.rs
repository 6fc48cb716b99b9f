//! Multipart uploads whose parts draw on one byte budget shared by the whole process, so that
//! the sum of what all uploads buffer stays under `MAX_BUFFER_BYTES`.

use std::sync::Arc;

use bytes::Bytes;
use object_store::{MultipartUpload, PutPayloadMut};
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

/// Writes a multipart upload in parts of a fixed size, `in_flight` at most at a time. Each part
/// reserves its size from the budget before its first byte is buffered and gives it back once
/// storage has it.
pub struct PartWriter {
    upload: Box<dyn MultipartUpload>,
    part: PutPayloadMut,
    part_size: usize,
    in_flight: usize,
    budget: BufferBudget,
    reserved: Option<OwnedSemaphorePermit>,
    parts: JoinSet<object_store::Result<()>>,
}

impl PartWriter {
    /// Parts of `part_size` (smaller if the budget is), `in_flight` of them at a time.
    pub fn new(
        upload: Box<dyn MultipartUpload>,
        part_size: usize,
        in_flight: usize,
        budget: BufferBudget,
    ) -> Self {
        Self {
            upload,
            part: PutPayloadMut::new(),
            part_size: part_size.min(budget.bytes()),
            in_flight: in_flight.max(1),
            budget,
            reserved: None,
            parts: JoinSet::new(),
        }
    }

    /// Buffers `bytes`, sending each part as it fills; waits for room in flight and for budget.
    pub async fn put(&mut self, mut bytes: Bytes) -> object_store::Result<()> {
        while !bytes.is_empty() {
            if self.reserved.is_none() {
                while self.parts.len() >= self.in_flight {
                    self.join_one().await?;
                }
                self.reserved = Some(self.budget.reserve(self.part_size).await);
            }
            let room = self.part_size - self.part.content_length();
            self.part.push(bytes.split_to(room.min(bytes.len())));
            if self.part.content_length() == self.part_size {
                self.send_part();
            }
        }
        Ok(())
    }

    /// Sends the last part, waits for every part, and completes the upload.
    pub async fn finish(mut self) -> object_store::Result<()> {
        if self.part.content_length() > 0 {
            self.send_part();
        }
        while !self.parts.is_empty() {
            if let Err(error) = self.join_one().await {
                self.abort().await;
                return Err(error);
            }
        }
        if let Err(error) = self.upload.complete().await {
            self.abort().await;
            return Err(error);
        }
        Ok(())
    }

    /// Stops the parts in flight and removes what storage has of the upload (best effort).
    pub async fn abort(mut self) {
        self.parts.shutdown().await;
        let _ = self.upload.abort().await;
    }

    fn send_part(&mut self) {
        let part = std::mem::take(&mut self.part).freeze();
        let reserved = self.reserved.take();
        let sent = self.upload.put_part(part);
        self.parts.spawn(async move {
            let result = sent.await;
            drop(reserved);
            result
        });
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

    async fn writer(store: &InMemory, name: &str, budget: &BufferBudget) -> PartWriter {
        let upload = store.put_multipart(&Path::from(name)).await.unwrap();
        PartWriter::new(upload, 1 << 20, 4, budget.clone())
    }

    #[tokio::test]
    async fn parts_hold_budget_while_buffered_and_return_it_when_stored() {
        let store = InMemory::new();
        let budget = BufferBudget::new(4 << 20);
        let mut upload = writer(&store, "a", &budget).await;
        let data: Vec<u8> = (0..(5 << 20) + 17).map(|i| i as u8).collect();
        for chunk in data.chunks(300_000) {
            upload.put(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        // The part being filled is reserved in full; the stored ones gave theirs back.
        assert!(budget.available() <= 3 << 20);
        upload.finish().await.unwrap();
        assert_eq!(budget.available(), 4 << 20);
        let stored = store
            .get(&Path::from("a"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(stored.as_ref(), data.as_slice());
    }

    #[tokio::test]
    async fn an_upload_waits_for_budget_that_another_holds() {
        let store = InMemory::new();
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
        let store = InMemory::new();
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
