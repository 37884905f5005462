//! An S3 server in the test process: `s3s-fs` on 127.0.0.1, real HTTP and SigV4, with a
//! switch that takes it "down" (every connection dropped) on command or after a countdown of
//! PUT requests, and counters of requests by method.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

pub const ACCESS_KEY: &str = "mltrack-test-access";
/// Recognisable, so that a test can assert it never appears in output.
pub const SECRET_KEY: &str = "SECRET-sauce-4f1d9c-never-print";
pub const BUCKET: &str = "mltrack-test";

#[derive(Debug, Default)]
pub struct Faults {
    down: AtomicBool,
    /// PUT requests still let through before the server goes down; negative: no countdown.
    puts_until_down: AtomicI64,
    pub gets: AtomicU64,
    /// GETs of object data (`.../data.<fmt>`), not of metadata, manifests or listings.
    pub data_gets: AtomicU64,
    /// GETs of `metadata.json` files.
    pub metadata_gets: AtomicU64,
    pub puts: AtomicU64,
    /// PUTs of object data (whole objects and multipart parts of `.../data.<fmt>`).
    pub data_puts: AtomicU64,
    pub requests: AtomicU64,
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
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// Counts a request and says whether to serve it.
    fn admit(&self, method: &hyper::Method, path: &str) -> bool {
        self.requests.fetch_add(1, Ordering::SeqCst);
        match *method {
            hyper::Method::GET => {
                self.gets.fetch_add(1, Ordering::SeqCst);
                if path
                    .rsplit('/')
                    .next()
                    .is_some_and(|last| last.starts_with("data."))
                {
                    self.data_gets.fetch_add(1, Ordering::SeqCst);
                }
                if path.ends_with("/metadata.json") {
                    self.metadata_gets.fetch_add(1, Ordering::SeqCst);
                }
            }
            hyper::Method::PUT => {
                self.puts.fetch_add(1, Ordering::SeqCst);
                if path
                    .rsplit('/')
                    .next()
                    .is_some_and(|last| last.starts_with("data."))
                {
                    self.data_puts.fetch_add(1, Ordering::SeqCst);
                }
                if self.puts_until_down.load(Ordering::SeqCst) == 0 {
                    self.go_down();
                } else if self.puts_until_down.load(Ordering::SeqCst) > 0 {
                    self.puts_until_down.fetch_sub(1, Ordering::SeqCst);
                }
            }
            _ => {}
        }
        !self.is_down()
    }
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
        let writes = Arc::new(tokio::sync::Mutex::new(()));
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
                    let svc = service.clone();
                    let f2 = f.clone();
                    let writes = writes.clone();
                    let handler = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let svc = svc.clone();
                            let writes = writes.clone();
                            let admitted = f2.admit(req.method(), req.uri().path());
                            async move {
                                if !admitted {
                                    return Err(s3s::HttpError::new(
                                        "server is down (test fault)".into(),
                                    ));
                                }
                                // s3s-fs checks a condition and then writes, not atomically, and
                                // two overlapping writers of one key can leave its data and its
                                // stored checksum from different writers (every later GET then
                                // fails). Real servers apply writes atomically; taking writes
                                // one at a time makes this test double do the same.
                                let is_write = req.method() == hyper::Method::PUT
                                    || req.method() == hyper::Method::POST;
                                if !is_write {
                                    return hyper::service::Service::call(&svc, req).await;
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
                                    let _one_at_a_time = writes.lock().await;
                                    svc.call(req).await
                                });
                                match write.await {
                                    Ok(r) => r,
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
