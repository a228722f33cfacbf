//! Process hygiene: Ctrl-C handling and making sure no child outlives the harness.
//!
//! Children are found two ways: direct children from /proc (engine adapters' helpers),
//! and process groups an engine registers ([`register_group`]): a server the harness
//! starts (`vllm-server`) leads its own group, so that its own children (vLLM's engine
//! core) are signalled with it even after the leader is gone, and the terminal's Ctrl-C
//! reaches only the harness, which then stops the server itself.

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

/// Whether Ctrl-C (or SIGTERM) asked the run to stop: engines that compute for long
/// inside one call (llama.cpp's abort callback) poll this to return early.
pub fn interrupted() -> bool {
    CANCEL.load(Ordering::Relaxed)
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

/// Process groups started by engines (their leaders' pids), signalled as wholes.
static GROUPS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Makes [`kill_children`] (and Ctrl-C) cover the process group `pgid` and everything
/// in it. The group's leader must be a child of this process started with
/// `process_group(0)`.
pub fn register_group(pgid: i32) {
    if let Ok(mut g) = GROUPS.lock() {
        if !g.contains(&pgid) {
            g.push(pgid);
        }
    }
}

/// Forgets a group whose members are all gone.
pub fn unregister_group(pgid: i32) {
    if let Ok(mut g) = GROUPS.lock() {
        g.retain(|&p| p != pgid);
    }
}

/// Whether any process of group `pgid` is still alive (zombies included until reaped).
pub fn group_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks whether the group has members we may signal.
    unsafe { libc::kill(-pgid, 0) == 0 }
}

fn registered_groups() -> Vec<i32> {
    GROUPS.lock().map(|g| g.clone()).unwrap_or_default()
}

/// SIGTERM to group `pgid`, up to `grace` for it to go, then SIGKILL; reaps the leader.
/// Returns whether anything was still running.
pub fn stop_group(pgid: i32, grace: Duration) -> bool {
    if !group_alive(pgid) {
        reap();
        return false;
    }
    // SAFETY: signals a process group this process started.
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        reap();
        if !group_alive(pgid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: as above.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(2);
    while group_alive(pgid) && Instant::now() < deadline {
        reap();
        std::thread::sleep(Duration::from_millis(20));
    }
    true
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

/// Sends SIGTERM to every child and every registered group, waits up to `grace`, then
/// SIGKILLs the rest and reaps them. Returns how many children and groups there were.
pub fn kill_children(grace: Duration) -> usize {
    let groups: Vec<i32> = registered_groups()
        .into_iter()
        .filter(|&g| group_alive(g))
        .collect();
    let kids = children();
    for &pid in &kids {
        // SAFETY: plain syscalls on pids that were our children a moment ago.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    for &g in &groups {
        // SAFETY: a process group an engine of this process started.
        unsafe { libc::kill(-g, libc::SIGTERM) };
    }
    let deadline = Instant::now() + grace;
    loop {
        reap();
        let groups_left = groups.iter().any(|&g| group_alive(g));
        if (children().is_empty() && !groups_left) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in children() {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    for &g in &groups {
        if group_alive(g) {
            // SAFETY: as above.
            unsafe { libc::kill(-g, libc::SIGKILL) };
        }
        unregister_group(g);
    }
    reap();
    // A group's leader is also a direct child: count it once.
    kids.iter().filter(|k| !groups.contains(k)).count() + groups.len()
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
