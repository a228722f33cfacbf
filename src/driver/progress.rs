//! Progress on a TTY (indicatif); silent when the terminal's stderr is not a terminal
//! (CI logs). It draws on the terminal even while the engine's output is captured
//! ([`crate::terminal`]).

use crate::terminal::{self, Fd};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::Duration;

pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar on the terminal's stderr when it is a terminal and `enabled`; hidden
    /// otherwise.
    pub fn new(enabled: bool) -> Progress {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        if enabled && terminal::err_is_tty() {
            let term = console::Term::read_write_pair(Fd(0), Fd(terminal::err_fd()));
            bar.set_draw_target(ProgressDrawTarget::term(term, 10));
        }
        Progress { bar }
    }

    pub fn hidden() -> Progress {
        Progress::new(false)
    }

    /// A spinner with the elapsed time while something of unknown length runs (an
    /// engine loading).
    pub fn spinner(&self, label: &str) {
        self.bar.reset();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
            self.bar.set_style(style);
        }
        self.bar.set_message(label.to_string());
        self.bar.enable_steady_tick(Duration::from_millis(200));
    }

    /// Starts a phase (`batch=8`, `batch=8 warmup`) of `len` requests (unknown when the
    /// point runs to its floors).
    pub fn phase(&self, label: &str, len: Option<usize>) {
        self.bar.disable_steady_tick();
        let style = match len {
            Some(_) => {
                ProgressStyle::with_template("{msg:>20} [{bar:30}] {pos}/{len} requests {elapsed}")
            }
            None => ProgressStyle::with_template("{msg:>20} {spinner} {pos} requests {elapsed}"),
        };
        if let Ok(style) = style {
            self.bar.set_style(style.progress_chars("=> "));
        }
        // A bar finished by the previous phase (or the load spinner) starts over.
        self.bar.reset();
        self.bar.set_length(len.unwrap_or(0) as u64);
        self.bar.set_message(label.to_string());
    }

    /// `n` more requests of the phase finished.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    pub fn finish(&self) {
        self.bar.disable_steady_tick();
        self.bar.finish_and_clear();
    }

    /// Prints a line above the bar (or plainly when there is none).
    pub fn println(&self, line: &str) {
        if self.bar.is_hidden() {
            terminal::eprintln(line);
        } else {
            self.bar.println(line);
        }
    }
}
