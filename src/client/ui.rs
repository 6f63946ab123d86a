//! Where the client's words go: plain lines (CI logs, pipes, tests) or, on a terminal, a
//! spinner with the current step and BuildKit's log scrolling above it.

use std::io::Write;
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressStyle};

/// The client's output.
pub trait Ui: Send {
    /// A progress line (phase changes, placement, upload).
    fn line(&mut self, text: &str);
    /// A line of the builder's log.
    fn log(&mut self, text: &str);
    /// Upload progress: bytes sent of total.
    fn upload(&mut self, sent: u64, total: u64);
    /// The final result (outcome summary or JSON), on stdout.
    fn result(&mut self, text: &str);
}

/// Plain lines: progress and log to one writer (stderr), results to another (stdout).
pub struct PlainUi {
    progress: Box<dyn Write + Send>,
    results: Box<dyn Write + Send>,
}

impl PlainUi {
    /// Over any two writers.
    pub fn new(progress: Box<dyn Write + Send>, results: Box<dyn Write + Send>) -> PlainUi {
        PlainUi { progress, results }
    }

    /// Progress to stderr, results to stdout.
    pub fn stdio() -> PlainUi {
        PlainUi::new(Box::new(std::io::stderr()), Box::new(std::io::stdout()))
    }
}

impl Ui for PlainUi {
    fn line(&mut self, text: &str) {
        let _ = writeln!(self.progress, "hearth: {text}");
    }
    fn log(&mut self, text: &str) {
        let _ = writeln!(self.progress, "{text}");
    }
    fn upload(&mut self, _sent: u64, _total: u64) {}
    fn result(&mut self, text: &str) {
        let _ = write!(self.results, "{text}");
        let _ = self.results.flush();
    }
}

/// A writer into a shared buffer (tests, and capturing output).
#[derive(Clone, Default)]
pub struct SharedBuffer(pub Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    /// What has been written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A spinner with the current step; lines scroll above it.
pub struct TerminalUi {
    bar: ProgressBar,
}

impl TerminalUi {
    /// A spinner on stderr.
    pub fn new() -> TerminalUi {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        TerminalUi { bar }
    }
}

impl Default for TerminalUi {
    fn default() -> Self {
        Self::new()
    }
}

impl Ui for TerminalUi {
    fn line(&mut self, text: &str) {
        self.bar.println(format!("» {text}"));
        self.bar.set_message(text.to_string());
    }
    fn log(&mut self, text: &str) {
        self.bar.println(format!("  {text}"));
    }
    fn upload(&mut self, sent: u64, total: u64) {
        self.bar.set_message(format!(
            "uploading context {} / {}",
            super::follow::human_bytes(sent),
            super::follow::human_bytes(total)
        ));
    }
    fn result(&mut self, text: &str) {
        self.bar.finish_and_clear();
        print!("{text}");
        let _ = std::io::stdout().flush();
    }
}

impl Drop for TerminalUi {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
