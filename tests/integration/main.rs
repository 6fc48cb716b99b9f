//! The integration tests, one binary: each module a part of the contract, `common` the harness
//! they share (a real router on an ephemeral port, and the `blobprox` binary in a clean
//! environment).

mod api;
mod cli;
mod common;
mod fernet_vectors;
mod hostile;
mod lifecycle;
mod operations;
mod ranges;
mod storage_semantics;
mod stream_vectors;
