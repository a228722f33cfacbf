//! No input can crash the harness: property tests feed arbitrary flag values, TOML
//! files, dataset bytes and JSON to the parsers and readers, and assert that each
//! either succeeds or fails with a usage error (exit code 2) — never a panic, an abort
//! (which would end this test binary) or an unbounded allocation. A few extreme values
//! also go through the real binary, which must exit 2 and write nothing.
//!
//! Seeded (proptest's fixed RNG seed below) so CI runs the same cases every time:
//! CASES each for flags and TOML, DATA_CASES each for the dataset and trace readers.

mod common;
use clap::Parser;
use common::{fails, harness};
use llm_harness::app::exit_code;
use llm_harness::cli::{Cli, Command as Sub};
use llm_harness::config;
use llm_harness::core::error::EXIT_USAGE;
use llm_harness::engine::Registry;
use llm_harness::workload::{self, Tokenizer, WorkloadSpec};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use std::path::{Path, PathBuf};

const CASES: u32 = 1500;
const DATA_CASES: u32 = 400;
const SEED: u64 = 0x6c6c_6d2d_6861_726e;

fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(SEED),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Numbers that break naive parsers: zero, negatives, huge, non-finite, fractional,
/// overflowing, and text.
fn nasty_number() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("inf".to_string()),
        Just("-inf".to_string()),
        Just("NaN".to_string()),
        Just("1e308".to_string()),
        Just("1e-308".to_string()),
        Just("18446744073709551616".to_string()),
        Just("4294967296".to_string()),
        Just("".to_string()),
        Just("1,".to_string()),
        Just("conversations".to_string()),
        Just("shared-prefix".to_string()),
        Just(",".to_string()),
        any::<u64>().prop_map(|v| v.to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| v.to_string()),
        (1u32..5000).prop_map(|v| v.to_string()),
        "[0-9]{1,4}(,[0-9]{1,4}){0,3}",
        "(uniform|normal|fixed):[-0-9.e]{0,12}(:[-0-9.e]{0,12})?",
        "\\PC{0,12}",
    ]
}

/// `--flag value` pairs over every numeric or parsed flag of `run`.
fn flag_values() -> impl Strategy<Value = Vec<(String, String)>> {
    let flags = prop::sample::select(vec![
        "--batch",
        "--concurrency",
        "--rate",
        "--burstiness",
        "--input-len",
        "--output-len",
        "--seed",
        "--num-requests",
        "--duration",
        "--min-rounds",
        "--min-duration",
        "--max-duration",
        "--warmup",
        "--temperature",
        "--request-timeout",
        "--slo",
        "--engine-arg",
        "--dataset",
        "--profile-steps",
        "--profile-points",
        "--gpu-sample-ms",
        "--max-concurrency",
        "--ramp-up-strategy",
        "--ramp-up-start-rps",
        "--ramp-up-end-rps",
        "--time-scale",
        "--turns",
        "--think-time",
    ]);
    prop::collection::vec((flags.prop_map(String::from), nasty_number()), 0..6)
}

