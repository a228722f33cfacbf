//! The output section: the result directory and what the terminal shows
//! (`--out`, `--no-progress`, `--verbose`, `--wide`).

use super::{err, ConfigError};
use crate::cli::RunArgs;
use crate::metrics::catalog::View;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct OutputSection {
    pub out: PathBuf,
    pub progress: bool,
    /// Stream the engine's log to the terminal as well as to engine.log.
    pub verbose: bool,
    /// Which columns the terminal table shows.
    pub view: View,
}

pub fn parse(a: &RunArgs, engine: &str) -> Result<OutputSection, ConfigError> {
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from("results").join(format!(
            "{engine}-{}",
            chrono::Local::now().format("%Y%m%d-%H%M%S")
        ))
    });
    check_out_dir(&out)?;
    Ok(OutputSection {
        out,
        progress: !a.no_progress.unwrap_or(false),
        verbose: a.verbose.unwrap_or(false),
        view: View::of(a.wide.unwrap_or(false)),
    })
}

/// The result directory must be creatable and must not hold another run's results.
fn check_out_dir(out: &Path) -> Result<(), ConfigError> {
    if out.as_os_str().is_empty() {
        return err("out", "--out is empty; pass a directory");
    }
    if out.join(crate::trace::REQUESTS_FILE).exists() {
        return err(
            "out",
            format!(
                "--out {}: already holds results; choose another --out or remove it",
                out.display()
            ),
        );
    }
    if out.exists() && !out.is_dir() {
        return err(
            "out",
            format!("--out {}: exists and is not a directory", out.display()),
        );
    }
    // The nearest existing ancestor must be a writable directory, or nothing can be saved.
    let mut probe = out;
    while !probe.exists() {
        match probe.parent() {
            Some(p) if !p.as_os_str().is_empty() => probe = p,
            _ => {
                probe = Path::new(".");
                break;
            }
        }
    }
    if !probe.is_dir() || !access_w(probe) {
        return err(
            "out",
            format!(
                "--out {}: {} is not a writable directory; choose another --out",
                out.display(),
                probe.display()
            ),
        );
    }
    Ok(())
}

fn access_w(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(p: &Path) -> RunArgs {
        RunArgs {
            out: Some(p.to_path_buf()),
            ..Default::default()
        }
    }

    #[test]
    fn default_name_and_flags() {
        let o = parse(&RunArgs::default(), "calibration").unwrap();
        assert!(o.out.starts_with("results"));
        assert!(o.out.to_string_lossy().contains("calibration-"));
        assert!(o.progress && !o.verbose);
    }

    #[test]
    fn existing_results_a_file_or_an_unwritable_parent_are_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("requests.jsonl"), "").unwrap();
        assert!(parse(&out(d.path()), "x")
            .unwrap_err()
            .message
            .contains("already holds results"));
        let f = d.path().join("file");
        std::fs::write(&f, "").unwrap();
        assert!(parse(&out(&f), "x")
            .unwrap_err()
            .message
            .contains("not a directory"));
        assert!(parse(&out(&f.join("sub")), "x")
            .unwrap_err()
            .message
            .contains("not a writable directory"));
        assert!(parse(&out(Path::new("")), "x")
            .unwrap_err()
            .message
            .contains("empty"));
        parse(&out(&d.path().join("new/deeper")), "x").unwrap();
    }
}
