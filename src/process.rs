//! Process hygiene: Ctrl-C handling and making sure no child outlives the harness.

use crate::terminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static CANCEL: AtomicBool = AtomicBool::new(false);

/// How long children get between SIGTERM and SIGKILL when a run ends.
pub const CHILD_GRACE: Duration = Duration::from_secs(3);

/// Set while an engine loads: nothing is measured yet, so Ctrl-C quits at once.
static LOADING: AtomicBool = AtomicBool::new(false);
/// What to remove if Ctrl-C comes while loading: the result directory, when this run
/// created it, else just its engine log.
static LOADING_CLEANUP: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Installs the Ctrl-C (and SIGTERM) handler once. While an engine loads, Ctrl-C ends
/// the harness at once (nothing is measured; the empty result directory is removed).
/// Afterwards the first signal asks the run to stop submitting and save what it
/// measured; a second one exits at once with 130.
pub fn install_interrupt() -> &'static AtomicBool {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    if !INSTALLED.swap(true, Ordering::SeqCst) {
        let res = ctrlc::set_handler(|| {
            if LOADING.load(Ordering::SeqCst) {
                terminal::eprintln(
                    "\ninterrupted while the engine was loading: nothing was measured",
                );
                quit_now(Duration::from_millis(500));
            }
            if CANCEL.swap(true, Ordering::SeqCst) {
                quit_now(Duration::from_secs(3));
            }
            terminal::eprintln(
                "\ninterrupted: finishing what was measured (Ctrl-C again to quit at once)",
            );
        });
        if let Err(e) = res {
            terminal::eprintln(&format!(
                "warning: cannot install the Ctrl-C handler ({e}); Ctrl-C will not save results"
            ));
        }
    }
    &CANCEL
}

/// Ends the process from the signal thread: children first, then the loading run's
/// leftovers, then `_exit` (the main thread may be deep inside an engine's C code, so
/// no atexit handler or destructor runs).
fn quit_now(grace: Duration) -> ! {
    kill_children(grace);
    if let Some(p) = LOADING_CLEANUP.lock().ok().and_then(|mut g| g.take()) {
        if p.is_dir() {
            let _ = std::fs::remove_dir_all(&p);
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }
    // SAFETY: _exit ends the process without running anything else.
    unsafe { libc::_exit(crate::error::EXIT_INTERRUPTED) }
}

/// Marks an engine load in progress until dropped; `cleanup` is removed if Ctrl-C ends it.
pub struct Loading(());

impl Loading {
    pub fn start(cleanup: PathBuf) -> Loading {
        if let Ok(mut g) = LOADING_CLEANUP.lock() {
            *g = Some(cleanup);
        }
        LOADING.store(true, Ordering::SeqCst);
        Loading(())
    }
}

impl Drop for Loading {
    fn drop(&mut self) {
        LOADING.store(false, Ordering::SeqCst);
        if let Ok(mut g) = LOADING_CLEANUP.lock() {
            *g = None;
        }
    }
}

/// Direct children of this process, from /proc.
pub fn children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                // The command name may hold spaces and parentheses: parse after the last ')'.
                .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.to_string()))
                .and_then(|rest| rest.split_whitespace().nth(1)?.parse::<i32>().ok())
                == Some(me)
        })
        .collect()
}

/// Sends SIGTERM to every child, waits up to `grace`, then SIGKILLs the rest and reaps
/// them. Returns how many there were.
pub fn kill_children(grace: Duration) -> usize {
    let kids = children();
    for &pid in &kids {
        // SAFETY: plain syscalls on pids that were our children a moment ago.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + grace;
    loop {
        reap();
        if children().is_empty() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in children() {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    reap();
    kids.len()
}

fn reap() {
    loop {
        let mut status = 0;
        // SAFETY: non-blocking wait for any child; `status` is a valid out pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
    }
}