/// Parses and validates like `harness run` / `harness sweep`, then builds the workload
/// when it is small enough to build in a test. Ok(()) or a usage error.
fn check(args: &[String], out: &Path) -> Result<(), String> {
    let mut argv = vec!["harness".to_string()];
    argv.extend(args.iter().cloned());
    argv.push("--out".into());
    argv.push(out.display().to_string());
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(_) => return Ok(()), // clap's own error: exit 2, nothing run
    };
    let (run, sweep) = match cli.into_command() {
        Sub::Run(a) => (a, false),
        Sub::Sweep(a) => (a, true),
        _ => return Ok(()),
    };
    let usage = |e: anyhow::Error| {
        let code = exit_code(&e);
        if code == EXIT_USAGE {
            Ok(())
        } else {
            Err(format!("exit {code} for bad input: {e:#}"))
        }
    };
    let merged = match config::merge(run) {
        Ok(m) => m,
        Err(e) => return usage(e.into()),
    };
    let cfg = match config::validate(merged, sweep, &Registry::builtin()) {
        Ok(c) => c,
        Err(e) => return usage(e.into()),
    };
    if cfg.out.exists() {
        return Err(format!("validation created {}", cfg.out.display()));
    }
    // Validation bounds the workload; build the ones small enough for a test.
    let size = cfg.workload_size();
    let longest = match &cfg.workload {
        WorkloadSpec::Synthetic { input_len, .. } => match *input_len {
            workload::LengthDist::Fixed { len } => f64::from(len),
            workload::LengthDist::Uniform { max, .. } => f64::from(max),
            workload::LengthDist::Normal { mean, std } => mean + 6.0 * std,
        },
        _ => 0.0,
    };
    if size as f64 * longest < 2e6 {
        if let Err(e) = workload::build(&cfg.workload, None, size, cfg.driver.seed) {
            return usage(e.into());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn any_flag_values_validate_or_fail_as_usage(pairs in flag_values(), sweep in any::<bool>()) {
        let tmp = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = Vec::new();
        if sweep {
            args.push("sweep".into());
        }
        args.extend(["--engine".into(), "calibration".into()]);
        for (f, v) in pairs {
            args.push(format!("{f}={v}"));
        }
        let r = std::panic::catch_unwind(|| check(&args, &tmp.path().join("out")));
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => prop_assert!(false, "{args:?}: {e}"),
            Err(_) => prop_assert!(false, "{args:?} panicked"),
        }
    }

    #[test]
    fn any_toml_file_validates_or_fails_as_usage(
        pairs in prop::collection::vec(
            (
                prop::sample::select(vec![
                    "engine", "batch", "concurrency", "rate", "burstiness", "input-len",
                    "output-len", "seed", "num-requests", "duration", "min-rounds",
                    "min-duration", "max-duration", "warmup", "temperature",
                    "request-timeout", "slo", "engine-arg", "ignore-eos", "dataset",
                    "bogus", "out",
                ]),
                prop_oneof![
                    nasty_number().prop_map(|s| format!("{s:?}")),
                    any::<i64>().prop_map(|v| v.to_string()),
                    any::<f64>().prop_map(|v| if v.is_finite() { format!("{v:?}") } else { "nan".into() }),
                    prop::collection::vec(any::<i32>(), 0..4).prop_map(|v| format!("{v:?}")),
                    Just("true".to_string()),
                    Just("{ a = 1 }".to_string()),
                    "\\PC{0,10}",
                ],
            ),
            0..8,
        ),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("run.toml");
        let text: String = pairs.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        std::fs::write(&file, &text).unwrap();
        let args = vec!["run".to_string(), "--config".into(), file.display().to_string()];
        let r = std::panic::catch_unwind(|| check(&args, &tmp.path().join("out")));
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => prop_assert!(false, "{text}: {e}"),
            Err(_) => prop_assert!(false, "{text} panicked"),
        }
    }

    #[test]
    fn any_bytes_as_a_toml_file(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("run.toml");
        std::fs::write(&file, &bytes).unwrap();
        let args = vec!["run".to_string(), "--config".into(), file.display().to_string()];
        let r = std::panic::catch_unwind(|| check(&args, &tmp.path().join("out")));
        prop_assert!(matches!(r, Ok(Ok(()))), "{r:?}");
    }
}

/// A word-level tokenizer over a few words (ids 0..=5), BOS-free.
fn tokenizer(dir: &Path) -> Tokenizer {
    let t = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,"model":{"type":"WordLevel","vocab":{"[UNK]":0,"a":1,"b":2,"hello":3,"world":4,"the":5},"unk_token":"[UNK]"}}"#;
    let p = dir.join("tokenizer.json");
    std::fs::write(&p, t).unwrap();
    Tokenizer::from_file(&p).unwrap()
}

