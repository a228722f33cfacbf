//! llama.cpp for real: the `llamacpp` engine on the Gemma 3 270M GGUF the registry
//! package ships (scripts/setup.sh assembles it into models/gemma-3-270m-gguf).
//!
//! Built only with the feature (`cargo test --features llamacpp --test llamacpp`). The
//! tests need the GGUF from scripts/setup.sh: they are `#[ignore]`d with that reason,
//! so a plain `cargo test` reports them as ignored, never as passed; scripts/test.sh
//! runs them (`-- --ignored`) with LLM_HARNESS_REQUIRE_ENGINES=1, so a missing model
//! fails loudly. They run one at a time (a second engine on 2 cores would distort the
//! first) and keep outputs short.
#![cfg(feature = "llamacpp")]

mod common;

use common::{cache, fails, harness, json, output_tokens, records, serial, succeeds};
use llm_harness::core::request::FinishReason;
use llm_harness::engine::{Engine, EngineConfig, GenRequest, TokenEvent};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The GGUF model directory, or None (after printing why) when setup has not run.
fn gguf_dir() -> Option<PathBuf> {
    let d = cache().join("models/gemma-3-270m-gguf");
    common::need(d.join("gemma-3-270m-Q4_K_M.gguf"), "scripts/setup.sh")?;
    common::need(d.join("tokenizer.json"), "scripts/setup.sh")?;
    Some(d)
}

fn ids(r: &Value) -> Vec<u64> {
    r["token_ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no token_ids in {r}"))
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect()
}

fn prompts_file(dir: &Path, prompts: &[&str]) -> PathBuf {
    let f = dir.join("prompts.jsonl");
    let lines: Vec<String> = prompts
        .iter()
        .map(|p| serde_json::json!({ "prompt": p }).to_string())
        .collect();
    std::fs::write(&f, lines.join("\n") + "\n").unwrap();
    f
}

/// parity's plain-completion prompts and two more, so a batch of 8 has 8 texts.
fn prompts() -> Vec<&'static str> {
    let more = [
        "A good breakfast usually includes",
        "The first step in baking bread is",
    ];
    [llm_harness::commands::parity::PROMPTS, &more].concat()
}

/// Top-2 logit margin under which two runs may pick different greedy tokens through
/// llama.cpp's batch-size-dependent numerics (measured here: 0.004-0.28 at the partings).
const NEAR_TIE: f64 = 0.5;

/// llama.cpp's own log lines (load, context, perf), which must stay in engine.log.
const LLAMA_LINES: [&str; 4] = [
    "llama_model_loader",
    "load_tensors",
    "llama_context",
    "print_info",
];

