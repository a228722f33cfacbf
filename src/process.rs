//! Process hygiene: Ctrl-C handling and making sure no child outlives the harness.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static CANCEL: AtomicBool = AtomicBool::new(false);

/// Installs the Ctrl-C (and SIGTERM) handler once: the first signal asks the run to
/// stop submitting and save what it measured; a second one exits at once with 130.
pub fn install_interrupt() -> &'static AtomicBool {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    if !INSTALLED.swap(true, Ordering::SeqCst) {
        let res = ctrlc::set_handler(|| {
            if CANCEL.swap(true, Ordering::SeqCst) {
                kill_children();
                std::process::exit(crate::error::EXIT_INTERRUPTED);
            }
            eprintln!("\ninterrupted: finishing what was measured (Ctrl-C again to quit at once)");
        });
        if let Err(e) = res {
            eprintln!(
                "warning: cannot install the Ctrl-C handler ({e}); Ctrl-C will not save results"
            );
        }
    }
    &CANCEL
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

/// Sends SIGTERM to every child, waits up to 3 s, then SIGKILLs the rest and reaps them.
/// Returns how many there were.
pub fn kill_children() -> usize {
    let kids = children();
    for &pid in &kids {
        // SAFETY: plain syscalls on pids that were our children a moment ago.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        reap();
        if children().is_empty() || Instant::now() > deadline {
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
