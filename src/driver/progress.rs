//! Progress on a TTY (indicatif); silent when stderr is not a terminal (CI logs).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar on stderr when it is a terminal and `enabled`; hidden otherwise.
    pub fn new(enabled: bool) -> Progress {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        if enabled && std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        Progress { bar }
    }

    pub fn hidden() -> Progress {
        Progress::new(false)
    }

    /// Starts a phase (`batch=8`, `batch=8 warmup`) of `len` requests (unknown for --duration).
    pub fn phase(&self, label: &str, len: Option<usize>) {
        let style = match len {
            Some(_) => {
                ProgressStyle::with_template("{msg:>20} [{bar:30}] {pos}/{len} requests {elapsed}")
            }
            None => ProgressStyle::with_template("{msg:>20} {spinner} {pos} requests {elapsed}"),
        };
        if let Ok(style) = style {
            self.bar.set_style(style.progress_chars("=> "));
        }
        self.bar.set_length(len.unwrap_or(0) as u64);
        self.bar.set_position(0);
        self.bar.set_message(label.to_string());
    }

    pub fn inc(&self) {
        self.bar.inc(1);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// Prints a line above the bar (or plainly when there is none).
    pub fn println(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}