#[test]
#[ignore = "needs the GGUF and a --features llamacpp build: scripts/test.sh runs it"]
fn sweep_batch_1_and_8_same_tokens_exact_lengths_quiet_terminal() {
    let Some(model) = gguf_dir() else { return };
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let prompts = prompts_file(tmp.path(), &prompts());
    let out = tmp.path().join("sweep");
    // 8 prompts, cycled: the batch-1 point sends each once, the batch-8 point the same
    // eight again, all in one batch.
    let o = harness()
        .args(["sweep", "--engine", "llamacpp", "--model"])
        .arg(&model)
        .args(["--dataset", "prompts", "--dataset-path"])
        .arg(&prompts)
        .args(["--batch", "1,8", "--num-requests", "8", "--warmup", "0"])
        .args([
            "--output-len",
            "12",
            "--ignore-eos",
            "--save-token-ids",
            "--no-progress",
        ])
        .args(["--engine-arg", "n_parallel=8", "--out"])
        .arg(&out)
        .assert()
        .success()
        .get_output()
        .clone();
    let terminal = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    for l in LLAMA_LINES {
        assert!(
            !terminal.contains(l),
            "llama.cpp's '{l}' reached the terminal:\n{terminal}"
        );
    }
    assert!(
        terminal.contains("the scheduler is the harness's"),
        "{terminal}"
    );
    let log = std::fs::read_to_string(out.join("engine.log")).unwrap();
    for l in LLAMA_LINES {
        assert!(log.contains(l), "engine.log lacks llama.cpp's '{l}'");
    }
    for f in [
        "run.json",
        "summary.json",
        "summary.csv",
        "requests.csv",
        "config.toml",
        "workload.jsonl",
    ] {
        assert!(out.join(f).is_file(), "{f} not written");
    }
    let recs = records(&out);
    assert_eq!(recs.len(), 16);
    for r in &recs {
        assert_eq!(r["finish_reason"], "length", "{r}");
        assert_eq!(output_tokens(r), 12, "{r}");
        assert_eq!(ids(r).len(), 12, "{r}");
        // The engine's own stamps are recorded beside the harness's.
        assert!(r["engine"]["first_token_ns"].as_u64().is_some(), "{r}");
        assert!(
            r["top2_margins"].as_array().is_some_and(|m| m.len() == 12),
            "{r}"
        );
    }
    // Across batch sizes: request k (batch 1) and request k + 8 (batch 8) had the same
    // prompt. llama.cpp is not bit-identical across batch sizes (different kernels for
    // different numbers of rows; llama-server's README says so for cache_prompt), so
    // greedy outputs may part where both runs were near a tie, and only there: a
    // scheduler fault (another sequence's cells, a wrong position) parts them where the
    // model was sure. Equal batch sizes with other neighbours are bit-identical
    // (abort_frees_the_slot_and_neighbours_do_not_matter).
    let by_id = |id: u64| recs.iter().find(|r| r["id"] == id).unwrap();
    let margins = |r: &Value| -> Vec<f64> {
        r["top2_margins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_f64().unwrap())
            .collect()
    };
    let mut identical = 0;
    for k in 0..8 {
        let (a, b) = (by_id(k), by_id(k + 8));
        let (ia, ib) = (ids(a), ids(b));
        match ia.iter().zip(&ib).position(|(x, y)| x != y) {
            None => identical += 1,
            Some(at) => {
                let (ma, mb) = (margins(a)[at], margins(b)[at]);
                assert!(
                    ma < NEAR_TIE && mb < NEAR_TIE,
                    "prompt {k}: batch 1 and batch 8 part at token {at} where the model was sure (top-2 margins {ma:.3} / {mb:.3}): {ia:?} vs {ib:?}"
                );
                eprintln!("prompt {k}: batch 1 and 8 part at token {at}, a near-tie (margins {ma:.3} / {mb:.3})");
            }
        }
    }
    eprintln!("{identical} of 8 prompts identical at batch 1 and 8");
    let run = json(&out.join("run.json"));
    let meta = &run["engine"]["metadata"];
    assert!(run["engine"]["notes"][0]
        .as_str()
        .unwrap()
        .contains("modelled on llama-server"));
    assert!(run["engine"]["scheduler"]["max_running"].as_u64().unwrap() >= 8);
    assert!(!meta["scheduler"]["differs"].as_array().unwrap().is_empty());
    assert!(meta["llama_cpp"]["cpu_features"].as_array().unwrap().len() > 1);
    assert!(meta["context"]["threads"].as_u64().unwrap() >= 1);
    assert!(meta["context"]["threads_reason"].as_str().is_some());
    assert_eq!(run["engine"]["dtype"], "Q4_K - Medium");
    // llama.cpp's perf counters per point: batch 8 decodes multi-token batches.
    let summary = json(&out.join("summary.json"));
    let text = summary.to_string();
    assert!(text.contains("engine_prompt_eval_tokens"), "{text}");
    assert!(
        text.contains("engine_counters"),
        "no engine_counters definition"
    );
    llamacpp_steps_agree_with_the_trace(&out, &recs, 8);
}

/// steps.jsonl of a llama.cpp sweep against its requests: the harness's slot scheduler
/// fills every step record, and its counts add up to the trace.
fn llamacpp_steps_agree_with_the_trace(out: &Path, recs: &[Value], slots: u64) {
    let steps = common::steps(out);
    let n = |st: &Value, k: &str| {
        st[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} missing: {st}"))
    };
    for point in [0u64, 1] {
        let steps: Vec<&Value> = steps.iter().filter(|st| st["point"] == point).collect();
        let reqs: Vec<&Value> = recs.iter().filter(|r| r["point"] == point).collect();
        assert!(!steps.is_empty(), "point {point}: no step records");
        for st in &steps {
            assert_eq!(n(st, "engine_steps"), 1, "{st}");
            assert_eq!(n(st, "preempted"), 0, "{st}");
            assert!(n(st, "running") <= slots, "{st}");
            let kv = st["kv_usage"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&kv), "{st}");
            assert!(st.get("spec_draft_tokens").is_none(), "{st}");
        }
        let sum = |k: &str| steps.iter().map(|st| n(st, k)).sum::<u64>();
        let output: u64 = reqs.iter().map(|r| output_tokens(r)).sum();
        // A request's first token is sampled from its last prompt token's logits; each
        // later one is decoded from the token before it: one decode token per output
        // token but the first. Every prompt token is computed (no prompt cache here).
        assert_eq!(
            sum("decode_tokens") + reqs.len() as u64,
            output,
            "point {point}"
        );
        let prompt: u64 = reqs.iter().map(|r| r["input_len"].as_u64().unwrap()).sum();
        assert_eq!(sum("prefill_tokens"), prompt, "point {point}");
        // A prompt split over steps (n_batch) counts in each of them.
        assert!(
            sum("prefill_requests") >= reqs.len() as u64,
            "point {point}"
        );
        assert_eq!(sum("tokens"), output, "point {point}");
        // Batch 8 holds all eight while they decode.
        let peak = steps.iter().map(|st| n(st, "running")).max().unwrap();
        assert_eq!(peak, if point == 0 { 1 } else { slots }, "point {point}");
    }
}