/// Reads a dataset file through the public workload builder: Ok or a WorkloadError
/// (a usage error), never a panic.
fn read_dataset(spec: WorkloadSpec, tok: &Tokenizer, count: usize) -> Result<(), String> {
    match std::panic::catch_unwind(|| workload::build(&spec, Some(tok), count, 1)) {
        Ok(Ok(w)) if w.len() == count => Ok(()),
        // Whole conversations: at least `count` turns.
        Ok(Ok(w)) if w.conversations.is_some() && w.len() >= count => Ok(()),
        Ok(Ok(w)) => Err(format!("{} items for {count}", w.len())),
        Ok(Err(e)) => {
            let code = exit_code(&anyhow::Error::new(e));
            (code == EXIT_USAGE)
                .then_some(())
                .ok_or(format!("exit {code}"))
        }
        Err(_) => Err("panicked".into()),
    }
}

/// ShareGPT's multi-turn conversations from `path`, up to 4 turns each.
fn sharegpt_conversations(path: PathBuf) -> WorkloadSpec {
    use llm_harness::workload::conversations::{ConversationSource, ConversationSpec};
    WorkloadSpec::Conversations(ConversationSpec {
        turns: llm_harness::workload::LengthDist::Fixed { len: 4 },
        think_time_ms: None,
        source: ConversationSource::Sharegpt {
            path,
            output_len: None,
        },
    })
}

/// Reads a trace (Mooncake JSONL, or BurstGPT CSV by extension): Ok (at least one
/// request, each with an arrival) or a usage error, never a panic.
fn read_trace(path: PathBuf) -> Result<(), String> {
    let spec = WorkloadSpec::Trace {
        path,
        output_len: None,
        lines: None,
    };
    match std::panic::catch_unwind(|| workload::build(&spec, None, 1, 1)) {
        Ok(Ok(w)) if !w.is_empty() && w.arrivals_ns.as_ref().map(Vec::len) == Some(w.len()) => {
            Ok(())
        }
        Ok(Ok(w)) => Err(format!("{} items, arrivals {:?}", w.len(), w.arrivals_ns)),
        Ok(Err(e)) => {
            let msg = e.to_string();
            let code = exit_code(&anyhow::Error::new(e));
            (code == EXIT_USAGE && !msg.contains('\n'))
                .then_some(())
                .ok_or(format!("exit {code}: {msg}"))
        }
        Err(_) => Err("panicked".into()),
    }
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(vec!["a b", "hello world the", "", "from", "value", "human"])
            .prop_map(|s| Value::String(s.into())),
        "\\PC{0,16}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "conversations",
                        "value",
                        "from",
                        "prompt",
                        "max_tokens",
                        "id",
                        "x"
                    ])
                    .prop_map(String::from),
                    inner
                ),
                0..4
            )
            .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(config(DATA_CASES))]

    #[test]
    fn any_bytes_as_a_prompt_file_or_sharegpt(bytes in prop::collection::vec(any::<u8>(), 0..2048), jsonl in any::<bool>()) {
        let tmp = tempfile::tempdir().unwrap();
        let tok = tokenizer(tmp.path());
        let path = tmp.path().join(if jsonl { "p.jsonl" } else { "p.txt" });
        std::fs::write(&path, &bytes).unwrap();
        let r = read_dataset(WorkloadSpec::Prompts { path: path.clone(), output_len: 4 }, &tok, 5);
        prop_assert!(r.is_ok(), "prompts: {r:?}");
        let r = read_dataset(WorkloadSpec::Sharegpt { path: path.clone(), output_len: None }, &tok, 5);
        prop_assert!(r.is_ok(), "sharegpt: {r:?}");
        let r = read_dataset(sharegpt_conversations(path), &tok, 5);
        prop_assert!(r.is_ok(), "sharegpt conversations: {r:?}");
    }

    #[test]
    fn any_bytes_or_json_lines_as_a_trace(bytes in prop::collection::vec(any::<u8>(), 0..2048), values in prop::collection::vec(json_value(), 0..6)) {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["t.jsonl", "t.csv"] {
            let path = tmp.path().join(name);
            std::fs::write(&path, &bytes).unwrap();
            let r = read_trace(path);
            prop_assert!(r.is_ok(), "{name} bytes: {r:?}");
        }
        let lines: String = values.iter().map(|v| format!("{v}\n")).collect();
        let path = tmp.path().join("j.jsonl");
        std::fs::write(&path, &lines).unwrap();
        let r = read_trace(path);
        prop_assert!(r.is_ok(), "{lines}: {r:?}");
    }

    #[test]
    fn any_json_as_a_prompt_file_or_sharegpt(values in prop::collection::vec(json_value(), 0..6)) {
        let tmp = tempfile::tempdir().unwrap();
        let tok = tokenizer(tmp.path());
        let lines: String = values.iter().map(|v| format!("{v}\n")).collect();
        let jsonl = tmp.path().join("p.jsonl");
        std::fs::write(&jsonl, &lines).unwrap();
        let r = read_dataset(WorkloadSpec::Prompts { path: jsonl, output_len: 4 }, &tok, 3);
        prop_assert!(r.is_ok(), "prompts {lines}: {r:?}");
        let share = tmp.path().join("sharegpt.json");
        std::fs::write(&share, serde_json::Value::Array(values.clone()).to_string()).unwrap();
        let r = read_dataset(WorkloadSpec::Sharegpt { path: share.clone(), output_len: Some(8) }, &tok, 3);
        prop_assert!(r.is_ok(), "sharegpt {values:?}: {r:?}");
        let r = read_dataset(sharegpt_conversations(share), &tok, 3);
        prop_assert!(r.is_ok(), "sharegpt conversations {values:?}: {r:?}");
    }

    #[test]
    fn any_bytes_as_a_trace_or_a_run_file(bytes in prop::collection::vec(any::<u8>(), 0..2048), json in json_value()) {
        let tmp = tempfile::tempdir().unwrap();
        let trace = tmp.path().join("requests.jsonl");
        std::fs::write(&trace, &bytes).unwrap();
        let r = std::panic::catch_unwind(|| llm_harness::trace::read_requests(&trace).map(|_| ()));
        prop_assert!(r.is_ok(), "read_requests panicked");
        std::fs::write(tmp.path().join("run.json"), json.to_string()).unwrap();
        let r = std::panic::catch_unwind(|| llm_harness::report::RunResult::load(tmp.path(), None).map(|_| ()));
        prop_assert!(matches!(r, Ok(Err(_))), "a random run.json loaded or panicked");
    }
}

