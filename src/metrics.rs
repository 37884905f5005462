//! What the process counts about itself, for an operator: requests to the store by operation
//! and outcome, bytes read from the cache and the store, cache hits, misses, evictions and
//! verification failures, retries, commit and read latencies, pending writes, passthrough
//! opens and errors by errno (docs/MOUNT.md, "Metrics and status").
//!
//! One set per process ([`metrics`]), counted always (an atomic add per event) and kept in a
//! `prometheus-client` registry. `mltrack mount --metrics ADDR` serves it as Prometheus text
//! ([`serve`]); `mltrack status` reads the same numbers through the mount ([`Metrics::status`]).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use serde::Serialize;

/// The operations of the store, as labelled.
pub const OPS: [&str; 5] = ["get", "put", "head", "list", "delete"];
/// The outcomes of a request: `ok`; `absent` (a get or head of nothing, an expected answer);
/// `conflict` (a conditional write that lost); `error` (anything else).
pub const OUTCOMES: [&str; 4] = ["ok", "absent", "conflict", "error"];
/// Where the blocks that served reads came from: read from the cache, or fetched from the
/// store (a block kept in memory for the next reads is counted once, where it came from).
pub const SOURCES: [&str; 2] = ["cache", "store"];
/// The error numbers a request can end with (the map in `fuse::errno`).
pub const ERRNOS: [&str; 14] = [
    "ENOENT",
    "ENAMETOOLONG",
    "EINVAL",
    "ENOSPC",
    "EEXIST",
    "ENOTEMPTY",
    "EROFS",
    "EPERM",
    "EISDIR",
    "ENOTDIR",
    "ESTALE",
    "ENOTSUP",
    "ENODATA",
    "EIO",
];

type Labels2 = [(&'static str, &'static str); 2];
type Labels1 = [(&'static str, &'static str); 1];

