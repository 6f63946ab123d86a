//! The sender's wire half: a packed tar framed onto a stream, and the receiver's reply read
//! back. Async, because the stream is the exec connection's stdin and stdout.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::{done_line, header_line, UploadError, ERROR, OK};

/// Frames `tar` (exactly `size` bytes with hex sha256 `sha256`) onto `out`. `progress` is told
/// the bytes sent so far.
pub async fn send_frame(
    mut tar: impl AsyncRead + Unpin,
    size: u64,
    sha256: &str,
    out: &mut (impl AsyncWrite + Unpin),
    mut progress: impl FnMut(u64),
) -> Result<(), UploadError> {
    out.write_all(header_line(size, sha256).as_bytes()).await?;
    let mut sent = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    while sent < size {
        let want = (size - sent).min(buf.len() as u64) as usize;
        let n = tar.read(&mut buf[..want]).await?;
        if n == 0 {
            return Err(UploadError::Truncated(format!(
                "the packed context ended after {sent} of {size} bytes"
            )));
        }
        out.write_all(&buf[..n]).await?;
        sent += n as u64;
        progress(sent);
    }
    out.write_all(done_line(sha256).as_bytes()).await?;
    out.flush().await?;
    Ok(())
}

/// Reads the receiver's reply: the number of entries it unpacked, or its error.
pub async fn read_reply(input: impl AsyncRead + Unpin, sha256: &str) -> Result<u64, UploadError> {
    let mut lines = BufReader::new(input).lines();
    while let Some(line) = lines.next_line().await? {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix(OK) {
            let words: Vec<&str> = rest.split_whitespace().collect();
            return match words.as_slice() {
                [sha, entries] if *sha == sha256 => Ok(entries.parse().unwrap_or(0)),
                _ => Err(UploadError::Remote(format!("unexpected reply {line:?}"))),
            };
        }
        if let Some(rest) = line.strip_prefix(ERROR) {
            return Err(UploadError::Remote(rest.trim().to_string()));
        }
        // Anything else (a shell banner, a warning) is not the reply; keep reading.
    }
    Err(UploadError::Truncated(
        "the receiver closed the stream without a reply".into(),
    ))
}

/// Sends the tar file at `tar` on `out` while reading the receiver's reply from `reply`;
/// the reply is the verdict, a send error without one is the cause. `sent` counts bytes.
pub async fn send_file(
    tar: &std::path::Path,
    size: u64,
    sha256: &str,
    out: &mut (impl AsyncWrite + Unpin),
    reply: impl AsyncRead + Unpin,
    sent: &std::sync::atomic::AtomicU64,
) -> Result<u64, UploadError> {
    let file = tokio::fs::File::open(tar)
        .await
        .map_err(|e| UploadError::io(tar, e))?;
    let (sending, replied) = tokio::join!(
        send_frame(file, size, sha256, out, |n| {
            sent.store(n, std::sync::atomic::Ordering::Relaxed)
        }),
        read_reply(reply, sha256)
    );
    match (replied, sending) {
        (Ok(n), _) => Ok(n),
        (Err(e @ UploadError::Remote(_)), _) => Err(e),
        (Err(_), Err(send)) => Err(send),
        (Err(e), Ok(())) => Err(e),
    }
}
