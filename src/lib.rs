//! blobprox: an HTTP proxy that encrypts files on their way into Azure Blob Storage.
//!
//! Layers, from the outside in: [`cli`] and [`config`] read the command line; [`server`] starts
//! [`http`], whose handlers check [`auth`] and call [`transfer`], which encrypts with [`crypto`]
//! and stores through [`storage`]. [`keys`] and [`credentials`] manage the files on disk; [`tls`]
//! holds the listener's certificate.

pub mod auth;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod crypto;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod server;
pub mod storage;
pub mod tls;
pub mod transfer;
