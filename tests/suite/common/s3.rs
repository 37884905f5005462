//! An S3 server in the test process: `s3s-fs` on 127.0.0.1, real HTTP and SigV4, wrapped in
//! a fault injector. On command it goes "down" (every connection dropped), now or after a
//! countdown of PUT requests; answers chosen requests with 500, 503 or `SlowDown`; drops the
//! connection without an answer; stalls before answering; or cuts a GET body short. It can
//! also fail a given fraction of all requests at random with any of these. It counts requests
//! by method and the faults it injected.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

pub const ACCESS_KEY: &str = "mltrack-test-access";
/// Recognisable, so that a test can assert it never appears in output.
pub const SECRET_KEY: &str = "SECRET-sauce-4f1d9c-never-print";
pub const BUCKET: &str = "mltrack-test";

/// What the server does to one request instead of (or on top of) serving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `500 InternalError`, nothing applied.
    InternalError,
    /// `503 ServiceUnavailable`, nothing applied.
    Unavailable,
    /// `503 SlowDown`, S3's throttling answer, nothing applied.
    SlowDown,
    /// `403 AccessDenied`: credentials without permission. Not drawn at random.
    AccessDenied,
    /// The connection is dropped without an answer, nothing applied.
    Reset,
    /// The request is served after this long.
    Stall(Duration),
    /// The request is served, but a GET's body stops halfway and the connection drops.
    /// (On any other request it acts as `Reset`.)
    TruncateBody,
    /// The request is served (applied), then the connection drops without its answer, as
    /// when an answer is lost or comes after the client gave up. Not drawn at random.
    LostAnswer,
    /// The request is served, but one byte of a GET's body is flipped on the way (headers,
    /// checksums included, as the server sent them). Not drawn at random.
    CorruptBody,
}

impl Fault {
    /// Every kind, for random injection (stalls short enough not to trip a client timeout).
    pub const ALL: [Fault; 6] = [
        Fault::InternalError,
        Fault::Unavailable,
        Fault::SlowDown,
        Fault::Reset,
        Fault::Stall(Duration::from_millis(300)),
        Fault::TruncateBody,
    ];
}

/// Which requests a queued fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Any,
    /// GETs of object data (`.../data.<fmt>`).
    DataGet,
    /// PUTs and POSTs (uploads, parts, manifests, markers).
    Write,
    /// PUTs of `used_by` markers.
    MarkerPut,
    /// GETs of runs' manifests (`manifests/<run>.json`, not their log entries).
    ManifestGet,
    /// GETs of objects' `metadata.json` (the dedup check of a store).
    MetadataGet,
    /// Completions of multipart uploads (`POST ...?uploadId=`).
    Completion,
}

#[derive(Debug, Default)]
struct Injection {
    /// Faults for the next matching requests, in order.
    queued: std::collections::VecDeque<(Target, Fault)>,
    /// A fault for every matching request after the queued ones, until `heal`.
    every: Option<(Target, Fault)>,
    /// Per mille of requests that fail at random, with a fault drawn from `Fault::ALL`.
    random_per_mille: u64,
    rng: u64,
}

#[derive(Debug, Default)]
pub struct Faults {
    injection: Mutex<Injection>,
    /// Faults injected so far.
    pub injected: AtomicU64,
    down: AtomicBool,
    /// PUT requests still let through before the server goes down; negative: no countdown.
    puts_until_down: AtomicI64,
    pub gets: AtomicU64,
    /// GETs of object data (`.../data.<fmt>`), not of metadata, manifests or listings.
    pub data_gets: AtomicU64,
    /// GETs of `metadata.json` files.
    pub metadata_gets: AtomicU64,
    /// GETs of runs' manifests (`manifests/<run>.json`, not their log entries).
    pub manifest_gets: AtomicU64,
    pub puts: AtomicU64,
    /// PUTs of object data (whole objects and multipart parts of `.../data.<fmt>`).
    pub data_puts: AtomicU64,
    pub heads: AtomicU64,
    pub requests: AtomicU64,
    /// Requests held by a `Stall` fault right now.
    stalled: AtomicU64,
    /// PUTs of object data that arrived while a stall was queued or holding its request:
    /// sent without waiting for that request's answer (the PUT of two sent together may also
    /// reach the server first).
    pub data_puts_during_a_stall: AtomicU64,
}

