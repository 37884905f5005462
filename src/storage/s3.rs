//! The S3 backend: AWS S3 or any S3-compatible server (MinIO, Garage, Ceph, R2), through
//! `aws-sdk-s3`.
//!
//! Keys live under an optional prefix in one bucket. Large files are uploaded with multipart
//! upload, each part streamed from the file at its offset, with a few parts in flight, so
//! memory stays flat whatever the file size. Conditional writes map to `If-None-Match: *` and
//! `If-Match: <etag>`; whether the server honours them is probed by the domain layer, not
//! assumed here. Throttling, 5xx and dropped connections are retried by the SDK's standard
//! policy, up to `MAX_ATTEMPTS` tries with jittered backoff capped at `MAX_BACKOFF`, and
//! without its retry quota (which stops retrying altogether after a burst of failures: on a
//! mount, that turns a flaky minute into failed training jobs). A GET whose body breaks off or
//! fails the SDK's checksum, or whose retry finds its pooled connection closed, is retried
//! here with the same bound and backoff, and each such retry is logged. Connect and read
//! timeouts keep a dead server from hanging a caller: an operation on a server that is down
//! fails within about `MAX_ATTEMPTS * MAX_BACKOFF / 2`.
//! Payloads are not SigV4-signed (the SDK would hash every byte once more to sign it) and the
//! SDK's own streaming checksum is off (it made uploads CPU-bound at 50 MB/s); instead each
//! PUT and part carries a CRC32C computed here with the CPU's CRC instruction, which the server
//! checks. Every byte is also verified against its SHA-256 when it is read back. Credentials
//! come from the standard AWS chain and never appear in errors: messages carry the operation,
//! the key and the server's error code.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::{RetryPartition, TokenBucket};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};

use super::{
    Body, GetResult, ListPage, ObjectMeta, ObjectStore, PutMode, Result, StorageError, check_key,
};

/// Files at least this large are uploaded in parts.
const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
/// The smallest part; grown for huge files so that no upload needs more than 10,000 parts.
const MIN_PART_SIZE: u64 = 8 * 1024 * 1024;
const MAX_PARTS: u64 = 10_000;
/// Parts uploaded at once; with the part size this bounds the memory of one upload.
const PARTS_IN_FLIGHT: usize = 4;
/// Bytes read from a file per chunk of a streamed body (the SDK's default, 4 KiB, makes the
/// upload CPU-bound on per-chunk overhead).
const READ_BUFFER: usize = 256 * 1024;
/// Tries of one request (the SDK's default, 3, leaves one failure in a thousand requests
/// unabsorbed when 10% fail; 10 is what mountpoint-s3 uses).
const MAX_ATTEMPTS: u32 = 10;
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an answer may keep us waiting (a server that stopped answering is given up on,
/// and the request tried again).
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The slowest pace, in bytes a second, at which a server is expected to assemble an upload's
/// parts. Some servers (s3s-fs, the test server) read every part back and hash it again before
/// they answer the completion, so a large object's answer can take longer than
/// [`READ_TIMEOUT`]; AWS S3 answers at once and keeps the connection alive while it works.
const COMPLETION_PACE: u64 = 16 * 1024 * 1024;

/// The read timeout of the completion of an upload of `size` bytes (see [`COMPLETION_PACE`]).
fn completion_timeout(size: u64) -> Duration {
    READ_TIMEOUT + Duration::from_secs(size / COMPLETION_PACE)
}

/// Counts each attempt after a request's first in the process's metrics (`store_retries`).
#[derive(Debug)]
struct CountRetries;

impl aws_sdk_s3::config::Intercept for CountRetries {
    fn name(&self) -> &'static str {
        "mltrack-count-retries"
    }

    fn read_before_attempt(
        &self,
        _context: &aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_sdk_s3::config::RuntimeComponents,
        cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        use aws_smithy_runtime_api::client::retries::RequestAttempts;
        if cfg
            .load::<RequestAttempts>()
            .is_some_and(|a| a.attempts() > 1)
        {
            crate::metrics::metrics().retried();
        }
        Ok(())
    }
}

