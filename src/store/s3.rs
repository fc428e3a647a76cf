//! S3 (and S3-compatible: SeaweedFS, MinIO, ...) object store.
//!
//! Conditional writes use `If-None-Match: *` (create only) and `If-Match: <etag>`
//! (compare and swap); for multipart uploads the condition goes on
//! CompleteMultipartUpload, so the object still appears atomically, whole.

use super::retry::{Cause, Retrier, RetryPolicy};
use super::{
    Chunk, Chunks, ETag, GetOutput, ListEntry, ObjectStore, PutMode, Result, Revalidated,
    StoreError, check_key,
};
use crate::metrics::StoreOp;
use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration,
};
use bytes::Bytes;
use futures::TryStreamExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Objects up to this size are written with one PutObject; larger ones in parts of this size.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// S3's limit on the number of parts of one upload.
const MAX_PARTS: usize = 10_000;
/// Parts uploaded concurrently.
const PART_CONCURRENCY: usize = 4;
/// Upper bound on ListObjectsV2 pages for one `list` (1000 keys a page).
const MAX_LIST_PAGES: usize = 1_000_000;
const DEFAULT_REGION: &str = "us-east-1";

/// Connection settings beyond what the AWS default chain (environment, profile) provides.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// Endpoint URL of an S3-compatible server; `AWS_ENDPOINT_URL` is honoured when unset.
    pub endpoint: Option<String>,
    /// Address buckets as `endpoint/bucket` instead of `bucket.endpoint`.
    pub path_style: bool,
    /// Region; when unset the default chain is asked, then `us-east-1`.
    pub region: Option<String>,
    /// How calls are retried (goprox retries, not the SDK: see [`super::retry`]).
    pub retry: RetryPolicy,
    /// Time to open a connection.
    pub connect_timeout: Option<Duration>,
}

/// User metadata naming one write (random), by which a write whose answer was lost is
/// recognised when it is settled (`x-amz-meta-goprox-write`).
const WRITE_TOKEN: &str = "goprox-write";

/// Connect timeout when none is given.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A store in an S3 bucket (any S3-compatible service), optionally under a key prefix.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    /// Key prefix without slashes at either end; empty for none.
    prefix: String,
    /// Endpoint URL when not AWS's default, for [`ObjectStore::describe`].
    endpoint: Option<String>,
    retrier: Arc<Retrier>,
}