impl Faults {
    pub fn go_down(&self) {
        self.down.store(true, Ordering::SeqCst);
    }

    /// Lets `n` more PUT requests through, then takes the server down.
    pub fn down_after_puts(&self, n: i64) {
        self.puts_until_down.store(n, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.puts_until_down.store(-1, Ordering::SeqCst);
        self.down.store(false, Ordering::SeqCst);
        self.injection.lock().expect("fault lock").every = None;
    }

    /// Applies `fault` to every request that matches `target`, until `heal`.
    pub fn fail_every(&self, target: Target, fault: Fault) {
        self.injection.lock().expect("fault lock").every = Some((target, fault));
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// Applies `fault` to each of the next `times` requests that match `target`.
    pub fn inject(&self, target: Target, fault: Fault, times: usize) {
        let mut i = self.injection.lock().expect("fault lock");
        for _ in 0..times {
            i.queued.push_back((target, fault));
        }
    }

    /// Fails `per_mille` of all requests at random (seeded, so a run can be repeated), each
    /// with a fault drawn from `Fault::ALL`; 0 stops it.
    pub fn fail_at_random(&self, per_mille: u64, seed: u64) {
        let mut i = self.injection.lock().expect("fault lock");
        i.random_per_mille = per_mille;
        i.rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    }

    /// Queued faults not yet applied.
    pub fn pending(&self) -> usize {
        self.injection.lock().expect("fault lock").queued.len()
    }

    /// The fault to apply to this request, if any.
    fn pick(&self, method: &hyper::Method, uri: &hyper::Uri) -> Option<Fault> {
        let path = uri.path();
        let mut i = self.injection.lock().expect("fault lock");
        let is_write = *method == hyper::Method::PUT || *method == hyper::Method::POST;
        let matches = |t: Target| match t {
            Target::Any => true,
            Target::DataGet => *method == hyper::Method::GET && is_data(path),
            Target::Write => is_write,
            Target::MarkerPut => *method == hyper::Method::PUT && path.contains("/used_by/"),
            Target::ManifestGet => *method == hyper::Method::GET && is_manifest(path),
            Target::MetadataGet => {
                *method == hyper::Method::GET && path.ends_with("/metadata.json")
            }
            Target::Completion => {
                *method == hyper::Method::POST
                    && uri.query().is_some_and(|q| q.contains("uploadId="))
            }
        };
        let fault = if let Some(pos) = i.queued.iter().position(|(t, _)| matches(*t)) {
            i.queued.remove(pos).map(|(_, f)| f)
        } else if let Some((_, f)) = i.every.filter(|(t, _)| matches(*t)) {
            Some(f)
        } else if i.random_per_mille > 0 {
            i.rng ^= i.rng << 13;
            i.rng ^= i.rng >> 7;
            i.rng ^= i.rng << 17;
            let draw = i.rng;
            (draw % 1000 < i.random_per_mille)
                .then(|| Fault::ALL[(draw / 1000 % Fault::ALL.len() as u64) as usize])
        } else {
            None
        };
        if fault.is_some() {
            self.injected.fetch_add(1, Ordering::SeqCst);
        }
        if matches!(fault, Some(Fault::Stall(_))) {
            // Counted while the fault lock is held, so that a PUT never sees the stall
            // neither queued nor holding (see `data_puts_during_a_stall`).
            self.stalled.fetch_add(1, Ordering::SeqCst);
        }
        fault
    }

    /// Counts a request and says whether to serve it.
    fn admit(&self, method: &hyper::Method, path: &str) -> bool {
        self.requests.fetch_add(1, Ordering::SeqCst);
        match *method {
            hyper::Method::GET => {
                self.gets.fetch_add(1, Ordering::SeqCst);
                if is_data(path) {
                    self.data_gets.fetch_add(1, Ordering::SeqCst);
                }
                if is_manifest(path) {
                    self.manifest_gets.fetch_add(1, Ordering::SeqCst);
                }
                if path.ends_with("/metadata.json") {
                    self.metadata_gets.fetch_add(1, Ordering::SeqCst);
                }
            }
            hyper::Method::HEAD => {
                self.heads.fetch_add(1, Ordering::SeqCst);
            }
            hyper::Method::PUT => {
                self.puts.fetch_add(1, Ordering::SeqCst);
                if is_data(path) {
                    self.data_puts.fetch_add(1, Ordering::SeqCst);
                    let stalling = {
                        let i = self.injection.lock().expect("fault lock");
                        self.stalled.load(Ordering::SeqCst) > 0
                            || i.queued.iter().any(|(_, f)| matches!(f, Fault::Stall(_)))
                    };
                    if stalling {
                        self.data_puts_during_a_stall.fetch_add(1, Ordering::SeqCst);
                    }
                }
                // One atomic step: concurrent part uploads must not both take the last
                // pass (a load, then a decrement, let two through and skip zero).
                let counted =
                    self.puts_until_down
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                            (left > 0).then(|| left - 1)
                        });
                if counted == Err(0) {
                    self.go_down();
                }
            }
            _ => {}
        }
        !self.is_down()
    }
}