/// The wait before try `attempt + 1`: the SDK's standard policy, exponential from
/// `INITIAL_BACKOFF`, capped at `MAX_BACKOFF`, with full jitter.
fn backoff(attempt: u32) -> Duration {
    let ceiling = INITIAL_BACKOFF
        .saturating_mul(1 << attempt.min(16))
        .min(MAX_BACKOFF);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    ceiling.mul_f64(f64::from(nanos % 1000) / 1000.0)
}

#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    /// Empty, or a prefix ending in `/`.
    prefix: String,
    /// `AWS_ENDPOINT_URL` when one is set, for the message when it cannot be reached.
    endpoint: Option<String>,
}

impl S3Store {
    /// Connects with the standard AWS configuration chain (environment, profile, instance
    /// role). A custom endpoint (`AWS_ENDPOINT_URL`) gets path-style addressing.
    pub async fn connect(bucket: &str, prefix: &str) -> Self {
        let region = aws_config::meta::region::RegionProviderChain::default_provider()
            .or_else(aws_config::Region::new("us-east-1"));
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(MAX_ATTEMPTS)
                    .with_initial_backoff(INITIAL_BACKOFF)
                    .with_max_backoff(MAX_BACKOFF),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .read_timeout(READ_TIMEOUT)
                    .build(),
            )
            .load()
            .await;
        let custom_endpoint = sdk.endpoint_url().is_some();
        let config = aws_sdk_s3::config::Builder::from(&sdk)
            .retry_partition(
                RetryPartition::custom("mltrack")
                    .token_bucket(TokenBucket::unlimited())
                    .build(),
            )
            .interceptor(CountRetries)
            .force_path_style(custom_endpoint)
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .build();
        let mut store = Self::with_client(Client::from_conf(config), bucket, prefix);
        // Without any `user:password@` part: a message never carries a secret.
        store.endpoint = sdk.endpoint_url().map(|e| match e.split_once("://") {
            Some((scheme, rest)) => {
                format!(
                    "{scheme}://{}",
                    rest.rsplit_once('@').map_or(rest, |(_, host)| host)
                )
            }
            None => e.to_string(),
        });
        store
    }

    pub fn with_client(client: Client, bucket: &str, prefix: &str) -> Self {
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        S3Store {
            client,
            bucket: bucket.to_string(),
            prefix,
            endpoint: None,
        }
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn strip<'a>(&self, full: &'a str) -> &'a str {
        full.strip_prefix(&self.prefix).unwrap_or(full)
    }

    async fn put_file_multipart(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        mode: &PutMode,
    ) -> Result<String> {
        let full = self.full(key);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| self.classify("start upload of", key, e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| remote("start upload of", key, "the server returned no upload id"))?
            .to_string();
        let result = self
            .upload_parts_and_complete(key, path, size, mode, &upload_id)
            .await;
        if result.is_err() {
            // Best effort: a failed abort leaves parts that the bucket's lifecycle rules clean.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&full)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    async fn upload_parts_and_complete(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        mode: &PutMode,
        upload_id: &str,
    ) -> Result<String> {
        let full = self.full(key);
        let part_size = MIN_PART_SIZE.max(size.div_ceil(MAX_PARTS));
        let count = size.div_ceil(part_size);
        let mut parts: Vec<CompletedPart> = futures::stream::iter(0..count)
            .map(|i| {
                let full = full.clone();
                async move {
                    let offset = i * part_size;
                    let len = part_size.min(size - offset);
                    let body = ByteStream::read_from()
                        .path(path)
                        .buffer_size(READ_BUFFER)
                        .offset(offset)
                        .length(Length::Exact(len))
                        .build()
                        .await
                        .map_err(|e| remote("read part of", key, &e.to_string()))?;
                    let crc = crc32c_of(key, path, offset, len).await?;
                    let number = i as i32 + 1;
                    let out = self
                        .client
                        .upload_part()
                        .bucket(&self.bucket)
                        .key(&full)
                        .upload_id(upload_id)
                        .part_number(number)
                        .content_length(len as i64)
                        .checksum_crc32_c(crc)
                        .body(body)
                        .customize()
                        .disable_payload_signing()
                        .send()
                        .await
                        .map_err(|e| self.classify("upload part of", key, e))?;
                    Ok::<_, StorageError>(
                        CompletedPart::builder()
                            .part_number(number)
                            .set_e_tag(out.e_tag().map(str::to_string))
                            .build(),
                    )
                }
            })
            .buffer_unordered(PARTS_IN_FLIGHT)
            .try_collect()
            .await?;
        parts.sort_by_key(|p| p.part_number());
        let mut req = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        req = match mode {
            PutMode::Overwrite => req,
            PutMode::Create => req.if_none_match("*"),
            PutMode::Update(etag) => req.if_match(etag),
        };
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(completion_timeout(size))
            .build();
        let out = req
            .customize()
            .config_override(aws_sdk_s3::config::Builder::default().timeout_config(timeouts))
            .send()
            .await
            .map_err(|e| conditional(mode, key, self.classify("complete upload of", key, e)))?;
        Ok(out.e_tag().unwrap_or_default().to_string())
    }
}