/// Prompt files with a huge `max_tokens` (read as output_len) are refused before anything is allocated.
#[test]
fn huge_max_tokens_in_a_prompt_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = tokenizer(tmp.path());
    let p = tmp.path().join("p.jsonl");
    std::fs::write(
        &p,
        "{\"prompt\": \"hello world\", \"max_tokens\": 4294967295}\n",
    )
    .unwrap();
    let e = workload::build(
        &WorkloadSpec::Prompts {
            path: p,
            output_len: 4,
        },
        Some(&tok),
        2,
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("output_len 4294967295 is above the limit"),
        "{e}"
    );
}

/// Extreme values through the real binary: exit 2, one line, nothing written.
#[test]
fn extreme_values_through_the_binary_exit_2_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out: PathBuf = tmp.path().join("out");
    let cases: &[&[&str]] = &[
        &["--dataset", "conversations", "--think-time", "700000"],
        &["--dataset", "conversations", "--turns", "uniform:1:100000"],
        &[
            "--dataset",
            "conversations",
            "--input-len",
            "16000000",
            "--num-requests",
            "8",
        ],
        &["--rate", "1e308"],
        &["--rate", "inf", "--burstiness", "1e-300"],
        &["--duration", "1e308"],
        &["--duration", "inf"],
        &["--request-timeout", "1e20"],
        &["--batch", "18446744073709551616"],
        &["--batch", "100000000"],
        &["--concurrency", "4294967295"],
        &["--num-requests", "18446744073709551615"],
        &["--warmup", "18446744073709551615"],
        &["--min-rounds", "4294967295"],
        &["--max-duration", "1e9"],
        &["--input-len", "16777216", "--num-requests", "1000000"],
        &["--output-len", "99999999999"],
        &["--temperature", "inf"],
        &["--engine-arg", "decode_ms=1e300"],
        &["--engine-arg", "jitter_pct=100"],
        // Open loops that would never end or never start.
        &["--rate", "inf", "--duration", "2"],
        &["--rate", "1000000", "--duration", "86400"],
        &["--rate", "2", "--max-concurrency", "0"],
        &["--rate", "2", "--max-concurrency", "4097"],
        &["--concurrency", "2", "--max-concurrency", "2"],
        &[
            "--ramp-up-strategy",
            "linear",
            "--ramp-up-start-rps",
            "10",
            "--ramp-up-end-rps",
            "5",
            "--num-requests",
            "10",
        ],
        &[
            "--ramp-up-strategy",
            "exponential",
            "--ramp-up-start-rps",
            "0",
            "--ramp-up-end-rps",
            "5",
            "--num-requests",
            "10",
        ],
        &[
            "--ramp-up-strategy",
            "linear",
            "--ramp-up-start-rps",
            "1",
            "--ramp-up-end-rps",
            "5",
            "--duration",
            "2",
        ],
        &[
            "--ramp-up-strategy",
            "linear",
            "--ramp-up-start-rps",
            "1",
            "--ramp-up-end-rps",
            "1e300",
            "--num-requests",
            "3",
        ],
        &["--ramp-up-end-rps", "5"],
        &["--time-scale", "0.5"],
    ];
    for args in cases {
        let err = fails(
            harness()
                .args(["--engine", "calibration"])
                .args(*args)
                .arg("--out")
                .arg(&out)
                .timeout(std::time::Duration::from_secs(20)),
            2,
        );
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("loading"))
            .collect();
        assert_eq!(lines.len(), 1, "{args:?}: {err}");
        assert!(lines[0].starts_with("Error: "), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} left {}", out.display());
    }
}

