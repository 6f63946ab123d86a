//! `pods/<name>/exec` over WebSocket, as kube's client speaks it (`v5.channel.k8s.io`, or
//! `v4`): binary frames whose first byte is the channel (0 stdin, 1 stdout, 2 stderr,
//! 3 the final Status, 255 close of a channel in v5). The server runs nothing itself: a
//! test registers an exec handler (what a node agent would run in the container) that gets
//! the command and stdin and writes stdout; its exit code becomes the Status.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// One exec: where, what, and its stdin (None at EOF) and stdout.
pub struct ExecRequest {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub command: Vec<String>,
    pub stdin: mpsc::UnboundedReceiver<Bytes>,
    pub stdout: mpsc::UnboundedSender<Bytes>,
}

/// Runs an exec and returns its exit code.
pub type ExecHandler = Arc<dyn Fn(ExecRequest) -> BoxFuture<'static, i32> + Send + Sync>;

fn status(code: i32) -> Vec<u8> {
    let status = if code == 0 {
        json!({"metadata": {}, "status": "Success"})
    } else {
        json!({
            "metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        })
    };
    let mut frame = vec![3u8];
    frame.extend(serde_json::to_vec(&status).expect("json"));
    frame
}

/// Serves one upgraded exec connection.
pub async fn serve(upgraded: hyper::upgrade::Upgraded, handler: ExecHandler, mut req: ExecRequest) {
    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    let (mut sink, mut stream) = ws.split();
    let (stdin_tx, stdin_rx) = mpsc::unbounded_channel();
    let (stdout_tx, mut stdout_rx) = mpsc::unbounded_channel::<Bytes>();
    req.stdin = stdin_rx;
    req.stdout = stdout_tx;
    let run = tokio::spawn(handler(req));
    let reader = tokio::spawn(async move {
        let mut stdin = Some(stdin_tx);
        while let Some(Ok(msg)) = stream.next().await {
            let Message::Binary(data) = msg else {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
                continue;
            };
            match data.first() {
                Some(0) => {
                    if let Some(tx) = &stdin {
                        let _ = tx.send(Bytes::copy_from_slice(&data[1..]));
                    }
                }
                Some(255) if data.get(1) == Some(&0) => stdin = None,
                _ => {}
            }
        }
    });
    while let Some(chunk) = stdout_rx.recv().await {
        let mut frame = vec![1u8];
        frame.extend_from_slice(&chunk);
        if sink.send(Message::Binary(frame.into())).await.is_err() {
            break;
        }
    }
    let code = run.await.unwrap_or(1);
    let _ = sink.send(Message::Binary(status(code).into())).await;
    let _ = sink.send(Message::Close(None)).await;
    reader.abort();
}