fn remote(op: &'static str, key: &str, message: &str) -> StorageError {
    StorageError::Remote {
        store: String::new(),
        op,
        key: key.to_string(),
        message: message.to_string(),
    }
}

impl S3Store {
    /// Turns an SDK error into a storage error by HTTP status; the message keeps the server's
    /// error code and the SDK's cause chain (which never includes credentials), or, for a
    /// store that is set up wrong, says what to fix ([`misconfiguration`]).
    fn classify<E, R>(&self, op: &'static str, key: &str, err: SdkError<E, R>) -> StorageError
    where
        E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
        R: std::fmt::Debug + HttpStatus + Send + Sync + 'static,
    {
        if let Some(fix) = misconfiguration(&err, self.endpoint.as_deref()) {
            return remote(op, key, &fix);
        }
        match err.raw_response().map(HttpStatus::status) {
            Some(404) => StorageError::NotFound {
                key: key.to_string(),
            },
            Some(412) => StorageError::PreconditionFailed {
                key: key.to_string(),
            },
            _ => remote(op, key, &error_chain(&err)),
        }
    }
}

/// What an operator must fix when the failure says the store is set up wrong rather than
/// failing: no credentials, credentials refused or without permission, a bucket that does not
/// exist or lives in another region, an endpoint that cannot be reached. One sentence each,
/// naming the setting to change (docs/STORE.md, "Errors a user sees"); `None` otherwise.
fn misconfiguration<E, R>(err: &SdkError<E, R>, endpoint: Option<&str>) -> Option<String>
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = err.code();
    match code {
        Some("NoSuchBucket") => {
            return Some(
                "the bucket does not exist: check the store URL (--store, MLTRACK_STORE or \
                 MLTRACK_S3_BUCKET)"
                    .into(),
            );
        }
        Some("AccessDenied" | "AllAccessDisabled") => {
            return Some(
                "access denied (AccessDenied): the credentials in use have no permission on \
                 this bucket and prefix; check their policy, or which ones are used (AWS_PROFILE)"
                    .into(),
            );
        }
        Some(
            c @ ("InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "InvalidToken"
            | "ExpiredToken"
            | "TokenRefreshRequired"
            | "NotSignedUp"),
        ) => {
            return Some(format!(
                "the server refused the credentials ({c}): check AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            ));
        }
        Some(c @ ("PermanentRedirect" | "AuthorizationHeaderMalformed")) => {
            return Some(format!(
                "the bucket is in another region ({c}): set AWS_REGION to the bucket's region"
            ));
        }
        _ => {}
    }
    let SdkError::DispatchFailure(failure) = err else {
        return None;
    };
    let mut causes = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if e.downcast_ref::<CredentialsError>().is_some() {
            return Some(
                "no AWS credentials were found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY, or give the node an instance role"
                    .into(),
            );
        }
        causes.push(e);
        next = e.source();
    }
    let refused = causes.iter().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    });
    let no_such_host = causes
        .iter()
        .any(|e| e.to_string().starts_with("dns error"));
    let why = if refused {
        "connection refused"
    } else if no_such_host {
        "no such host"
    } else if failure.is_timeout() {
        "no answer"
    } else {
        return None;
    };
    let endpoint = endpoint.map_or("the S3 endpoint".to_string(), |e| {
        format!("the S3 endpoint {e}")
    });
    Some(format!(
        "cannot connect to {endpoint} ({why}): check AWS_ENDPOINT_URL (or AWS_REGION) and the network"
    ))
}

