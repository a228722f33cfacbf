//! Process hygiene: Ctrl-C handling, SIGQUIT from an engine's own processes, and
//! making sure no child (or grandchild) outlives the harness.
//!
//! Children are found two ways: descendants from /proc (engine adapters' helpers and
//! what they start, such as SGLang's scheduler and detokenizer),
//! and process groups an engine registers ([`register_group`]): a server the harness
//! starts (`vllm-server`) leads its own group, so that its own children (vLLM's engine
//! core) are signalled with it even after the leader is gone, and the terminal's Ctrl-C
//! reaches only the harness, which then stops the server itself.

use crate::terminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
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
    unsafe { libc::_exit(crate::core::error::EXIT_INTERRUPTED) }
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

/// The pid of the last process that sent the harness SIGQUIT (0: none yet).
static SIGQUIT_FROM: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_sigquit(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
    let (code, pid) = unsafe { ((*info).si_code, (*info).si_pid()) };
    // kill()/sigqueue()/tgkill() from a process (SI_USER, SI_QUEUE, SI_TKILL are <= 0):
    // an engine's process saying a child failed. Only recorded; the engine fails the
    // run through its own API and the harness ends it, keeping what was measured.
    if code <= 0 && pid > 0 {
        SIGQUIT_FROM.store(pid, Ordering::SeqCst);
        return;
    }
    // From the terminal (Ctrl-\): the default action, as without the harness.
    // SAFETY: async-signal-safe calls only.
    unsafe {
        libc::signal(libc::SIGQUIT, libc::SIG_DFL);
        libc::raise(libc::SIGQUIT);
    }
}

/// Keeps an engine's SIGQUIT from killing the harness. SGLang's processes send their
/// host SIGQUIT when one of them fails (its scheduler at start-up, its watchdog when a
/// child dies), expecting a handler that kills the whole process tree; without one the
/// default action would end the harness at once (no results, no message). With this
/// handler a SIGQUIT sent by a process is only recorded ([`engine_sigquit`]), while
/// Ctrl-\ from the terminal still quits as usual. Installed once; engines that
/// install their own SIGQUIT handler on the main thread would replace it (the SGLang
/// adapter builds its engine on another thread, where SGLang installs none).
pub fn contain_engine_sigquit() {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return;
    }
    // SAFETY: a zeroed sigaction with a handler that only stores an atomic or restores
    // the default action; sigemptyset on its own mask.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigquit as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGQUIT, &sa, std::ptr::null_mut()) != 0 {
            terminal::eprintln(
                "warning: cannot install the SIGQUIT handler; an engine that signals its failure with SIGQUIT would kill the harness",
            );
        }
    }
}

/// The pid that last sent the harness SIGQUIT, if any did (see [`contain_engine_sigquit`]).
pub fn engine_sigquit() -> Option<i32> {
    match SIGQUIT_FROM.load(Ordering::SeqCst) {
        0 => None,
        pid => Some(pid),
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

/// (pid, parent pid) of every process, from /proc.
fn process_table() -> Vec<(i32, i32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The command name may hold spaces and parentheses: parse after the last ')'.
            let rest = stat.rsplit_once(')')?.1.to_string();
            let ppid = rest.split_whitespace().nth(1)?.parse::<i32>().ok()?;
            Some((pid, ppid))
        })
        .collect()
}

/// Direct children of this process, from /proc.
pub fn children() -> Vec<i32> {
    let me = std::process::id() as i32;
    process_table()
        .into_iter()
        .filter(|&(_, ppid)| ppid == me)
        .map(|(pid, _)| pid)
        .collect()
}

/// Every descendant of this process (children, their children, ...), parents first.
pub fn descendants() -> Vec<i32> {
    let table = process_table();
    let mut out = vec![std::process::id() as i32];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        let kids: Vec<i32> = table
            .iter()
            .filter(|&&(pid, ppid)| ppid == parent && !out.contains(&pid))
            .map(|&(pid, _)| pid)
            .collect();
        out.extend(kids);
        i += 1;
    }
    out.remove(0);
    out
}

/// Sends SIGTERM to every descendant (an engine's children may have children of their
/// own) and every registered group, waits up to `grace`, then SIGKILLs the rest and
/// reaps the children. Returns how many descendants and groups there were.
pub fn kill_children(grace: Duration) -> usize {
    let groups: Vec<i32> = registered_groups()
        .into_iter()
        .filter(|&g| group_alive(g))
        .collect();
    let kids = descendants();
    for &pid in &kids {
        // SAFETY: plain syscalls on pids that were our descendants a moment ago.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let alive = |pid: i32| {
        // SAFETY: signal 0 only checks for existence.
        let exists = unsafe { libc::kill(pid, 0) } == 0;
        exists && !is_zombie(pid)
    };
    for &g in &groups {
        // SAFETY: a process group an engine of this process started.
        unsafe { libc::kill(-g, libc::SIGTERM) };
    }
    let deadline = Instant::now() + grace;
    loop {
        reap();
        let groups_left = groups.iter().any(|&g| group_alive(g));
        if (!kids.iter().any(|&p| alive(p)) && !groups_left) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for &pid in kids.iter().filter(|&&p| alive(p)) {
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

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
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