/// A run's manifest, `manifests/<run>.json`, not a log entry.
fn is_manifest(path: &str) -> bool {
    path.contains("/manifests/") && path.ends_with(".json") && !path.contains(".log/")
}

fn is_data(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|last| last.starts_with("data."))
}

/// The XML error answer S3 gives, with its status.
fn error_response(status: u16, code: &str) -> hyper::Response<s3s::Body> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <Error><Code>{code}</Code><Message>injected by the test server</Message></Error>"
    );
    let mut r = hyper::Response::new(s3s::Body::from(body));
    *r.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/xml"),
    );
    r
}

/// Serves `res` with its body cut off halfway: the client sees a short body and a dropped
/// connection.
async fn truncated(res: hyper::Response<s3s::Body>) -> hyper::Response<s3s::Body> {
    let (parts, body) = res.into_parts();
    let Ok(all) = http_body_util::BodyExt::collect(body).await else {
        return hyper::Response::from_parts(parts, s3s::Body::empty());
    };
    let all = all.to_bytes();
    let half = all.slice(..all.len() / 2);
    let frames: Vec<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>> = vec![
        Ok(hyper::body::Frame::data(half)),
        Err(std::io::Error::other("body truncated (test fault)")),
    ];
    let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
    hyper::Response::from_parts(parts, s3s::Body::http_body(body))
}

async fn corrupted(res: hyper::Response<s3s::Body>) -> hyper::Response<s3s::Body> {
    let (parts, body) = res.into_parts();
    let Ok(all) = http_body_util::BodyExt::collect(body).await else {
        return hyper::Response::from_parts(parts, s3s::Body::empty());
    };
    let mut all = all.to_bytes().to_vec();
    let middle = all.len() / 2;
    if let Some(b) = all.get_mut(middle) {
        *b ^= 0x5a;
    }
    hyper::Response::from_parts(parts, s3s::Body::from(bytes::Bytes::from(all)))
}