/// The CRC32C of `len` bytes of `path` from `offset`, base64 as S3 wants it: the server checks
/// it, so bytes damaged in transit are refused rather than stored under a hash they do not have.
async fn crc32c_of(key: &str, path: &Path, offset: u64, len: u64) -> Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let path = path.to_path_buf();
    let crc = tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&path)?;
        f.seek(SeekFrom::Start(offset))?;
        let mut f = f.take(len);
        let mut buf = vec![0u8; READ_BUFFER];
        let mut crc = 0u32;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            crc = crc32c::crc32c_append(crc, &buf[..n]);
        }
        Ok(crc32c_base64(crc))
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r);
    crc.map_err(|source| StorageError::Io {
        op: "read for upload",
        key: key.to_string(),
        source,
    })
}

fn crc32c_base64(crc: u32) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = crc.to_be_bytes();
    let n = u64::from(u32::from_be_bytes(b)) << 16; // 48 bits: 32 of data, 16 of padding
    let mut out: String = (0..6)
        .map(|i| ALPHABET[((n >> (42 - 6 * i)) & 63) as usize] as char)
        .collect();
    out.push_str("==");
    out
}

/// An error and its sources as "a: b: c", each said once: the SDK's errors nest the same
/// message several levels deep.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// A failed condition means "exists" for a create and "changed" for an update.
fn conditional(mode: &PutMode, key: &str, e: StorageError) -> StorageError {
    match (mode, e) {
        (PutMode::Create, StorageError::PreconditionFailed { .. }) => StorageError::AlreadyExists {
            key: key.to_string(),
        },
        // Some servers answer an If-Match on a missing key with 404.
        (PutMode::Update(_), StorageError::NotFound { .. }) => StorageError::PreconditionFailed {
            key: key.to_string(),
        },
        (_, e) => e,
    }
}

/// The HTTP status of a raw response, whatever the SDK's response type.
trait HttpStatus {
    fn status(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

fn to_utc(t: Option<&aws_sdk_s3::primitives::DateTime>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos()))
}

