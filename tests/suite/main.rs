//! mltrack's integration tests: one module per area, each driving real parts as a user would
//! (the `mltrack` binary, FUSE mounts, an in-process S3 server on 127.0.0.1, `cp`, `rsync`,
//! Python). `common` holds what they share: the stores, the server, mounts and their helpers.
//!
//! They are one test binary (`cargo test --test suite`; one module: `cargo test --test suite
//! mount_read::`) rather than one per file, because every binary links the whole dependency
//! tree: 31 of them took a quarter of a fresh test build (docs/TESTING.md, "Build time").

#[macro_use]
mod common;

mod cli_data;
mod cli_faults;
mod cli_runs;
mod concurrency;
mod corruption;
mod crashes;
mod fs_core;
mod fuzz_regressions;
mod hostile;
mod manifest_log;
mod misconfigured;
mod mount_dirs;
mod mount_links;
mod mount_mmap;
mod mount_owners;
mod mount_posix_bugs;
mod mount_read;
mod mount_reftest;
mod mount_write_dedup;
mod mount_write_durability;
mod mount_write_names;
mod mount_write_tools;
mod mount_xattrs;
mod observability;
mod posix_tools;
mod security;
mod storage_conformance;
mod store_faults;
