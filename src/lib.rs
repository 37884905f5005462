//! mltrack: a content-addressed ML data store on S3 or a local directory.
//!
//! Layers, each knowing only the ones below it (see `docs/ARCHITECTURE.md`):
//! - [`storage`]: bytes under keys, one trait and its backends;
//! - the domain: [`cas`] (content-addressed objects), [`runs`] (manifests, views, markers),
//!   [`maint`] (stats, fsck, gc), with [`layout`] naming every key;
//! - the filesystem core [`fs`] (tree, verified block cache, read-ahead), no FUSE types;
//! - the faces: [`cli`] and [`fuse`] (with [`mount`]), thin over the domain.

pub mod cache;
pub mod cas;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod error;
pub mod fs;
pub mod fuse;
pub mod ids;
pub mod layout;
pub mod logcap;
pub mod maint;
pub mod metrics;
pub mod mount;
pub mod runs;
pub mod storage;
pub mod time;
pub mod trusted;
pub mod units;