pub struct S3Server {
    pub addr: SocketAddr,
    pub faults: Arc<Faults>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl S3Server {
    /// Serves the directory `root` (whose subdirectory `BUCKET` is the bucket).
    pub fn start(root: &Path) -> S3Server {
        std::fs::create_dir_all(root.join(BUCKET)).expect("create bucket directory");
        let fs = s3s_fs::FileSystem::new(root).expect("open s3s-fs root");
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let faults = Arc::new(Faults::default());
        faults.heal();
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        std_listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = std_listener.local_addr().expect("listener address");
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let f = faults.clone();
        let writes = Arc::new(tokio::sync::RwLock::new(()));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("server runtime");
            rt.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(std_listener).expect("tokio listener");
                let http = ConnBuilder::new(TokioExecutor::new());
                loop {
                    let socket = tokio::select! {
                        r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                        _ = &mut rx => break,
                    };
                    if f.is_down() {
                        drop(socket);
                        continue;
                    }
                    // Without it, Nagle's algorithm and delayed ACKs stall small answers by
                    // 40 ms, which no real S3 server does (docs/PERFORMANCE.md).
                    let _ = socket.set_nodelay(true);
                    let svc = service.clone();
                    let f2 = f.clone();
                    let writes = writes.clone();
                    let handler = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let svc = svc.clone();
                            let writes = writes.clone();
                            let admitted = f2.admit(req.method(), req.uri().path());
                            let fault = f2.pick(req.method(), req.uri());
                            let f3 = f2.clone();
                            async move {
                                if !admitted {
                                    if matches!(fault, Some(Fault::Stall(_))) {
                                        f3.stalled.fetch_sub(1, Ordering::SeqCst);
                                    }
                                    return Err(s3s::HttpError::new(
                                        "server is down (test fault)".into(),
                                    ));
                                }
                                match fault {
                                    Some(Fault::InternalError) => {
                                        return Ok(error_response(500, "InternalError"));
                                    }
                                    Some(Fault::Unavailable) => {
                                        return Ok(error_response(503, "ServiceUnavailable"));
                                    }
                                    Some(Fault::SlowDown) => {
                                        return Ok(error_response(503, "SlowDown"));
                                    }
                                    Some(Fault::AccessDenied) => {
                                        return Ok(error_response(403, "AccessDenied"));
                                    }
                                    Some(Fault::Reset) => {
                                        return Err(s3s::HttpError::new(
                                            "connection dropped (test fault)".into(),
                                        ));
                                    }
                                    Some(Fault::TruncateBody | Fault::CorruptBody)
                                        if req.method() != hyper::Method::GET =>
                                    {
                                        return Err(s3s::HttpError::new(
                                            "connection dropped (test fault)".into(),
                                        ));
                                    }
                                    Some(Fault::TruncateBody) => {
                                        let res = hyper::service::Service::call(&svc, req).await?;
                                        return Ok(truncated(res).await);
                                    }
                                    // Served below; its answer is dropped there.
                                    Some(Fault::LostAnswer) => {}
                                    Some(Fault::CorruptBody) => {
                                        let res = hyper::service::Service::call(&svc, req).await?;
                                        return Ok(corrupted(res).await);
                                    }
                                    Some(Fault::Stall(d)) => {
                                        // `stalled` was counted up when the fault was picked.
                                        tokio::time::sleep(d).await;
                                        f3.stalled.fetch_sub(1, Ordering::SeqCst);
                                    }
                                    None => {}
                                }
                                // s3s-fs checks a condition and then writes, not atomically, and
                                // two overlapping writers of one key can leave its data and its
                                // stored checksum from different writers (every later GET then
                                // fails). It also renames the new data into place before its
                                // checksum, and a GET reads the two at different moments, so a
                                // GET that overlaps a write of its key can pair one version's
                                // bytes with the other's checksum. Real servers apply a write
                                // atomically, for readers too: taking writes one at a time, and
                                // none while a request opens what it reads (the response then
                                // streams from the file it opened), makes this test double do
                                // the same.
                                let is_write = req.method() == hyper::Method::PUT
                                    || req.method() == hyper::Method::POST
                                    || req.method() == hyper::Method::DELETE;
                                let lost = |served| match fault {
                                    Some(Fault::LostAnswer) => {
                                        drop(served);
                                        Err(s3s::HttpError::new("answer lost (test fault)".into()))
                                    }
                                    _ => served,
                                };
                                if !is_write {
                                    let _no_write_meanwhile = writes.read().await;
                                    return lost(hyper::service::Service::call(&svc, req).await);
                                }
                                // Real servers store a body only once it is whole: it is read
                                // first here, and a broken one refused.
                                let (parts, body) = req.into_parts();
                                let body = match http_body_util::BodyExt::collect(body).await {
                                    Ok(b) => b.to_bytes(),
                                    Err(_) => {
                                        return Err(s3s::HttpError::new(
                                            "request body broke off".into(),
                                        ));
                                    }
                                };
                                // Spawned, so that a client that disconnects (a killed daemon)
                                // cannot cancel a write halfway, which a real server would not.
                                let req = hyper::Request::from_parts(parts, s3s::Body::from(body));
                                let write = tokio::spawn(async move {
                                    let _one_at_a_time = writes.write().await;
                                    svc.call(req).await
                                });
                                match write.await {
                                    Ok(r) => lost(r),
                                    Err(_) => Err(s3s::HttpError::new("write task failed".into())),
                                }
                            }
                        },
                    );
                    let conn = http
                        .serve_connection(TokioIo::new(socket), handler)
                        .into_owned();
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
            });
        });
        S3Server {
            addr,
            faults,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The same SDK client production uses, pointed at the test server.
pub fn client(endpoint: &str) -> aws_sdk_s3::Client {
    let creds = aws_sdk_s3::config::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test");
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}
