//! The real [`LogSource`] and [`Uploader`]: `pods/log` with follow, and `pods/exec` into the
//! builder's receiver container with the frame on stdin and the reply on stdout.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, LogParams};

use super::session::{LogSource, PendingUpload, Uploader};
use crate::contract::{RECEIVER_CONTAINER, UPLOAD_DIR};
use crate::upload::send::send_file;
use crate::upload::UploadError;

/// `pods/log` of the namespace's pods.
pub struct KubeLogs(pub Api<Pod>);

impl LogSource for KubeLogs {
    fn lines(
        &self,
        pod: &str,
        container: &str,
        follow: bool,
    ) -> BoxStream<'static, std::io::Result<String>> {
        let api = self.0.clone();
        let pod = pod.to_string();
        let params = LogParams {
            container: Some(container.to_string()),
            follow,
            ..Default::default()
        };
        futures::stream::once(async move { api.log_stream(&pod, &params).await })
            .map_err(std::io::Error::other)
            .map_ok(|reader| reader.lines())
            .try_flatten()
            .boxed()
    }
}

/// The command `hearth build` runs in the receiver container through `pods/exec`.
pub fn receive_command() -> Vec<String> {
    ["hearth", "receive", "--dir", UPLOAD_DIR, "--stdin"]
        .map(String::from)
        .to_vec()
}

/// `pods/exec` into the receiver container.
pub struct KubeExec(pub Api<Pod>);

impl Uploader for KubeExec {
    fn upload(
        &self,
        pod: &str,
        upload: PendingUpload,
        sent: Arc<AtomicU64>,
    ) -> BoxFuture<'static, Result<u64, UploadError>> {
        let api = self.0.clone();
        let pod = pod.to_string();
        Box::pin(async move {
            let params = AttachParams::default()
                .container(RECEIVER_CONTAINER)
                .stdin(true)
                .stdout(true)
                .stderr(false);
            let mut attached = api
                .exec(&pod, receive_command(), &params)
                .await
                .map_err(|e| UploadError::Remote(format!("exec into {pod}: {e}")))?;
            let mut stdin = attached
                .stdin()
                .ok_or_else(|| UploadError::Remote("exec gave no stdin".into()))?;
            let stdout = attached
                .stdout()
                .ok_or_else(|| UploadError::Remote("exec gave no stdout".into()))?;
            let result = send_file(
                &upload.tar,
                upload.size,
                &upload.sha256,
                &mut stdin,
                stdout,
                &sent,
            )
            .await;
            drop(stdin);
            attached.abort();
            result
        })
    }
}
