//! The S3 server `scripts/bench` measures against: `s3s-fs` serving a directory on
//! 127.0.0.1, as the stand-alone `s3s-fs` binary does, but with `TCP_NODELAY` on every
//! accepted connection. Without it, a small response waits on Nagle's algorithm and the
//! client's delayed ACK (40 ms), which made small-file and listing figures 10-70x worse than
//! on other S3 servers: that was the harness, not S3 (docs/PERFORMANCE.md).
//!
//! `cargo run --release --example s3_server -- --port P --access-key A --secret-key S ROOT`
//! Objects are plain files at `ROOT/<bucket>/<key>`. It serves until killed.

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

fn main() {
    if let Err(e) = serve() {
        eprintln!("s3_server: {e}");
        std::process::exit(1);
    }
}

fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut port, mut access, mut secret, mut root) = (None, None, None, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next(),
            "--access-key" => access = args.next(),
            "--secret-key" => secret = args.next(),
            _ => root = Some(arg),
        }
    }
    let usage = "usage: s3_server --port P --access-key A --secret-key S ROOT";
    let (Some(port), Some(access), Some(secret), Some(root)) = (port, access, secret, root) else {
        return Err(usage.into());
    };
    let port: u16 = port.parse()?;
    let fs = s3s_fs::FileSystem::new(&root).map_err(|e| format!("cannot serve {root}: {e:?}"))?;
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(access.as_str(), secret.as_str()));
    let service = builder.build();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let http = ConnBuilder::new(TokioExecutor::new());
        loop {
            let (socket, _) = listener.accept().await?;
            socket.set_nodelay(true)?;
            let conn = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    })
}