impl S3Store {
    /// Build a client from the AWS default configuration chain plus `opts`.
    /// Sends no request (the bucket is not checked).
    pub async fn new(bucket: &str, prefix: &str, opts: &S3Options) -> anyhow::Result<Self> {
        if bucket.is_empty() {
            anyhow::bail!("S3 bucket name is empty");
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(endpoint) = &opts.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(region) = &opts.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let shared = loader.load().await;
        let mut conf = aws_sdk_s3::config::Builder::from(&shared).force_path_style(opts.path_style);
        if shared.region().is_none() {
            conf = conf.region(Region::new(DEFAULT_REGION));
        }
        // Flexible checksums (aws-chunked bodies with trailers) are not understood by every
        // S3-compatible server: only send them where an operation requires them, unless
        // the environment or profile chose otherwise.
        if shared.request_checksum_calculation().is_none() {
            conf = conf.request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
        }
        if shared.response_checksum_validation().is_none() {
            conf = conf.response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        // goprox retries itself: the SDK cannot resume a body that broke midway, and its
        // retry of a conditional write whose answer was lost would turn our own success into
        // a 412. The read timeout bounds the wait for a response's head; a body's pieces are
        // timed by goprox.
        conf = conf.retry_config(RetryConfig::disabled()).timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(opts.connect_timeout.unwrap_or(CONNECT_TIMEOUT))
                .read_timeout(opts.retry.read_timeout)
                .build(),
        );
        let mut store = Self::from_client(Client::from_conf(conf.build()), bucket, prefix);
        store.endpoint = shared.endpoint_url().map(str::to_string);
        store.retrier = Arc::new(Retrier::new(opts.retry.clone()));
        Ok(store)
    }

    /// Wrap an already configured client.
    pub fn from_client(client: Client, bucket: &str, prefix: &str) -> Self {
        Self {
            client,
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint: None,
            retrier: Arc::new(Retrier::new(RetryPolicy::default())),
        }
    }

    /// Run `attempt` until it succeeds, fails for good, or the policy says stop: an
    /// [`StoreError::Unavailable`] is tried again.
    async fn retrying<T, F, Fut>(&self, op: StoreOp, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut attempts = self.retrier.start(op);
        loop {
            attempts.paced().await;
            match attempt().await {
                Err(StoreError::Unavailable { cause, detail }) => {
                    tracing::debug!(op = op.as_str(), %cause, %detail, "store attempt failed");
                    if !attempts.again(cause).await {
                        return Err(StoreError::Unavailable { cause, detail });
                    }
                }
                r => {
                    self.retrier.succeeded();
                    return r;
                }
            }
        }
    }

    /// Create the bucket if it does not exist yet.
    pub async fn ensure_bucket(&self) -> anyhow::Result<()> {
        let mut req = self.client.create_bucket().bucket(&self.bucket);
        // us-east-1 is the default location and must not be named explicitly.
        if let Some(region) = self
            .client
            .config()
            .region()
            .map(|r| r.as_ref().to_string())
            && region != DEFAULT_REGION
        {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region.as_str()))
                    .build(),
            );
        }
        match req.send().await {
            Ok(_) => {
                tracing::info!(bucket = %self.bucket, "created S3 bucket");
                Ok(())
            }
            Err(e)
                if matches!(
                    e.code(),
                    Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(anyhow::anyhow!(
                "creating bucket {}: {}",
                self.bucket,
                DisplayErrorContext(&e)
            )),
        }
    }

    fn full_key(&self, key: &str) -> Result<String> {
        check_key(key)?;
        Ok(self.with_prefix(key))
    }

    /// What to strip from listed keys to get store keys: the prefix and its slash.
    fn strip_prefix(&self) -> String {
        if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        }
    }

    fn with_prefix(&self, s: &str) -> String {
        if self.prefix.is_empty() {
            s.to_string()
        } else {
            format!("{}/{}", self.prefix, s)
        }
    }

    async fn put_single(&self, full: &str, data: Bytes, mode: &PutMode) -> Result<ETag> {
        let op = put_op(mode);
        if *mode == PutMode::Overwrite {
            return self
                .retrying(op, || self.put_object_once(full, data.clone(), mode, None))
                .await;
        }
        // A conditional write is tried again only once it is settled that the failed attempt
        // was not applied.
        let token = self.retrier.token();
        self.write_settled(full, mode, &token, || {
            self.put_object_once(full, data.clone(), mode, Some(&token))
        })
        .await
    }

    /// A conditional write (`attempt`, which carries `token`): an attempt whose answer was
    /// lost or ambiguous is settled ([`S3Store::settle`]) and tried again only if it was not
    /// applied.
    async fn write_settled<F, Fut>(
        &self,
        full: &str,
        mode: &PutMode,
        token: &str,
        mut attempt: F,
    ) -> Result<ETag>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<ETag>>,
    {
        let mut attempts = self.retrier.start(put_op(mode));
        loop {
            attempts.paced().await;
            let (cause, detail) = match attempt().await {
                Err(StoreError::Unavailable { cause, detail }) => (cause, detail),
                // A multipart upload that is gone: an earlier completion whose answer was
                // lost applied it (or someone aborted it). Settle by what the object holds.
                Err(StoreError::NotFound(_)) => (
                    Cause::ServerError,
                    format!("CompleteMultipartUpload {full}: no such upload"),
                ),
                r => {
                    self.retrier.succeeded();
                    return r;
                }
            };
            match self.settle(full, mode, token).await? {
                Settled::Applied(etag) => {
                    tracing::info!(key = full, %cause, "conditional write settled: it was applied");
                    return Ok(etag);
                }
                Settled::Lost => {
                    tracing::info!(key = full, %cause, "conditional write settled: another won");
                    return Err(StoreError::PreconditionFailed);
                }
                Settled::NotApplied => {
                    if !attempts.again(cause).await {
                        return Err(StoreError::Unavailable { cause, detail });
                    }
                }
            }
        }
    }

    async fn put_object_once(
        &self,
        full: &str,
        data: Bytes,
        mode: &PutMode,
        token: Option<&str>,
    ) -> Result<ETag> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .set_metadata(token.map(|t| [(WRITE_TOKEN.to_string(), t.to_string())].into()))
            .body(ByteStream::from(data));
        req = match mode {
            PutMode::Overwrite => req,
            PutMode::CreateOnly => req.if_none_match("*"),
            PutMode::IfMatch(etag) => req.if_match(&etag.0),
        };
        let out = req
            .send()
            .await
            .map_err(|e| put_error("PutObject", full, e))?;
        etag_from(out.e_tag(), "PutObject", full)
    }

    /// After a write whose answer was lost or ambiguous: does the object carry our write's
    /// token (in its metadata: applied), the version the write was conditioned on (not
    /// applied), nothing (not applied, for a create), or another writer's version (lost)?
    async fn settle(&self, full: &str, mode: &PutMode, token: &str) -> Result<Settled> {
        let head = self
            .retrying(StoreOp::Head, || async {
                match self
                    .client
                    .head_object()
                    .bucket(&self.bucket)
                    .key(full)
                    .send()
                    .await
                {
                    Ok(out) => {
                        let etag = etag_from(out.e_tag(), "HeadObject", full)?;
                        let ours = out
                            .metadata()
                            .and_then(|m| m.get(WRITE_TOKEN))
                            .is_some_and(|t| t == token);
                        Ok(Some((etag, ours)))
                    }
                    Err(e) if is_not_found(&e) => Ok(None),
                    Err(e) => Err(backend("HeadObject", full, e)),
                }
            })
            .await?;
        Ok(match (head, mode) {
            (Some((etag, true)), _) => Settled::Applied(etag),
            (None, PutMode::IfMatch(_)) => Settled::Lost,
            (None, _) => Settled::NotApplied,
            (Some((etag, false)), PutMode::IfMatch(before)) if &etag == before => {
                Settled::NotApplied
            }
            (Some(_), PutMode::Overwrite) => Settled::NotApplied,
            (Some(_), _) => Settled::Lost,
        })
    }

    async fn put_multipart(&self, full: &str, data: Bytes, mode: &PutMode) -> Result<ETag> {
        // Grow parts beyond PART_SIZE only for objects that would need more than MAX_PARTS.
        let part_size = PART_SIZE.max(data.len().div_ceil(MAX_PARTS));
        let parts = (0..data.len().div_ceil(part_size)).map(move |i| {
            let start = i * part_size;
            let end = (start + part_size).min(data.len());
            // At most MAX_PARTS parts, so the part number fits an i32.
            Ok((
                i32::try_from(i + 1).unwrap_or(i32::MAX),
                data.slice(start..end),
            ))
        });
        self.multipart(full, futures::stream::iter(parts), mode)
            .await
    }

    /// Upload `parts` (numbered from 1, every one but the last at least 5 MiB) as one object:
    /// the upload is aborted if a part fails or `parts` yields an error.
    async fn multipart(
        &self,
        full: &str,
        parts: impl futures::Stream<Item = Result<(i32, Bytes)>>,
        mode: &PutMode,
    ) -> Result<ETag> {
        let token = self.retrier.token();
        let created = self
            .retrying(StoreOp::Put, || async {
                self.client
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(full)
                    .metadata(WRITE_TOKEN, &token)
                    .send()
                    .await
                    .map_err(|e| backend("CreateMultipartUpload", full, e))
            })
            .await?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| {
                StoreError::Backend(format!(
                    "CreateMultipartUpload {full}: no upload id in the response"
                ))
            })?
            .to_string();
        let result = self
            .upload_parts_and_complete(full, &upload_id, parts, mode, &token)
            .await;
        if result.is_err() {
            let aborted = self
                .retrying(StoreOp::Delete, || async {
                    match self
                        .client
                        .abort_multipart_upload()
                        .bucket(&self.bucket)
                        .key(full)
                        .upload_id(&upload_id)
                        .send()
                        .await
                    {
                        Ok(_) => Ok(()),
                        Err(e) if e.code() == Some("NoSuchUpload") || status(&e) == Some(404) => {
                            Ok(())
                        }
                        Err(e) => Err(backend("AbortMultipartUpload", full, e)),
                    }
                })
                .await;
            if let Err(e) = aborted {
                tracing::warn!(key = full, upload_id, "AbortMultipartUpload failed: {e}");
            }
        }
        result
    }

    async fn upload_parts_and_complete(
        &self,
        full: &str,
        upload_id: &str,
        parts: impl futures::Stream<Item = Result<(i32, Bytes)>>,
        mode: &PutMode,
        token: &str,
    ) -> Result<ETag> {
        let parts: Vec<CompletedPart> = parts
            .map_ok(|(number, body)| self.upload_part(full, upload_id, number, body))
            .try_buffered(PART_CONCURRENCY)
            .try_collect()
            .await?;
        self.write_settled(full, mode, token, || {
            self.complete_once(full, upload_id, &parts, mode)
        })
        .await
    }

    async fn upload_part(
        &self,
        full: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<CompletedPart> {
        self.retrying(StoreOp::Put, || async {
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(full)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(body.clone()))
                // A pack's parts are large: hashing each for the signature would cost
                // more CPU than the upload. What is stored is checked end to end instead:
                // entries against their index's CRC-32 and zlib checksums on every read,
                // the whole pack against its trailer when it is indexed.
                .customize()
                .disable_payload_signing()
                .send()
                .await
                .map_err(|e| backend("UploadPart", full, e))?;
            let etag = out.e_tag().ok_or_else(|| {
                StoreError::Backend(format!(
                    "UploadPart {full} #{number}: no ETag in the response"
                ))
            })?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .e_tag(etag)
                .build())
        })
        .await
    }

    async fn complete_once(
        &self,
        full: &str,
        upload_id: &str,
        parts: &[CompletedPart],
        mode: &PutMode,
    ) -> Result<ETag> {
        let mut req = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts.to_vec()))
                    .build(),
            );
        req = match mode {
            PutMode::Overwrite => req,
            PutMode::CreateOnly => req.if_none_match("*"),
            PutMode::IfMatch(etag) => req.if_match(&etag.0),
        };
        match req.send().await {
            Ok(out) => etag_from(out.e_tag(), "CompleteMultipartUpload", full),
            Err(e) if e.code() == Some("NoSuchUpload") => {
                Err(StoreError::NotFound(full.to_string()))
            }
            Err(e) => Err(put_error("CompleteMultipartUpload", full, e)),
        }
    }

    /// One ranged read from `offset` (at most `len` bytes), appended to `got`: what arrived
    /// stays there when the body breaks, so that the next attempt resumes after it.
    async fn range_once(
        &self,
        full: &str,
        offset: u64,
        len: u64,
        if_match: Option<&ETag>,
        got: &mut Received,
    ) -> Result<RangeEnd> {
        // To the end of the object (an open range) when the length is unbounded: a resumed
        // whole-object read; S3-compatible servers differ on ends past 2^63.
        let range = if len >= u64::MAX - offset {
            format!("bytes={offset}-")
        } else {
            format!("bytes={offset}-{}", offset + len - 1)
        };
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(full)
            .set_if_match(if_match.map(|e| e.0.clone()))
            .range(range);
        let out = match self.timed(req.send()).await {
            Ok(out) => out,
            Err(Answer::Timeout) => return Err(stalled("GetObject", full)),
            Err(Answer::Sdk(e)) if status(&e) == Some(416) || e.code() == Some("InvalidRange") => {
                return Ok(RangeEnd::PastEnd);
            }
            Err(Answer::Sdk(e)) if if_match.is_some() && status(&e) == Some(412) => {
                return Ok(RangeEnd::Changed);
            }
            Err(Answer::Sdk(e)) if is_not_found(&e) => return Ok(RangeEnd::Missing),
            Err(Answer::Sdk(e)) => return Err(backend("GetObject", full, *e)),
        };
        if got.etag.is_none() {
            got.etag = out.e_tag().map(|e| ETag(e.to_string()));
        }
        // A server that ignored the Range header sent the whole object: skip to `offset`.
        let skip = if out.content_range().is_some() {
            0
        } else {
            offset
        };
        let declared = out.content_length().and_then(|n| u64::try_from(n).ok());
        self.drain(out.body, full, declared, skip, len, got).await?;
        Ok(RangeEnd::Done)
    }

    /// Read a body piece by piece (each within the read timeout) into `got`, keeping `len`
    /// bytes after the first `skip`. A body that ends before its declared length (`declared`,
    /// the response's Content-Length) is cut short, even if the transport did not say so.
    async fn drain(
        &self,
        mut body: ByteStream,
        full: &str,
        declared: Option<u64>,
        mut skip: u64,
        len: u64,
        got: &mut Received,
    ) -> Result<()> {
        let limit = self.retrier.policy.read_timeout;
        let mut left = len;
        let mut seen = 0u64;
        loop {
            let next = match tokio::time::timeout(limit, body.next()).await {
                Err(_) => return Err(stalled("GetObject body", full)),
                Ok(next) => next,
            };
            let piece = match next {
                None => match declared {
                    Some(d) if seen < d => {
                        return Err(StoreError::Unavailable {
                            cause: Cause::Body,
                            detail: format!(
                                "GetObject {full}: body ended after {seen} of {d} bytes"
                            ),
                        });
                    }
                    _ => return Ok(()),
                },
                Some(Ok(piece)) => {
                    seen += piece.len() as u64;
                    piece
                }
                Some(Err(e)) => {
                    return Err(StoreError::Unavailable {
                        cause: Cause::Body,
                        detail: format!(
                            "GetObject {full}: reading body after {} bytes: {}",
                            got.len,
                            DisplayErrorContext(&e)
                        ),
                    });
                }
            };
            if let Some(piece) = take(piece, &mut skip, &mut left) {
                got.push(piece);
            }
        }
    }

    /// An SDK call bounded by the read timeout (the SDK's own bounds a read, not the wait).
    async fn timed<T, E>(
        &self,
        call: impl std::future::Future<Output = std::result::Result<T, SdkError<E>>>,
    ) -> std::result::Result<T, Answer<E>> {
        let limit = self
            .retrier
            .policy
            .read_timeout
            .saturating_add(Duration::from_secs(1));
        match tokio::time::timeout(limit, call).await {
            Err(_) => Err(Answer::Timeout),
            Ok(r) => r.map_err(|e| Answer::Sdk(Box::new(e))),
        }
    }

    /// A whole object (`GetObject`, or with `If-None-Match` when `known` is given), resumed
    /// where its body broke (a ranged read with `If-Match`, so that a changed object is read
    /// again from its start).
    async fn read_whole(&self, full: &str, known: Option<&ETag>) -> Result<Revalidated> {
        let op = if known.is_some() {
            StoreOp::GetIfChanged
        } else {
            StoreOp::Get
        };
        let mut attempts = self.retrier.start(op);
        let mut got = Received::default();
        loop {
            attempts.paced().await;
            let before = got.len;
            let r = if got.etag.is_none() {
                self.whole_once(full, known, &mut got).await
            } else {
                let etag = got.etag.clone();
                match self
                    .range_once(full, got.len, u64::MAX - got.len, etag.as_ref(), &mut got)
                    .await
                {
                    Ok(RangeEnd::Done | RangeEnd::PastEnd) => Ok(None),
                    Ok(RangeEnd::Missing) => Ok(Some(Revalidated::Missing)),
                    Ok(RangeEnd::Changed) => {
                        got = Received::default();
                        Err(StoreError::Unavailable {
                            cause: Cause::Body,
                            detail: format!("GetObject {full}: changed while it was read"),
                        })
                    }
                    Err(e) => Err(e),
                }
            };
            match r {
                Ok(Some(answer)) => {
                    self.retrier.succeeded();
                    return Ok(answer);
                }
                Ok(None) => {
                    self.retrier.succeeded();
                    let etag = got.etag.take().ok_or_else(|| {
                        StoreError::Backend(format!("GetObject {full}: no ETag in the response"))
                    })?;
                    let data = got.into_bytes();
                    return Ok(match known {
                        Some(k) if *k == etag => Revalidated::Unchanged,
                        _ => Revalidated::Changed(GetOutput { data, etag }),
                    });
                }
                Err(StoreError::Unavailable { cause, detail }) => {
                    if got.len > before {
                        attempts.progressed();
                    }
                    if !attempts.again(cause).await {
                        return Err(StoreError::Unavailable { cause, detail });
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The first request of [`S3Store::read_whole`]: `Ok(Some)` when the answer has no body
    /// (missing, unchanged), `Ok(None)` when the body is in `got`.
    async fn whole_once(
        &self,
        full: &str,
        known: Option<&ETag>,
        got: &mut Received,
    ) -> Result<Option<Revalidated>> {
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(full)
            .set_if_none_match(known.map(|e| e.0.clone()));
        let out = match self.timed(req.send()).await {
            Ok(out) => out,
            Err(Answer::Timeout) => return Err(stalled("GetObject", full)),
            Err(Answer::Sdk(e)) if known.is_some() && status(&e) == Some(304) => {
                return Ok(Some(Revalidated::Unchanged));
            }
            Err(Answer::Sdk(e)) if is_not_found(&e) => return Ok(Some(Revalidated::Missing)),
            Err(Answer::Sdk(e)) => return Err(backend("GetObject", full, *e)),
        };
        got.etag = Some(etag_from(out.e_tag(), "GetObject", full)?);
        let declared = out.content_length().and_then(|n| u64::try_from(n).ok());
        self.drain(out.body, full, declared, 0, u64::MAX, got)
            .await?;
        Ok(None)
    }
}

/// What a settled ambiguous write found.
enum Settled {
    /// The object holds our bytes: the write was applied (with this tag).
    Applied(ETag),
    /// The object is as before: the write can be tried again.
    NotApplied,
    /// Another writer's version is there: the precondition did not hold.
    Lost,
}

/// How a ranged read ended.
enum RangeEnd {
    Done,
    /// The range starts past the object's end.
    PastEnd,
    Missing,
    /// `If-Match` failed: the object is another version now.
    Changed,
}

/// A timed SDK call's failure.
enum Answer<E> {
    Timeout,
    Sdk(Box<SdkError<E>>),
}

/// The pieces of a read so far, and the object's tag.
#[derive(Default)]
struct Received {
    pieces: Vec<Bytes>,
    len: u64,
    etag: Option<ETag>,
}

impl Received {
    fn push(&mut self, piece: Bytes) {
        if !piece.is_empty() {
            self.len += piece.len() as u64;
            self.pieces.push(piece);
        }
    }

    fn into_bytes(self) -> Bytes {
        match <[Bytes; 1]>::try_from(self.pieces) {
            Ok([one]) => one,
            Err(pieces) => pieces.concat().into(),
        }
    }
}

fn stalled(op: &str, full: &str) -> StoreError {
    StoreError::Unavailable {
        cause: Cause::Timeout,
        detail: format!("{op} {full}: no answer within the read timeout"),
    }
}

fn put_op(mode: &PutMode) -> StoreOp {
    match mode {
        PutMode::Overwrite => StoreOp::Put,
        PutMode::CreateOnly => StoreOp::PutIfAbsent,
        PutMode::IfMatch(_) => StoreOp::PutIfMatch,
    }
}

/// State of a streamed upload: the chunks to come, what is buffered, the next part's number.
type PartState = Option<(Chunks, bytes::BytesMut, i32, String)>;

/// The next part of a streamed upload (PART_SIZE bytes, or what is left at the end).
async fn next_part(state: PartState) -> Option<(Result<(i32, Bytes)>, PartState)> {
    let (mut chunks, mut buf, n, key) = state?;
    loop {
        if buf.len() >= PART_SIZE {
            let part = buf.split_to(PART_SIZE).freeze();
            return Some((Ok((n, part)), Some((chunks, buf, n + 1, key))));
        }
        match chunks.recv().await {
            Some(Chunk::Data(b)) => buf.extend_from_slice(&b),
            Some(Chunk::End) if buf.is_empty() => return None,
            Some(Chunk::End) => return Some((Ok((n, buf.split().freeze())), None)),
            None => return Some((Err(super::abandoned(&key)), None)),
        }
    }
}

fn status<E>(err: &SdkError<E>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// A failed call as a store error: [`StoreError::Unavailable`] when another attempt may
/// succeed (see [`cause_of`]), else [`StoreError::Backend`].
fn backend<E>(op: &str, key: &str, err: SdkError<E>) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    let detail = format!("{op} {key}: {}", DisplayErrorContext(&err));
    match cause_of(&err) {
        Some(cause) => StoreError::Unavailable { cause, detail },
        None => StoreError::Backend(detail),
    }
}

/// Why a failed call may succeed when tried again; `None` for failures that will repeat
/// (access denied, no such bucket, a malformed request).
fn cause_of<E: ProvideErrorMetadata>(err: &SdkError<E>) -> Option<Cause> {
    match err {
        SdkError::TimeoutError(_) => Some(Cause::Timeout),
        SdkError::DispatchFailure(d) if d.is_timeout() => Some(Cause::Timeout),
        SdkError::DispatchFailure(d) if d.is_user() => None,
        SdkError::DispatchFailure(_) => Some(Cause::Connection),
        // The answer could not be read or parsed (cut short, garbled).
        SdkError::ResponseError(_) => Some(Cause::Body),
        SdkError::ServiceError(_) => {
            let code = err.code();
            if matches!(
                code,
                Some(
                    "SlowDown"
                        | "Throttling"
                        | "ThrottlingException"
                        | "RequestLimitExceeded"
                        | "TooManyRequestsException"
                        | "RequestThrottled"
                )
            ) || matches!(status(err), Some(429 | 503))
            {
                return Some(Cause::Throttled);
            }
            if matches!(code, Some("RequestTimeout" | "RequestTimeoutException")) {
                return Some(Cause::Timeout);
            }
            match status(err) {
                Some(500..=599) => Some(Cause::ServerError),
                _ if matches!(code, Some("InternalError")) => Some(Cause::ServerError),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Errors of a conditional write: 412 Precondition Failed, 409 ConditionalRequestConflict
/// (a concurrent conditional write won), and 404 NoSuchKey (`If-Match` on a missing object)
/// all mean the precondition did not hold.
fn put_error<E>(op: &str, key: &str, err: SdkError<E>) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    let code = err.code();
    if matches!(status(&err), Some(412 | 409))
        || matches!(
            code,
            Some("PreconditionFailed" | "ConditionalRequestConflict" | "NoSuchKey")
        )
    {
        return StoreError::PreconditionFailed;
    }
    backend(op, key, err)
}

/// The object does not exist. A missing bucket is a configuration error, not a missing
/// object (HeadObject cannot tell the two apart: it has no error body).
fn is_not_found<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    let code = err.code();
    code != Some("NoSuchBucket")
        && (status(err) == Some(404) || matches!(code, Some("NoSuchKey" | "NotFound")))
}

/// The part of `piece` that falls in a range: the first `skip` bytes of the stream are
/// dropped and no more than `left` kept (never more than asked, whatever a server sent).
fn take(mut piece: Bytes, skip: &mut u64, left: &mut u64) -> Option<Bytes> {
    let n = piece.len() as u64;
    if *left == 0 {
        return None;
    }
    if *skip >= n {
        *skip -= n;
        return None;
    }
    piece = piece.slice(*skip as usize..);
    *skip = 0;
    if piece.len() as u64 > *left {
        piece.truncate(*left as usize);
    }
    *left -= piece.len() as u64;
    (!piece.is_empty()).then_some(piece)
}

fn etag_from(etag: Option<&str>, op: &str, key: &str) -> Result<ETag> {
    etag.map(|e| ETag(e.to_string()))
        .ok_or_else(|| StoreError::Backend(format!("{op} {key}: no ETag in the response")))
}

#[async_trait]
impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        let endpoint = self
            .endpoint
            .as_deref()
            .map(|e| format!(" at {e}"))
            .unwrap_or_default();
        if self.prefix.is_empty() {
            format!("s3://{}{endpoint}", self.bucket)
        } else {
            format!("s3://{}/{}{endpoint}", self.bucket, self.prefix)
        }
    }

    async fn get(&self, key: &str) -> Result<Option<GetOutput>> {
        let full = self.full_key(key)?;
        Ok(match self.read_whole(&full, None).await? {
            Revalidated::Changed(got) => Some(got),
            Revalidated::Missing | Revalidated::Unchanged => None,
        })
    }

    async fn get_if_changed(&self, key: &str, etag: &ETag) -> Result<Revalidated> {
        let full = self.full_key(key)?;
        self.read_whole(&full, Some(etag)).await
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes> {
        let pieces = self.get_range_pieces(key, offset, len).await?;
        Ok(match <[Bytes; 1]>::try_from(pieces) {
            Ok([one]) => one,
            Err(pieces) => pieces.concat().into(),
        })
    }

    /// A ranged read, resumed after the bytes already received when its body breaks.
    async fn get_range_pieces(&self, key: &str, offset: u64, len: u64) -> Result<Vec<Bytes>> {
        let full = self.full_key(key)?;
        if len == 0 {
            // An empty range cannot be expressed in a Range header.
            return match self.head(key).await? {
                Some(_) => Ok(Vec::new()),
                None => Err(StoreError::NotFound(key.to_string())),
            };
        }
        let mut attempts = self.retrier.start(StoreOp::GetRange);
        let mut got = Received::default();
        loop {
            attempts.paced().await;
            let before = got.len;
            let etag = got.etag.clone();
            let r = self
                .range_once(
                    &full,
                    offset + got.len,
                    len - got.len,
                    etag.as_ref(),
                    &mut got,
                )
                .await;
            match r {
                Ok(RangeEnd::Done | RangeEnd::PastEnd) => {
                    self.retrier.succeeded();
                    return Ok(got.pieces);
                }
                Ok(RangeEnd::Missing) => return Err(StoreError::NotFound(key.to_string())),
                Ok(RangeEnd::Changed) => {
                    // Replaced while we read it: read the new version from the start.
                    got = Received::default();
                    if !attempts.again(Cause::Body).await {
                        return Err(StoreError::Unavailable {
                            cause: Cause::Body,
                            detail: format!("GetObject {full}: changed while it was read"),
                        });
                    }
                }
                Err(StoreError::Unavailable { cause, detail }) => {
                    tracing::debug!(key = full, %cause, %detail, received = got.len, "ranged read broke");
                    if got.len > before {
                        attempts.progressed();
                    }
                    if got.len >= len {
                        return Ok(got.pieces);
                    }
                    if !attempts.again(cause).await {
                        return Err(StoreError::Unavailable { cause, detail });
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn head(&self, key: &str) -> Result<Option<u64>> {
        let full = self.full_key(key)?;
        self.retrying(StoreOp::Head, || async {
            match self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(&full)
                .send()
                .await
            {
                Ok(out) => {
                    let len = out.content_length().ok_or_else(|| {
                        StoreError::Backend(format!("HeadObject {full}: no Content-Length"))
                    })?;
                    u64::try_from(len).map(Some).map_err(|_| {
                        StoreError::Backend(format!("HeadObject {full}: bad Content-Length {len}"))
                    })
                }
                Err(e) if is_not_found(&e) => Ok(None),
                Err(e) => Err(backend("HeadObject", &full, e)),
            }
        })
        .await
    }

    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<ETag> {
        let full = self.full_key(key)?;
        if data.len() <= PART_SIZE {
            self.put_single(&full, data, &mode).await
        } else {
            self.put_multipart(&full, data, &mode).await
        }
    }

    async fn put_stream(&self, key: &str, mut chunks: Chunks, mode: PutMode) -> Result<ETag> {
        let full = self.full_key(key)?;
        // Up to the first full part: a small object is one PutObject.
        let mut buf = bytes::BytesMut::new();
        while buf.len() <= PART_SIZE {
            match chunks.recv().await {
                Some(Chunk::Data(b)) => buf.extend_from_slice(&b),
                Some(Chunk::End) => return self.put_single(&full, buf.freeze(), &mode).await,
                None => return Err(super::abandoned(key)),
            }
        }
        // Parts of PART_SIZE as the chunks arrive, the rest as the last one.
        let parts = futures::stream::unfold(Some((chunks, buf, 1, key.to_string())), next_part);
        self.multipart(&full, parts, &mode).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let full = self.full_key(key)?;
        self.retrying(StoreOp::Delete, || async {
            match self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(&full)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if is_not_found(&e) => Ok(()),
                Err(e) => Err(backend("DeleteObject", &full, e)),
            }
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self
            .list_meta(prefix)
            .await?
            .into_iter()
            .map(|e| e.key)
            .collect())
    }

    async fn list_meta(&self, prefix: &str) -> Result<Vec<ListEntry>> {
        let full_prefix = self.with_prefix(prefix);
        let strip = self.strip_prefix();
        let mut entries = Vec::new();
        let mut token: Option<String> = None;
        for _page in 0..MAX_LIST_PAGES {
            let from = token.take();
            let out = self
                .retrying(StoreOp::ListMeta, || async {
                    self.client
                        .list_objects_v2()
                        .bucket(&self.bucket)
                        .prefix(&full_prefix)
                        .set_continuation_token(from.clone())
                        .send()
                        .await
                        .map_err(|e| backend("ListObjectsV2", &full_prefix, e))
                })
                .await?;
            for obj in out.contents() {
                if let Some(k) = obj.key().and_then(|k| k.strip_prefix(&strip))
                    && k.starts_with(prefix)
                {
                    entries.push(ListEntry {
                        key: k.to_string(),
                        size: obj.size().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
                        // An object without a date counts as brand new: age-based clean-up
                        // must never see it as old.
                        modified: obj
                            .last_modified()
                            .map(system_time)
                            .unwrap_or_else(SystemTime::now),
                    });
                }
            }
            match (out.is_truncated(), out.next_continuation_token()) {
                (Some(true), Some(next)) => token = Some(next.to_string()),
                _ => {
                    entries.sort_by(|a, b| a.key.cmp(&b.key));
                    entries.dedup_by(|a, b| a.key == b.key);
                    return Ok(entries);
                }
            }
        }
        Err(StoreError::Backend(format!(
            "ListObjectsV2 {full_prefix}: more than {MAX_LIST_PAGES} pages"
        )))
    }

    /// ListMultipartUploads under the store's prefix, then AbortMultipartUpload for each upload
    /// initiated before `older_than`.
    async fn abort_stale_uploads(&self, older_than: SystemTime) -> Result<u32> {
        let full_prefix = self.strip_prefix();
        let mut stale = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut upload_marker: Option<String> = None;
        for _page in 0..MAX_LIST_PAGES {
            let (km, um) = (key_marker.take(), upload_marker.take());
            let out = self
                .retrying(StoreOp::AbortStaleUploads, || async {
                    self.client
                        .list_multipart_uploads()
                        .bucket(&self.bucket)
                        .prefix(&full_prefix)
                        .set_key_marker(km.clone())
                        .set_upload_id_marker(um.clone())
                        .send()
                        .await
                        .map_err(|e| backend("ListMultipartUploads", &full_prefix, e))
                })
                .await?;
            for up in out.uploads() {
                let initiated = up.initiated().map(system_time);
                if let (Some(key), Some(id), Some(t)) = (up.key(), up.upload_id(), initiated)
                    && t < older_than
                {
                    stale.push((key.to_string(), id.to_string()));
                }
            }
            let next = (out.next_key_marker(), out.next_upload_id_marker());
            match (out.is_truncated(), next) {
                (Some(true), (Some(k), u)) if !k.is_empty() => {
                    key_marker = Some(k.to_string());
                    upload_marker = u.map(str::to_string);
                }
                _ => break,
            }
        }
        let mut aborted = 0;
        for (key, id) in stale {
            match self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&key)
                .upload_id(&id)
                .send()
                .await
            {
                Ok(_) => aborted += 1,
                // Completed or aborted by someone else meanwhile.
                Err(e) if e.code() == Some("NoSuchUpload") || status(&e) == Some(404) => {}
                Err(e) => return Err(backend("AbortMultipartUpload", &key, e)),
            }
        }
        Ok(aborted)
    }
}

/// An S3 timestamp as a `SystemTime` (dates before 1970 become the epoch).
fn system_time(t: &aws_sdk_s3::primitives::DateTime) -> SystemTime {
    u64::try_from(t.secs())
        .map(|secs| UNIX_EPOCH + Duration::new(secs, t.subsec_nanos()))
        .unwrap_or(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(sizes: &[usize]) -> Vec<Bytes> {
        let mut next = 0u8;
        sizes
            .iter()
            .map(|&n| {
                Bytes::from(
                    (0..n)
                        .map(|_| {
                            next = next.wrapping_add(1);
                            next
                        })
                        .collect::<Vec<u8>>(),
                )
            })
            .collect()
    }

    fn clip(pieces: impl Iterator<Item = Bytes>, mut skip: u64, mut left: u64) -> Vec<Bytes> {
        pieces
            .filter_map(|p| take(p, &mut skip, &mut left))
            .collect()
    }

    /// Clipping pieces gives exactly the bytes of the range, for any split of the body.
    #[test]
    fn clip_matches_slicing_the_whole() {
        let sizes = [3, 0, 5, 1, 7];
        let whole: Vec<u8> = pieces(&sizes).concat();
        for skip in 0..=whole.len() as u64 + 1 {
            for len in 0..=whole.len() as u64 + 1 {
                let got: Vec<u8> = clip(pieces(&sizes).into_iter(), skip, len).concat();
                let from = (skip as usize).min(whole.len());
                let to = (skip + len).min(whole.len() as u64) as usize;
                assert_eq!(got, whole[from..to], "skip {skip} len {len}");
            }
        }
    }
}
