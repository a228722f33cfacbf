//! What `--model` must be for each engine, checked before anything loads or is
//! written: a Hugging Face checkpoint directory, a GGUF file (or a directory holding
//! exactly one), or either. A GGUF's header is read here (magic, version, counts), so a
//! file that is not a GGUF at all fails as bad input at once; llama.cpp checks the rest
//! when it loads.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The model an engine takes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ModelInput {
    /// Nothing the engine loads (instruments, test adapters, a remote server);
    /// `--model` is optional and, when given, must exist (`openai` reads its tokenizer).
    None,
    /// A checkpoint directory: config.json and weights (vLLM).
    Checkpoint,
    /// A GGUF file, or a directory holding exactly one `.gguf` (llama.cpp).
    Gguf,
    /// Either of the two (Transformers loads a GGUF too, dequantized).
    CheckpointOrGguf,
    /// Something only the engine knows how to check, which it does when it loads
    /// (TensorRT-LLM's engine directory); here `--model` must only exist.
    CheckedAtLoad,
}

impl ModelInput {
    /// Whether validation requires `--model` (an engine that checks it at load says so
    /// itself).
    pub fn needed(self) -> bool {
        !matches!(self, ModelInput::None | ModelInput::CheckedAtLoad)
    }

    /// What to pass, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            ModelInput::None => "no model",
            ModelInput::CheckedAtLoad => "the engine's model directory",
            ModelInput::Checkpoint => "a model directory (config.json and weights)",
            ModelInput::Gguf => "a GGUF file or a directory holding one",
            ModelInput::CheckpointOrGguf => {
                "a model directory (config.json and weights) or a directory holding one GGUF"
            }
        }
    }

    /// Checks `path` for this kind of model; the error names the problem and the fix.
    pub fn check(self, path: &Path) -> Result<(), String> {
        match self {
            ModelInput::None | ModelInput::CheckedAtLoad => {
                if path.exists() {
                    Ok(())
                } else {
                    Err(format!(
                        "--model {}: no such file or directory",
                        path.display()
                    ))
                }
            }
            ModelInput::Checkpoint => check_checkpoint(path),
            ModelInput::Gguf => find_gguf(path).map(|_| ()),
            ModelInput::CheckpointOrGguf => {
                if path.is_dir() && path.join("config.json").is_file() {
                    check_checkpoint(path)
                } else {
                    find_gguf(path).map(|_| ()).map_err(|e| {
                        format!("{e} (or pass a checkpoint directory with config.json)")
                    })
                }
            }
        }
    }
}

/// The model directory must hold a config and weights before an engine loads it.
pub fn check_checkpoint(dir: &Path) -> Result<(), String> {
    if !dir.is_dir() {
        return Err(format!(
            "--model {}: no such directory; pass a model directory (scripts/setup.sh builds one)",
            dir.display()
        ));
    }
    if !dir.join("config.json").is_file() {
        return Err(format!(
            "--model {}: no config.json; pass a Hugging Face-style checkpoint directory",
            dir.display()
        ));
    }
    let has_weights = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten().any(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.ends_with(".safetensors") || n.ends_with(".bin") || n.ends_with(".pt")
            })
        })
        .unwrap_or(false);
    if !has_weights {
        return Err(format!(
            "--model {}: no weights (*.safetensors or *.bin); rebuild the model (scripts/setup.sh)",
            dir.display()
        ));
    }
    Ok(())
}

/// The GGUF file `path` names: the file itself, or the one `.gguf` in a directory.
/// Its header is checked.
pub fn find_gguf(path: &Path) -> Result<PathBuf, String> {
    let file = if path.is_dir() {
        let mut found: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("--model {}: {e}", path.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "gguf") && p.is_file())
            .collect();
        found.sort();
        match found.len() {
            1 => found.remove(0),
            0 => {
                return Err(format!(
                    "--model {}: no .gguf file in this directory; pass a GGUF file or its directory (scripts/setup.sh makes models/gemma-3-270m-gguf)",
                    path.display()
                ))
            }
            n => {
                return Err(format!(
                    "--model {}: {n} .gguf files in this directory; pass the one to load",
                    path.display()
                ))
            }
        }
    } else if path.is_file() {
        path.to_path_buf()
    } else {
        return Err(format!(
            "--model {}: no such file or directory; pass a GGUF file or its directory (scripts/setup.sh makes models/gemma-3-270m-gguf)",
            path.display()
        ));
    };
    check_gguf_header(&file)?;
    Ok(file)
}