pub struct Metrics {
    registry: Registry,
    started: Instant,
    requests: Family<Labels2, Counter>,
    store_bytes: Family<Labels1, Counter>,
    read_bytes: Family<Labels1, Counter>,
    /// The counters of `requests` and `read_bytes`, made once, so that counting is an add.
    by_request: [[Counter; OUTCOMES.len()]; OPS.len()],
    by_source: [Counter; SOURCES.len()],
    cache_hits: Counter,
    cache_misses: Counter,
    cache_evictions: Counter,
    cache_bytes: Gauge,
    cache_limit: Gauge,
    verification_failures: Family<Labels1, Counter>,
    retries: Counter,
    commit_seconds: Histogram,
    read_seconds: Histogram,
    pending_writes: Gauge,
    commits_in_flight: Gauge,
    commits: Counter,
    passthrough_opens: Counter,
    errors: Family<Labels1, Counter>,
    /// Bytes of the commits in flight, for `status`.
    committing_bytes: AtomicU64,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("mltrack");
        let m = Metrics {
            registry: Registry::default(),
            started: Instant::now(),
            requests: Family::default(),
            store_bytes: Family::default(),
            read_bytes: Family::default(),
            by_request: Default::default(),
            by_source: Default::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_evictions: Counter::default(),
            cache_bytes: Gauge::default(),
            cache_limit: Gauge::default(),
            verification_failures: Family::default(),
            retries: Counter::default(),
            // 1 ms to about 65 s.
            commit_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            // 50 us to about 13 s.
            read_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 19)),
            pending_writes: Gauge::default(),
            commits_in_flight: Gauge::default(),
            commits: Counter::default(),
            passthrough_opens: Counter::default(),
            errors: Family::default(),
            committing_bytes: AtomicU64::new(0),
        };
        registry.register(
            "store_requests",
            "Requests to the store, by operation and outcome",
            m.requests.clone(),
        );
        registry.register_with_unit(
            "store",
            "Bytes moved to and from the store, by operation (get, put)",
            Unit::Bytes,
            m.store_bytes.clone(),
        );
        registry.register_with_unit(
            "read",
            "Bytes of object blocks that served reads, by where they came from (cache, store)",
            Unit::Bytes,
            m.read_bytes.clone(),
        );
        registry.register(
            "cache_hits",
            "Blocks found in the local cache",
            m.cache_hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Blocks not in the local cache, fetched from the store",
            m.cache_misses.clone(),
        );
        registry.register(
            "cache_evictions",
            "Blocks evicted from the local cache",
            m.cache_evictions.clone(),
        );
        registry.register_with_unit(
            "cache_size",
            "Bytes the cache directory holds (all mounts sharing it)",
            Unit::Bytes,
            m.cache_bytes.clone(),
        );
        registry.register_with_unit(
            "cache_limit",
            "The cache's size limit",
            Unit::Bytes,
            m.cache_limit.clone(),
        );
        registry.register(
            "verification_failures",
            "Blocks whose bytes did not match their hash, by where they came from \
             (cache, store); a cached one is fetched again, a stored one fails the read",
            m.verification_failures.clone(),
        );
        registry.register(
            "store_retries",
            "Requests to the store tried again after a failure",
            m.retries.clone(),
        );
        registry.register_with_unit(
            "commit_duration",
            "Time from a close (or fsync) to the file stored and recorded",
            Unit::Seconds,
            m.commit_seconds.clone(),
        );
        registry.register_with_unit(
            "read_duration",
            "Time to serve one read request of a file",
            Unit::Seconds,
            m.read_seconds.clone(),
        );
        registry.register(
            "pending_writes",
            "Files open for writing or written and not yet released",
            m.pending_writes.clone(),
        );
        registry.register(
            "commits_in_flight",
            "Commits (hash, upload, manifest entry) under way",
            m.commits_in_flight.clone(),
        );
        registry.register(
            "commits",
            "Commits finished, stored or failed",
            m.commits.clone(),
        );
        registry.register(
            "passthrough_opens",
            "Opens of fully cached files handed to the kernel (FUSE passthrough)",
            m.passthrough_opens.clone(),
        );
        registry.register(
            "errors",
            "Requests that failed, by the error number returned",
            m.errors.clone(),
        );
        let by_request = OPS.map(|op| {
            OUTCOMES.map(|outcome| {
                m.requests
                    .get_or_create_owned(&[("op", op), ("outcome", outcome)])
            })
        });
        let by_source = SOURCES.map(|s| m.read_bytes.get_or_create_owned(&[("source", s)]));
        Metrics {
            registry,
            by_request,
            by_source,
            ..m
        }
    }

    pub fn request(&self, op: &'static str, outcome: &'static str) {
        let at = |names: &[&str], name| names.iter().position(|n| *n == name);
        if let (Some(o), Some(r)) = (at(&OPS, op), at(&OUTCOMES, outcome)) {
            self.by_request[o][r].inc();
        }
    }

    pub fn store_bytes(&self, op: &'static str, n: u64) {
        self.store_bytes.get_or_create(&[("op", op)]).inc_by(n);
    }

    pub fn read_from(&self, source: &'static str, n: u64) {
        if let Some(i) = SOURCES.iter().position(|s| *s == source) {
            self.by_source[i].inc_by(n);
        }
    }

    pub fn cache_hit(&self) {
        self.cache_hits.inc();
    }

    pub fn cache_miss(&self) {
        self.cache_misses.inc();
    }

    pub fn cache_evicted(&self, blocks: u64) {
        self.cache_evictions.inc_by(blocks);
    }

    /// The cache directory's shared total and limit, as last seen.
    pub fn cache_size(&self, used: u64, limit: u64) {
        self.cache_bytes
            .set(i64::try_from(used).unwrap_or(i64::MAX));
        self.cache_limit
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
    }

    pub fn verification_failed(&self, source: &'static str) {
        self.verification_failures
            .get_or_create(&[("source", source)])
            .inc();
    }

    pub fn retried(&self) {
        self.retries.inc();
    }

    pub fn read_took(&self, started: Instant) {
        self.read_seconds.observe(started.elapsed().as_secs_f64());
    }

    /// A write file made (`true`) or let go (`false`).
    pub fn pending_write(&self, opened: bool) {
        if opened {
            self.pending_writes.inc();
        } else {
            self.pending_writes.dec();
        }
    }

    /// Counts a commit of `bytes` as in flight until the guard is dropped, then its duration.
    pub fn commit(&'static self, bytes: u64) -> CommitGuard {
        self.commits_in_flight.inc();
        self.committing_bytes.fetch_add(bytes, Ordering::Relaxed);
        CommitGuard {
            metrics: self,
            bytes,
            started: Instant::now(),
        }
    }

    pub fn passthrough_opened(&self) {
        self.passthrough_opens.inc();
    }

    pub fn error(&self, errno: &'static str) {
        self.errors.get_or_create(&[("errno", errno)]).inc();
    }

    /// The registry as Prometheus text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// The counters `mltrack status` shows.
    pub fn status(&self) -> Counts {
        let count = |f: &Family<Labels2, Counter>, op, outcome| {
            f.get(&[("op", op), ("outcome", outcome)])
                .map_or(0, |c| c.get())
        };
        let by = |f: &Family<Labels1, Counter>, key, value| {
            f.get(&[(key, value)]).map_or(0, |c| c.get())
        };
        let mut requests = std::collections::BTreeMap::new();
        let mut request_errors = 0;
        for op in OPS {
            let mut outcomes = std::collections::BTreeMap::new();
            for outcome in OUTCOMES {
                let n = count(&self.requests, op, outcome);
                if n > 0 {
                    outcomes.insert(outcome, n);
                }
                if outcome == "error" {
                    request_errors += n;
                }
            }
            if !outcomes.is_empty() {
                requests.insert(op, outcomes);
            }
        }
        let errors = ERRNOS
            .iter()
            .map(|e| (*e, by(&self.errors, "errno", e)))
            .filter(|(_, n)| *n > 0)
            .collect();
        Counts {
            uptime_seconds: self.started.elapsed().as_secs(),
            requests,
            request_errors,
            retries: self.retries.get(),
            store_bytes_read: by(&self.store_bytes, "op", "get"),
            store_bytes_written: by(&self.store_bytes, "op", "put"),
            read_bytes: SOURCES
                .iter()
                .map(|s| (*s, by(&self.read_bytes, "source", s)))
                .collect(),
            cache_hits: self.cache_hits.get(),
            cache_misses: self.cache_misses.get(),
            cache_evictions: self.cache_evictions.get(),
            verification_failures: by(&self.verification_failures, "source", "cache")
                + by(&self.verification_failures, "source", "store"),
            commits_in_flight: u64::try_from(self.commits_in_flight.get()).unwrap_or(0),
            committing_bytes: self.committing_bytes.load(Ordering::Relaxed),
            commits: self.commits.get(),
            passthrough_opens: self.passthrough_opens.get(),
            errors,
        }
    }
}