/// Runs `e` until every request of `ids` has finished; their finishes, in that order.
fn finishes(e: &mut Box<dyn Engine>, ids: &[u64]) -> Vec<llm_harness::engine::Finish> {
    let mut done = std::collections::HashMap::new();
    let mut ev: Vec<TokenEvent> = Vec::new();
    for _ in 0..2000 {
        ev.clear();
        e.poll(Duration::from_millis(10), &mut ev).unwrap();
        for x in ev.drain(..) {
            if let Some(f) = x.finish {
                done.insert(x.request, *f);
            }
        }
        if ids.iter().all(|id| done.contains_key(id)) {
            return ids.iter().map(|id| done.remove(id).unwrap()).collect();
        }
    }
    panic!("requests {ids:?} did not all finish");
}

fn finish_of(e: &mut Box<dyn Engine>, id: u64) -> llm_harness::engine::Finish {
    finishes(e, &[id]).remove(0)
}

fn greedy(id: u64, prompt: &[u32], output_len: u32) -> GenRequest {
    GenRequest {
        id,
        prompt: prompt.to_vec().into(),
        output_len,
        min_tokens: output_len,
        ignore_eos: true,
        temperature: 0.0,
        seed: None,
        return_token_ids: true,
    }
}

#[test]
#[ignore = "needs the GGUF and a --features llamacpp build: scripts/test.sh runs it"]
fn abort_frees_the_slot_and_neighbours_do_not_matter() {
    let Some(model) = gguf_dir() else { return };
    let _g = serial();
    let cfg = EngineConfig {
        model: Some(model),
        engine_args: vec![
            ("n_parallel".into(), "4".into()),
            ("n_ctx".into(), "2048".into()),
        ],
        ..Default::default()
    };
    let mut engine = (llm_harness::engine::llamacpp::SPEC.load)(&cfg).unwrap();
    let tokens = |f: llm_harness::engine::Finish| {
        assert_eq!(f.reason, FinishReason::Length, "{f:?}");
        f.token_ids.unwrap()
    };
    // "The capital of France is", and other prompts around it.
    let short = [2u32, 818, 5279, 529, 7001, 563];
    let other = |k: u32| -> Vec<u32> { (0..10).map(|i| 2000 + 97 * k + 13 * i).collect() };
    engine.submit(&greedy(0, &short, 10)).unwrap();
    let alone = tokens(finish_of(&mut engine, 0));
    assert_eq!(alone.len(), 10);

    // The same sequence among other sequences: bit-identical whoever the neighbours are.
    engine.submit(&greedy(1, &short, 10)).unwrap();
    for k in 2..5 {
        engine.submit(&greedy(k, &other(k as u32), 10)).unwrap();
    }
    let among_x = tokens(finishes(&mut engine, &[1, 2, 3, 4]).remove(0));
    engine.submit(&greedy(5, &short, 10)).unwrap();
    for k in 6..9 {
        engine
            .submit(&greedy(k, &other(k as u32 + 50), 10))
            .unwrap();
    }
    let among_y = tokens(finishes(&mut engine, &[5, 6, 7, 8]).remove(0));
    assert_eq!(
        among_x, among_y,
        "a sequence's tokens depend on its neighbours"
    );

    // A long request, aborted after a few tokens, in the lowest slot...
    let long: Vec<u32> = (0..60).map(|i| 1000 + i * 7).collect();
    engine.submit(&greedy(9, &long, 40)).unwrap();
    let mut ev = Vec::new();
    let mut got = 0;
    for _ in 0..500 {
        engine.poll(Duration::from_millis(10), &mut ev).unwrap();
        got = ev
            .iter()
            .filter(|e| e.request == 9)
            .map(|e| e.new_tokens)
            .sum::<u32>();
        if got >= 3 {
            break;
        }
    }
    assert!(got >= 3);
    engine.abort(9).unwrap();
    assert_eq!(engine.in_flight(), 0);
    // ...leaves nothing behind: the next request there generates what it did alone.
    engine.submit(&greedy(10, &short, 10)).unwrap();
    assert_eq!(tokens(finish_of(&mut engine, 10)), alone);

    // A request that cannot fit its slot (2048 / 4 = 512 tokens) fails alone, and the
    // engine goes on.
    engine.submit(&greedy(11, &short, 600)).unwrap();
    engine.submit(&greedy(12, &short, 10)).unwrap();
    let f = finish_of(&mut engine, 11);
    assert_eq!(f.reason, FinishReason::Error);
    let why = f.error.unwrap();
    assert!(
        why.contains("exceeds the slot's context of 512 tokens"),
        "{why}"
    );
    assert_eq!(tokens(finish_of(&mut engine, 12)), alone);

    let counters = engine.take_counters().unwrap();
    let value = |k: &str| counters.figures.iter().find(|f| f.key == k).unwrap().value;
    assert!(value("engine_eval_tokens") > 0.0 && value("engine_prompt_eval_tokens") > 0.0);
    assert!(value("engine_samples") > 0.0);
    engine.shutdown().unwrap();
}