impl S3Store {
    async fn get_once(&self, key: &str, range: Option<Range<u64>>) -> Result<GetResult> {
        check_key(key)?;
        let mut req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key));
        if let Some(r) = &range {
            if r.end <= r.start {
                return Ok(GetResult {
                    data: bytes::Bytes::new(),
                    etag: None,
                });
            }
            req = req.range(format!("bytes={}-{}", r.start, r.end - 1));
        }
        // The SDK retries failed requests, but not a body that breaks off or fails its
        // checksum after the response started, nor the next try when it finds the connection
        // closed under it: retry those here, with the SDK's bound and backoff. A request that
        // fails before any body arrived (a server that is down) is left to the SDK's policy.
        let mut attempt = 1;
        let mut body_broke = false;
        loop {
            let failure = match req.clone().send().await {
                Ok(out) => {
                    let etag = out.e_tag().map(str::to_string);
                    match collect_body(out, range.as_ref()).await {
                        Ok(data) => return Ok(GetResult { data, etag }),
                        Err(e) => {
                            body_broke = true;
                            remote("read body of", key, &error_chain(&e))
                        }
                    }
                }
                // A range starting past the end: like the other backends, nothing.
                Err(e) if e.raw_response().map(HttpStatus::status) == Some(416) => {
                    return Ok(GetResult {
                        data: bytes::Bytes::new(),
                        etag: None,
                    });
                }
                Err(SdkError::DispatchFailure(d)) if body_broke && d.is_other() => {
                    let why = d
                        .as_connector_error()
                        .map_or_else(|| "dispatch failure".to_string(), |c| error_chain(c));
                    remote("get", key, &why)
                }
                Err(e) => return Err(self.classify("get", key, e)),
            };
            if attempt >= MAX_ATTEMPTS {
                return Err(failure);
            }
            tracing::warn!(key, attempt, error = %failure, "retrying a GET whose body broke off");
            crate::metrics::metrics().retried();
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }

    async fn put_once(&self, key: &str, body: Body, mode: PutMode) -> Result<String> {
        check_key(key)?;
        let (stream, crc) = match &body {
            Body::Bytes(b) => (
                ByteStream::from(b.clone()),
                crc32c_base64(crc32c::crc32c(b)),
            ),
            Body::File(path) | Body::Adopt(path) => {
                let size = tokio::fs::metadata(path)
                    .await
                    .map_err(|source| StorageError::Io {
                        op: "stat",
                        key: key.to_string(),
                        source,
                    })?
                    .len();
                if size >= MULTIPART_THRESHOLD {
                    return self.put_file_multipart(key, path, size, &mode).await;
                }
                let crc = crc32c_of(key, path, 0, size).await?;
                let stream = ByteStream::read_from()
                    .path(path)
                    .buffer_size(READ_BUFFER)
                    .build()
                    .await
                    .map_err(|e| remote("read file for", key, &e.to_string()))?;
                (stream, crc)
            }
        };
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .checksum_crc32_c(crc)
            .body(stream);
        req = match &mode {
            PutMode::Overwrite => req,
            PutMode::Create => req.if_none_match("*"),
            PutMode::Update(etag) => req.if_match(etag),
        };
        let out = req
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| conditional(&mode, key, self.classify("put", key, e)))?;
        Ok(out.e_tag().unwrap_or_default().to_string())
    }

    async fn head_once(&self, key: &str) -> Result<Option<ObjectMeta>> {
        check_key(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                etag: out.e_tag().map(str::to_string),
                last_modified: to_utc(out.last_modified()),
            })),
            Err(e) => match self.classify("head", key, e) {
                StorageError::NotFound { .. } => Ok(None),
                e => Err(e),
            },
        }
    }

    async fn list_page_once(
        &self,
        prefix: &str,
        delimited: bool,
        token: Option<String>,
    ) -> Result<ListPage> {
        let mut req = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full(prefix))
            .set_continuation_token(token);
        if delimited {
            req = req.delimiter("/");
        }
        let out = req
            .send()
            .await
            .map_err(|e| self.classify("list", prefix, e))?;
        let objects = out
            .contents()
            .iter()
            .filter_map(|o| {
                Some(ObjectMeta {
                    key: self.strip(o.key()?).to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    etag: o.e_tag().map(str::to_string),
                    last_modified: to_utc(o.last_modified()),
                })
            })
            .collect();
        let prefixes = out
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix())
            .map(|p| self.strip(p).to_string())
            .collect();
        let next = if out.is_truncated() == Some(true) {
            out.next_continuation_token().map(str::to_string)
        } else {
            None
        };
        Ok(ListPage {
            objects,
            prefixes,
            next,
        })
    }

    async fn delete_once(&self, key: &str) -> Result<()> {
        check_key(key)?;
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.classify("delete", key, e) {
                StorageError::NotFound { .. } => Ok(()),
                e => Err(e),
            },
        }
    }
}

/// The operations, with the store's location added to remote errors so that a message says
/// which bucket could not be reached.
#[async_trait]
impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix.trim_end_matches('/'))
    }

    fn is_remote(&self) -> bool {
        true
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetResult> {
        self.get_once(key, range)
            .await
            .map_err(|e| e.in_store(&self.describe()))
    }

    async fn put(&self, key: &str, body: Body, mode: PutMode) -> Result<String> {
        self.put_once(key, body, mode)
            .await
            .map_err(|e| e.in_store(&self.describe()))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        self.head_once(key)
            .await
            .map_err(|e| e.in_store(&self.describe()))
    }

    async fn list_page(
        &self,
        prefix: &str,
        delimited: bool,
        token: Option<String>,
    ) -> Result<ListPage> {
        self.list_page_once(prefix, delimited, token)
            .await
            .map_err(|e| e.in_store(&self.describe()))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.delete_once(key)
            .await
            .map_err(|e| e.in_store(&self.describe()))
    }
}

/// The most a GET's body is given room for before it arrives: a larger body grows as it comes.
const MOST_PREALLOCATED: u64 = 64 << 20;

