//! The terminal belongs to the harness; the engine's own output goes to `engine.log`.
//!
//! Engines log a lot (vLLM prints hundreds of INFO lines per load, llama.cpp
//! thousands) from Python, C and C++ alike, so the only place to catch all of it is
//! the process's file descriptors 1 and 2. [`Capture::start`] points both at
//! `engine.log` in the result directory and keeps the real terminal on duplicated
//! descriptors, which every harness message ([`eprintln`], [`println`], the progress
//! bar) writes to. `--verbose` streams the log to the terminal as well. [`Capture`]
//! restores 1 and 2 when stopped or dropped.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The engine's log in the result directory.
pub const ENGINE_LOG: &str = "engine.log";

static TERM_OUT: AtomicI32 = AtomicI32::new(1);
static TERM_ERR: AtomicI32 = AtomicI32::new(2);

/// The terminal's stderr, wherever fd 2 points now.
pub fn err_fd() -> RawFd {
    TERM_ERR.load(Ordering::Relaxed)
}

/// The terminal's stdout.
pub fn out_fd() -> RawFd {
    TERM_OUT.load(Ordering::Relaxed)
}

/// A raw descriptor as a reader/writer (not closed on drop), for the progress bar's
/// terminal and the harness's own lines.
#[derive(Debug, Clone, Copy)]
pub struct Fd(pub RawFd);

impl Write for Fd {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // SAFETY: writes from a valid buffer to a descriptor this process holds open.
        let n = unsafe { libc::write(self.0, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Read for Fd {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // SAFETY: reads into a valid, writable buffer of `buf.len()` bytes.
        let n = unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// A line on the terminal's stderr, even while the engine's output is captured.
pub fn eprintln(line: &str) {
    let mut s = String::with_capacity(line.len() + 1);
    s.push_str(line);
    s.push('\n');
    let _ = Fd(err_fd()).write_all(s.as_bytes());
}

/// A line (or block) on the terminal's stdout.
pub fn println(text: &str) {
    let mut s = String::with_capacity(text.len() + 1);
    s.push_str(text);
    s.push('\n');
    let _ = Fd(out_fd()).write_all(s.as_bytes());
}

/// Whether the terminal's stderr is a terminal (for the progress bar).
/// The columns of the terminal standard output is, when it is one.
pub fn out_width() -> Option<u16> {
    // SAFETY: isatty only inspects the descriptor; TIOCGWINSZ fills the winsize it is
    // given, which lives on this stack for the call.
    unsafe {
        if libc::isatty(out_fd()) != 1 {
            return None;
        }
        let mut ws: libc::winsize = std::mem::zeroed();
        (libc::ioctl(out_fd(), libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_col > 0)
            .then_some(ws.ws_col)
    }
}

pub fn err_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(err_fd()) == 1 }
}

/// fds 1 and 2 pointed at `engine.log` until stopped or dropped.
pub struct Capture {
    path: PathBuf,
    saved_out: RawFd,
    saved_err: RawFd,
    tail: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    active: bool,
}

fn dup_cloexec(fd: RawFd) -> std::io::Result<RawFd> {
    // SAFETY: F_DUPFD_CLOEXEC on an open descriptor; the copy is not inherited by
    // children the engine starts, so they cannot write to the terminal behind our back.
    let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn redirect(from: RawFd, onto: RawFd) -> std::io::Result<()> {
    // SAFETY: both descriptors are open; dup2 atomically replaces `onto`.
    if unsafe { libc::dup2(from, onto) } < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Capture {
    /// Points fds 1 and 2 at `path` (appending). With `verbose`, a thread copies what
    /// arrives there to the terminal as well.
    pub fn start(path: &Path, verbose: bool) -> std::io::Result<Capture> {
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let saved_out = dup_cloexec(1)?;
        let saved_err = dup_cloexec(2)?;
        redirect(file.as_raw_fd(), 1)?;
        redirect(file.as_raw_fd(), 2)?;
        TERM_OUT.store(saved_out, Ordering::Relaxed);
        TERM_ERR.store(saved_err, Ordering::Relaxed);
        let tail = verbose.then(|| {
            let stop = Arc::new(AtomicBool::new(false));
            let s = stop.clone();
            let p = path.to_path_buf();
            let h = std::thread::spawn(move || tail_to_terminal(&p, &s));
            (stop, h)
        });
        Ok(Capture {
            path: path.to_path_buf(),
            saved_out,
            saved_err,
            tail,
            active: true,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Gives fds 1 and 2 back to the terminal.
    pub fn stop(&mut self) {
        if !std::mem::replace(&mut self.active, false) {
            return;
        }
        // SAFETY: flushes C stdio buffers (the engine's printf) into the log first.
        unsafe { libc::fflush(std::ptr::null_mut()) };
        if let Some((stop, h)) = self.tail.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = h.join();
        }
        let _ = redirect(self.saved_out, 1);
        let _ = redirect(self.saved_err, 2);
        TERM_OUT.store(1, Ordering::Relaxed);
        TERM_ERR.store(2, Ordering::Relaxed);
        // SAFETY: these duplicates are ours and no longer used.
        unsafe {
            libc::close(self.saved_out);
            libc::close(self.saved_err);
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Copies `path`'s new bytes to the terminal until `stop`, then once more.
fn tail_to_terminal(path: &Path, stop: &AtomicBool) {
    let Ok(mut f) = File::open(path) else { return };
    let _ = f.seek(SeekFrom::End(0));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let done = stop.load(Ordering::Relaxed);
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = Fd(err_fd()).write_all(&buf[..n]);
        }
        if done {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last `n` lines of a log file (empty if it cannot be read).
pub fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    let Ok(mut f) = File::open(path) else {
        return Vec::new();
    };
    // Enough for n long lines; a log can be large.
    let len = f.metadata().map_or(0, |m| m.len());
    let from = len.saturating_sub(64 * 1024);
    let _ = f.seek(SeekFrom::Start(from));
    let mut bytes = Vec::new();
    let _ = f.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    // The first line may be cut by the 64 KiB window.
    let skip = usize::from(from > 0);
    lines[skip.min(lines.len())..]
        .iter()
        .rev()
        .take(n)
        .rev()
        .map(|l| l.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_lines_takes_the_end() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("log");
        std::fs::write(&p, "a\n\nb\nc\nd\n").unwrap();
        assert_eq!(tail_lines(&p, 2), ["c", "d"]);
        assert_eq!(tail_lines(&p, 10), ["a", "b", "c", "d"]);
        assert!(tail_lines(&d.path().join("none"), 3).is_empty());
    }
}