#[test]
#[ignore = "needs the GGUF and a --features llamacpp build: scripts/test.sh runs it"]
fn timeout_frees_the_sequence_for_the_next_request() {
    let Some(model) = gguf_dir() else { return };
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let short = "The capital of France is";
    // ~1500 tokens: with n_batch 32 its prefill takes ~50 steps without a token.
    let long = "the quick brown fox jumps over the lazy dog ".repeat(150);
    let run = |name: &str, prompts: &[&str], n: &str, extra: &[&str], code: i32| {
        let dir = tmp.path().join(format!("{name}-prompts"));
        std::fs::create_dir_all(&dir).unwrap();
        let file = prompts_file(&dir, prompts);
        let out = tmp.path().join(name);
        harness()
            .args(["run", "--engine", "llamacpp", "--model"])
            .arg(&model)
            .args(["--dataset", "prompts", "--dataset-path"])
            .arg(&file)
            .args([
                "--batch",
                "1",
                "--num-requests",
                n,
                "--warmup",
                "0",
                "--output-len",
                "8",
            ])
            .args(["--ignore-eos", "--save-token-ids", "--no-progress"])
            .args(["--engine-arg", "n_parallel=1", "--engine-arg", "n_ctx=2048"])
            .args(extra)
            .arg("--out")
            .arg(&out)
            .assert()
            .code(code);
        out
    };
    let reference = records(&run("ref", &[short], "1", &[], 0));
    let want = ids(&reference[0]);
    // Long and short alternate (in the workload's seeded order) in the one slot; the long
    // one times out during its prefill and the short ones after it run as before.
    let out = run(
        "timeout",
        &[short, &long],
        "4",
        &["--engine-arg", "n_batch=32", "--request-timeout", "0.3"],
        1,
    );
    let recs = records(&out);
    assert_eq!(recs.len(), 4);
    let timed_out = recs
        .iter()
        .filter(|r| r["finish_reason"] == "timeout")
        .count();
    assert_eq!(timed_out, 2, "{recs:?}");
    for r in recs.iter().filter(|r| r["finish_reason"] == "length") {
        assert_eq!(ids(r), want, "a request after a timed-out one differs");
    }
}