/// A GET's body in one buffer, sized from the range asked for (or the length the server
/// announced) and filled chunk by chunk as they arrive, so that a 1 MiB block costs 1 MiB while
/// it is read, not its chunks and a copy of them (the read-ahead keeps many in flight). A
/// block-sized body goes into a buffer of [`BLOCK_BUFFERS`], reused once the block is dropped.
async fn collect_body(
    out: aws_sdk_s3::operation::get_object::GetObjectOutput,
    range: Option<&Range<u64>>,
) -> std::result::Result<bytes::Bytes, aws_sdk_s3::primitives::ByteStreamError> {
    let announced = out.content_length().and_then(|l| u64::try_from(l).ok());
    let expected = match (range.map(|r| r.end - r.start), announced) {
        (Some(asked), Some(sent)) => asked.min(sent),
        (asked, sent) => asked.or(sent).unwrap_or(0),
    };
    let mut buf = BLOCK_BUFFERS
        .take(expected)
        .unwrap_or_else(|| Vec::with_capacity(expected.min(MOST_PREALLOCATED) as usize));
    let mut body = out.body;
    while let Some(chunk) = body.try_next().await? {
        buf.extend_from_slice(&chunk);
    }
    Ok(BLOCK_BUFFERS.wrap(buf))
}

/// Buffers of one block's size, kept for the next GET of a block once the block they held is
/// dropped. A cold read fetches a block a millisecond; a new 1 MiB buffer each time is a fresh
/// mapping for the kernel to fault in and zero, and a freed one a mapping to tear down (glibc
/// maps them one by one: `main.rs`), which cost a cold read 10 to 20% of its speed.
static BLOCK_BUFFERS: BlockBuffers = BlockBuffers(std::sync::Mutex::new(Vec::new()));

/// How many unused block buffers are kept (8 MiB at most, idle): a reader frees one block as
/// it fetches the next, so a few cover the turnover of several readers.
const KEPT_BUFFERS: usize = 8;

struct BlockBuffers(std::sync::Mutex<Vec<Vec<u8>>>);

impl BlockBuffers {
    /// What a buffer of the pool holds: one block of the usual size.
    const SIZE: usize = crate::cas::hashing::BLOCK_SIZE as usize;

    fn kept(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A kept buffer for a body of `expected` bytes, if it is block-sized (a small body does
    /// not get, and then hold on to, a whole block's buffer).
    fn take(&self, expected: u64) -> Option<Vec<u8>> {
        let size = Self::SIZE as u64;
        if expected <= size / 2 || expected > size {
            return None;
        }
        Some(
            self.kept()
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(Self::SIZE)),
        )
    }

    /// The body as `Bytes`; a pool buffer goes back to the pool when the last copy is dropped.
    fn wrap(&'static self, buf: Vec<u8>) -> bytes::Bytes {
        if buf.capacity() == Self::SIZE {
            bytes::Bytes::from_owner(Pooled(buf, self))
        } else {
            bytes::Bytes::from(buf)
        }
    }
}

struct Pooled(Vec<u8>, &'static BlockBuffers);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut kept = self.1.kept();
        if kept.len() < KEPT_BUFFERS {
            let mut buf = std::mem::take(&mut self.0);
            buf.clear();
            kept.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_block_buffer_is_used_again_once_its_block_is_dropped() {
        let pool: &'static super::BlockBuffers = Box::leak(Box::new(super::BlockBuffers(
            std::sync::Mutex::new(Vec::new()),
        )));
        let size = super::BlockBuffers::SIZE;
        assert!(
            pool.take(4096).is_none(),
            "a small body gets no block buffer"
        );
        let mut buf = pool.take(size as u64).expect("a block gets a pool buffer");
        buf.extend_from_slice(&vec![7u8; size]);
        let first = buf.as_ptr();
        let block = pool.wrap(buf);
        let copy = block.slice(10..20);
        drop(block);
        assert_eq!(&copy[..], &[7u8; 10], "a copy keeps the bytes alive");
        assert!(pool.kept().is_empty(), "not handed back while a copy lives");
        drop(copy);
        let again = pool
            .take(size as u64 - 1)
            .expect("a block gets a pool buffer");
        assert_eq!(again.as_ptr(), first, "the same buffer, handed back");
        assert!(again.is_empty());
    }

    #[test]
    fn crc32c_is_sent_as_big_endian_base64() {
        assert_eq!(super::crc32c_base64(0x1234_5678), "EjRWeA==");
        assert_eq!(super::crc32c_base64(0), "AAAAAA==");
    }
}
