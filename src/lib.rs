//! blobprox: an HTTP proxy that encrypts files on their way into Azure Blob Storage.

pub mod crypto;