#[test]
#[ignore = "needs the GGUF and a --features llamacpp build: scripts/test.sh runs it"]
fn missing_or_corrupt_gguf_is_bad_input_and_writes_nothing() {
    let Some(model) = gguf_dir() else { return };
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let bad = |m: &Path, needle: &str| {
        let out = tmp.path().join("out");
        let err = fails(
            harness()
                .args(["run", "--engine", "llamacpp", "--model"])
                .arg(m)
                .args([
                    "--batch",
                    "1",
                    "--num-requests",
                    "1",
                    "--output-len",
                    "2",
                    "--out",
                ])
                .arg(&out),
            2,
        );
        assert!(err.contains(needle), "expected '{needle}' in: {err}");
        assert!(!out.exists(), "{} was written", out.display());
    };
    bad(&tmp.path().join("none.gguf"), "no such file or directory");
    // Not a GGUF at all: caught by the header check before anything loads.
    let d = tmp.path().join("garbage");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(model.join("tokenizer.json"), d.join("tokenizer.json")).unwrap();
    std::fs::write(d.join("m.gguf"), vec![0x42u8; 4096]).unwrap();
    bad(&d, "GGUF magic");
    // A real header on a cut file: llama.cpp refuses it while loading, in its words.
    let cut = tmp.path().join("cut");
    std::fs::create_dir_all(&cut).unwrap();
    std::fs::copy(model.join("tokenizer.json"), cut.join("tokenizer.json")).unwrap();
    let bytes = std::fs::read(model.join("gemma-3-270m-Q4_K_M.gguf")).unwrap();
    std::fs::write(cut.join("m.gguf"), &bytes[..bytes.len() / 3]).unwrap();
    bad(&cut, "llama.cpp cannot load this GGUF");
    // A typo in an engine arg, with the hint.
    let out = tmp.path().join("typo");
    let o = harness()
        .args(["run", "--engine", "llamacpp", "--model"])
        .arg(&model)
        .args([
            "--batch",
            "1",
            "--num-requests",
            "1",
            "--engine-arg",
            "thread=2",
            "--out",
        ])
        .arg(&out)
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(String::from_utf8_lossy(&o.stderr).contains("did you mean 'threads'?"));
    assert!(!out.exists());
}

#[test]
fn listed_as_ready_in_this_build() {
    let text = succeeds(harness().arg("engines"));
    let line = text.lines().find(|l| l.starts_with("llamacpp ")).unwrap();
    assert!(line.contains("ready"), "{text}");
    assert!(text.contains("llama-cpp-sys-2"), "{text}");
}

#[test]
#[ignore = "needs the GGUF, the vllm venv (Transformers) and a --features llamacpp build: scripts/test.sh runs it"]
fn parity_with_transformers_on_the_same_gguf_reports_margins() {
    let Some(model) = gguf_dir() else { return };
    if !cache().join("venvs/vllm/bin/python").exists() {
        let why = "the vllm venv (Transformers) is missing: run scripts/setup.sh";
        if std::env::var("LLM_HARNESS_REQUIRE_ENGINES").is_ok_and(|v| v == "1") {
            panic!("{why} (LLM_HARNESS_REQUIRE_ENGINES=1)");
        }
        eprintln!("skipped: {why}");
        return;
    }
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let prompts = prompts_file(tmp.path(), &prompts()[..2]);
    let out = tmp.path().join("parity");
    let text = succeeds(
        harness()
            .args(["parity", "--engines", "llamacpp,hf", "--model"])
            .arg(&model)
            .arg("--prompts")
            .arg(&prompts)
            .args(["--output-len", "8", "--threshold", "0", "--out"])
            .arg(&out),
    );
    assert!(text.contains("top-2 logit margins there"), "{text}");
    assert!(text.contains("identical leading tokens:"), "{text}");
    // Both sides saved their margins; Transformers loaded the GGUF itself.
    for side in ["llamacpp", "hf"] {
        for r in records(&out.join(side)) {
            assert_eq!(ids(&r).len(), 8, "{side}: {r}");
            let m = r["top2_margins"].as_array().unwrap();
            assert_eq!(m.len(), 8, "{side}: {r}");
            assert!(m.iter().all(|x| x.as_f64().unwrap() >= 0.0));
        }
    }
    let hf = json(&out.join("hf/run.json"));
    let weights = hf["engine"]["metadata"]["weights"].as_str().unwrap();
    assert!(
        weights.contains("GGUF gemma-3-270m-Q4_K_M.gguf"),
        "{weights}"
    );
    // Each prompt's first greedy token agrees (the model is sure of it).
    let first = |side: &str| -> Vec<u64> {
        let mut r = records(&out.join(side));
        r.sort_by_key(|r| r["id"].as_u64().unwrap());
        r.iter().map(|r| ids(r)[0]).collect()
    };
    assert_eq!(first("llamacpp"), first("hf"));
}