/// The GGUF header: `GGUF`, a version llama.cpp reads (2 or 3), and tensor and
/// metadata counts that a real file could hold.
pub fn check_gguf_header(file: &Path) -> Result<(), String> {
    let bad = |why: &str| format!("--model {}: not a usable GGUF file: {why}", file.display());
    let mut f = std::fs::File::open(file).map_err(|e| bad(&e.to_string()))?;
    let mut head = [0u8; 24];
    f.read_exact(&mut head)
        .map_err(|_| bad("shorter than a GGUF header (24 bytes)"))?;
    if &head[..4] != b"GGUF" {
        return Err(bad("it does not start with the GGUF magic"));
    }
    let version = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if !(2..=3).contains(&version) {
        return Err(bad(&format!(
            "GGUF version {version} (llama.cpp reads 2 and 3)"
        )));
    }
    let tensors = u64::from_le_bytes(head[8..16].try_into().unwrap_or([0; 8]));
    let kvs = u64::from_le_bytes(head[16..24].try_into().unwrap_or([0; 8]));
    let len = f.metadata().map_or(0, |m| m.len());
    // Each tensor and key takes at least a few bytes of the file: counts beyond its size
    // mean a corrupt header.
    if tensors == 0 || tensors > len / 8 || kvs > len / 8 {
        return Err(bad(&format!(
            "implausible header ({tensors} tensors, {kvs} metadata keys in {len} bytes)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gguf_bytes(version: u32, tensors: u64, kvs: u64, pad: usize) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(version.to_le_bytes());
        b.extend(tensors.to_le_bytes());
        b.extend(kvs.to_le_bytes());
        b.extend(vec![0u8; pad]);
        b
    }

    #[test]
    fn gguf_in_a_file_or_a_directory() {
        let d = tempfile::tempdir().unwrap();
        let e = find_gguf(d.path()).unwrap_err();
        assert!(e.contains("no .gguf file"), "{e}");
        let f = d.path().join("m.gguf");
        std::fs::write(&f, gguf_bytes(3, 2, 5, 1000)).unwrap();
        assert_eq!(find_gguf(d.path()).unwrap(), f);
        assert_eq!(find_gguf(&f).unwrap(), f);
        std::fs::write(d.path().join("n.gguf"), gguf_bytes(3, 2, 5, 1000)).unwrap();
        assert!(find_gguf(d.path()).unwrap_err().contains("2 .gguf files"));
        let e = find_gguf(&d.path().join("none.gguf")).unwrap_err();
        assert!(e.contains("no such file"), "{e}");
    }

    #[test]
    fn corrupt_headers_are_bad_input() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("m.gguf");
        let check = |bytes: Vec<u8>| {
            std::fs::write(&f, bytes).unwrap();
            check_gguf_header(&f).unwrap_err()
        };
        assert!(check(b"GGU".to_vec()).contains("shorter than a GGUF header"));
        assert!(check(vec![7u8; 100]).contains("GGUF magic"));
        assert!(check(gguf_bytes(9, 2, 5, 100)).contains("version 9"));
        assert!(check(gguf_bytes(3, 1 << 40, 5, 100)).contains("implausible"));
        assert!(check(gguf_bytes(3, 0, 5, 100)).contains("implausible"));
    }

    #[test]
    fn each_input_kind_checks_its_own() {
        let d = tempfile::tempdir().unwrap();
        assert!(ModelInput::Checkpoint
            .check(d.path())
            .unwrap_err()
            .contains("no config.json"));
        std::fs::write(d.path().join("config.json"), "{}").unwrap();
        assert!(ModelInput::Checkpoint
            .check(d.path())
            .unwrap_err()
            .contains("no weights"));
        std::fs::write(d.path().join("model.safetensors"), "").unwrap();
        ModelInput::Checkpoint.check(d.path()).unwrap();
        ModelInput::CheckpointOrGguf.check(d.path()).unwrap();
        assert!(ModelInput::Gguf.check(d.path()).is_err());
        let g = tempfile::tempdir().unwrap();
        std::fs::write(g.path().join("m.gguf"), gguf_bytes(3, 2, 5, 1000)).unwrap();
        ModelInput::Gguf.check(g.path()).unwrap();
        ModelInput::CheckpointOrGguf.check(g.path()).unwrap();
        let e = ModelInput::CheckpointOrGguf
            .check(&g.path().join("x"))
            .unwrap_err();
        assert!(e.contains("or pass a checkpoint directory"), "{e}");
        assert!(ModelInput::None.check(g.path()).is_ok());
        assert!(ModelInput::None.check(&g.path().join("x")).is_err());
    }
}
