//! blobprox: an HTTP proxy that encrypts files on their way into Azure Blob Storage.
//!
//! Layers, from the outside in: [`cli`] parses the command line into options, which
//! [`config::resolve`] checks and turns into a [`config::ServeConfig`] (the one home of every
//! setting, limit and default); [`server`] starts [`http`] with it, whose handlers check [`auth`]
//! and call [`transfer`], which encrypts with [`crypto`] and stores through [`storage`]. [`keys`]
//! and [`credentials`] manage the files on disk; [`tls`] holds the listener's certificate.
//! Dependencies point one way: `cli` → `server` → `config`, `cli` → `config`, and `config` names
//! neither.

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