/// A commit under way; counted done when dropped.
pub struct CommitGuard {
    metrics: &'static Metrics,
    bytes: u64,
    started: Instant,
}

impl Drop for CommitGuard {
    fn drop(&mut self) {
        let m = self.metrics;
        m.commits_in_flight.dec();
        m.commits.inc();
        m.committing_bytes.fetch_sub(self.bytes, Ordering::Relaxed);
        m.commit_seconds
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// What `mltrack status` shows of the counters since the mount started.
#[derive(Debug, Serialize)]
pub struct Counts {
    pub uptime_seconds: u64,
    /// Requests to the store by operation, then outcome.
    pub requests:
        std::collections::BTreeMap<&'static str, std::collections::BTreeMap<&'static str, u64>>,
    /// Requests whose outcome was `error`.
    pub request_errors: u64,
    pub retries: u64,
    pub store_bytes_read: u64,
    pub store_bytes_written: u64,
    /// Bytes of blocks that served reads, by source.
    pub read_bytes: std::collections::BTreeMap<&'static str, u64>,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_evictions: u64,
    pub verification_failures: u64,
    pub commits_in_flight: u64,
    pub committing_bytes: u64,
    pub commits: u64,
    pub passthrough_opens: u64,
    /// Failed requests by error number.
    pub errors: std::collections::BTreeMap<&'static str, u64>,
}

/// Serves the metrics as Prometheus text on `addr` (any path, `GET`), until the process ends.
/// Binds before returning, so a bad address fails the mount at once.
pub async fn serve(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                // Out of descriptors, say: wait rather than spin.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            let _ = socket.set_nodelay(true);
            let service = hyper::service::service_fn(
                |req: hyper::Request<hyper::body::Incoming>| async move {
                    if req.method() == hyper::Method::GET {
                        hyper::Response::builder()
                            .header(
                                "content-type",
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )
                            .body(Full::new(Bytes::from(metrics().encode())))
                    } else {
                        hyper::Response::builder()
                            .status(405)
                            .body(Full::new(Bytes::from_static(b"GET only\n")))
                    }
                },
            );
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    Ok(bound)
}