/// Hostile traces through the real binary: exit 2 within seconds, one line naming the
/// file (and the line, where one is at fault), nothing written. A trace longer than a
/// run replays (10⁷ lines behaves as this one: reading stops at line 65,537) is refused
/// without reading the rest.
#[test]
fn hostile_traces_exit_2_quickly_naming_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out: PathBuf = tmp.path().join("out");
    let ok = "{\"timestamp\": 5, \"input_length\": 4, \"output_length\": 2}\n";
    let long = ok.repeat(llm_harness::workload::trace::MAX_TRACE_LINES + 10_000);
    let cases: &[(&str, String, &[&str], &str)] = &[
        (
            "neg.jsonl",
            "{\"timestamp\": -5, \"input_length\": 4, \"output_length\": 2}\n".into(),
            &[],
            "line 1",
        ),
        (
            "unsorted.jsonl",
            format!("{ok}{ok}{}", ok.replace("5,", "1,")),
            &[],
            "line 3",
        ),
        (
            "bad.jsonl",
            format!("{ok}{{\"timestamp\": 7, \"input_length\": \"x\"}}\n"),
            &[],
            "line 2",
        ),
        (
            "bad.csv",
            "Timestamp,Request tokens,Response tokens\n1,2,3\n-4,2,3\n".into(),
            &[],
            "line 3",
        ),
        ("long.jsonl", long, &[], "--num-requests"),
        (
            "zero.jsonl",
            ok.into(),
            &["--time-scale", "0"],
            "--time-scale",
        ),
        (
            "negative.jsonl",
            ok.into(),
            &["--time-scale=-1"],
            "--time-scale",
        ),
        ("rate.jsonl", ok.into(), &["--rate", "5"], "--rate"),
    ];
    for (name, text, extra, needle) in cases {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        let t = std::time::Instant::now();
        let err = fails(
            harness()
                .args([
                    "--engine",
                    "calibration",
                    "--dataset",
                    "trace",
                    "--dataset-path",
                ])
                .arg(&path)
                .args(*extra)
                .arg("--out")
                .arg(&out)
                .timeout(std::time::Duration::from_secs(30)),
            2,
        );
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{name}: {err}");
        assert!(
            lines[0].starts_with("Error: ") && lines[0].contains(needle),
            "{name}: {err}"
        );
        if !extra.iter().any(|a| a.starts_with("--")) {
            assert!(lines[0].contains(name), "{name}: {err}");
        }
        assert!(t.elapsed().as_secs() < 10, "{name} took {:?}", t.elapsed());
        assert!(!out.exists(), "{name} left {}", out.display());
    }
}
