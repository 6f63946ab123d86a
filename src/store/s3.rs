//! The S3 store, through aws-sdk-s3: AWS S3 and S3-compatible services (MinIO, Ceph RGW, R2,
//! GCS interop). Endpoint, region and credentials come from the standard AWS variables
//! (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, profiles, IRSA...) unless flags
//! override them; with a credentials directory (the snapshot Jobs' mounted store Secret) the
//! credentials come from its files only. The SDK's own retries are off: [`super::retry`]
//! retries with jitter.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::credentials::{self, StoreCredentials};
use super::object::{ObjectInfo, StoreError};

/// S3 settings that may override the environment.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct S3Options {
    /// S3 endpoint URL, for MinIO, Ceph RGW, R2 and other S3-compatible services.
    #[arg(long = "s3-endpoint", env = "AWS_ENDPOINT_URL_S3")]
    pub endpoint: Option<String>,
    /// S3 region; defaults to the AWS configuration, then `us-east-1`.
    #[arg(long = "s3-region")]
    pub region: Option<String>,
    /// Address buckets as `endpoint/bucket` (path style), as MinIO and most S3-compatible
    /// services need.
    #[arg(long = "s3-path-style", env = "AWS_S3_FORCE_PATH_STYLE")]
    pub path_style: bool,
    /// Read the S3 credentials from this directory's files `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and optional `AWS_SESSION_TOKEN` (a mounted Secret), and from
    /// nowhere else. Without it, the usual AWS variables, profiles and roles apply.
    #[arg(long = "credentials-dir", env = "HEARTH_STORE_CREDENTIALS_DIR")]
    pub credentials_dir: Option<std::path::PathBuf>,
    /// The Secret mounted at `--credentials-dir`, named in errors about its files.
    #[arg(long = "credentials-secret", env = "HEARTH_STORE_CREDENTIALS_SECRET")]
    pub credentials_secret: Option<String>,
}

/// A bucket and key prefix.
#[derive(Clone, Debug)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

fn classify<E>(op: &'static str, key: &str, err: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().unwrap_or_default().to_string();
    let key = key.to_string();
    if status == Some(404) || code == "NoSuchKey" || code == "NotFound" {
        return StoreError::NotFound { key };
    }
    if status == Some(412) || code == "PreconditionFailed" {
        return StoreError::AlreadyExists { key };
    }
    let transient = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(_) => {
            matches!(status, Some(s) if s >= 500 || s == 429 || s == 409)
                || matches!(
                    code.as_str(),
                    "SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable"
                )
        }
        _ => false,
    };
    StoreError::S3 {
        op,
        key,
        message: DisplayErrorContext(&err).to_string(),
        transient,
    }
}

/// A provider that always gives `creds` (the SDK's `Credentials` redacts them in `Debug`).
fn static_provider(creds: StoreCredentials) -> Credentials {
    Credentials::new(
        creds.access_key_id,
        creds.secret_access_key,
        creds.session_token,
        None,
        "hearth-credentials-dir",
    )
}

impl S3Store {
    /// A store in `bucket` under `prefix` (no leading or trailing `/`). Fails only when a
    /// credentials directory is given and its files are missing or malformed.
    pub async fn new(bucket: &str, prefix: &str, opts: &S3Options) -> Result<S3Store, StoreError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(crate::crypto::aws_https_client());
        if let Some(dir) = &opts.credentials_dir {
            let creds = credentials::read_dir(dir, opts.credentials_secret.as_deref())?;
            loader = loader.credentials_provider(static_provider(creds));
        }
        let shared = loader.load().await;
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &opts.endpoint {
            b = b.endpoint_url(endpoint);
        }
        if let Some(region) = &opts.region {
            b = b.region(Region::new(region.clone()));
        } else if shared.region().is_none() {
            b = b.region(Region::from_static("us-east-1"));
        }
        if opts.path_style {
            b = b.force_path_style(true);
        }
        Ok(S3Store {
            client: aws_sdk_s3::Client::from_conf(b.build()),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }

    fn full(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    pub(super) async fn put(
        &self,
        key: &str,
        data: Bytes,
        if_absent: bool,
    ) -> Result<(), StoreError> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .body(ByteStream::from(data));
        if if_absent {
            req = req.if_none_match("*");
        }
        // Chunks carry their own BLAKE3 ids and are verified on read: hashing every payload
        // again for SigV4 would only cost CPU (headers are still signed).
        req.customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| classify("put", key, e))?;
        Ok(())
    }

    /// Reads an object (or `range` of it) into `buf`, emptied first, as the body arrives (no
    /// second copy); returns the buffer whatever happens.
    pub(super) async fn get_into(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
        mut buf: Vec<u8>,
    ) -> (Vec<u8>, Result<(), StoreError>) {
        buf.clear();
        let mut req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key));
        if let Some((start, len)) = range {
            if len == 0 {
                return (buf, Ok(()));
            }
            buf.reserve(usize::try_from(len).unwrap_or(0));
            req = req.range(format!("bytes={start}-{}", start + len - 1));
        }
        let mut body = match req.send().await {
            Ok(resp) => resp.body,
            Err(e) => return (buf, Err(classify("get", key, e))),
        };
        loop {
            match body.try_next().await {
                Ok(Some(bytes)) => buf.extend_from_slice(&bytes),
                Ok(None) => return (buf, Ok(())),
                Err(e) => {
                    let err = StoreError::S3 {
                        op: "get",
                        key: key.to_string(),
                        message: e.to_string(),
                        transient: true,
                    };
                    return (buf, Err(err));
                }
            }
        }
    }

    pub(super) async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        loop {
            let resp = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.full(prefix))
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| classify("list", prefix, e))?;
            for obj in resp.contents() {
                let Some(key) = obj.key() else { continue };
                let Some(rel) = key.get(strip..) else {
                    continue;
                };
                let modified = obj
                    .last_modified()
                    .and_then(|t| std::time::SystemTime::try_from(*t).ok())
                    .unwrap_or(std::time::UNIX_EPOCH);
                out.push(ObjectInfo {
                    key: rel.to_string(),
                    size: obj.size().unwrap_or(0).max(0) as u64,
                    modified,
                });
            }
            match resp.next_continuation_token() {
                Some(t) if resp.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    pub(super) async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match classify("delete", key, e) {
                StoreError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }
}
