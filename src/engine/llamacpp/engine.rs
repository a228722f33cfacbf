//! The llama.cpp step engine: each `poll` runs one step of the slot scheduler
//! ([`super::slots`]) through one `llama_decode` (more when the decode tokens alone
//! exceed `n_batch`), samples every slot whose logits were computed with its own
//! sampler chain, and returns one token event per sampled token. The driver stamps the
//! events when `poll` returns; the engine's own stamps (slot admission, first and last
//! sampled token, taken right after sampling as llama-server stamps its slots) and
//! llama.cpp's perf counters are recorded beside them.
//!
//! A request fails alone (a finish with reason `error`) when it cannot run: an empty
//! prompt, a token id outside the model's vocabulary, prompt + output_len beyond its
//! slot's context, or a decode that found no KV room. A decode error that llama.h calls
//! invalid or fatal fails the engine. Ctrl-C stops a long decode through llama.cpp's
//! abort callback.

use super::cpu;
use super::ffi::{
    self, Batch, Context, ContextParams, DecodeError, Model, ModelParams, Sampler, SamplerConfig,
};
use super::options::{FlashAttn, KvType, Options};
use super::slots::{Entry, Scheduler};
use super::{BINDINGS, SCHEDULER_DIFFERS, SCHEDULER_NOTE};
use crate::core::clock;
use crate::core::request::{FinishReason, RequestId};
use crate::engine::{
    model::find_gguf, Engine, EngineConfig, EngineCounters, EngineError, EngineFigure, EngineInfo,
    EngineKind, Finish, GenRequest, HostCompute, SchedulerFacts, StepStats, TextLogprobs,
    TokenEvent,
};
use crate::host::CpuSample;
use std::rc::Rc;
use std::time::Duration;

fn kv_type(t: KvType) -> llama_cpp_sys_2::ggml_type {
    use llama_cpp_sys_2 as sys;
    match t {
        KvType::F32 => sys::GGML_TYPE_F32,
        KvType::F16 => sys::GGML_TYPE_F16,
        KvType::Bf16 => sys::GGML_TYPE_BF16,
        KvType::Q8_0 => sys::GGML_TYPE_Q8_0,
        KvType::Q4_0 => sys::GGML_TYPE_Q4_0,
        KvType::Q4_1 => sys::GGML_TYPE_Q4_1,
        KvType::Iq4Nl => sys::GGML_TYPE_IQ4_NL,
        KvType::Q5_0 => sys::GGML_TYPE_Q5_0,
        KvType::Q5_1 => sys::GGML_TYPE_Q5_1,
    }
}

/// The thread count when `threads` is not given, and why.
///
/// llama.cpp defaults to every physical core. On a shared machine that is fragile:
/// ggml's workers meet at a spinning barrier after every graph node, so when another
/// process holds one of the cores, a thread that is descheduled stalls all the others
/// (the collapse measured with OpenMP in ../shared/CPU_ENGINES.md, and the same barrier
/// design here). So the default is the CPUs this process may use minus the cores other
/// processes kept busy while the model loaded (at least 1), recorded with the reason.
fn default_threads(cpus: usize, other_busy_cores: f64) -> (u32, String) {
    let busy = other_busy_cores.max(0.0).round() as usize;
    let n = cpus.saturating_sub(busy).max(1);
    (
        n as u32,
        format!(
            "{cpus} CPUs usable by this process; other processes kept {other_busy_cores:.2} cores busy while the model loaded; {n} threads"
        ),
    )
}

/// ggml switches this CPU supports that the llama.cpp build does not use (it was
/// configured for less than this CPU: on another machine, or with GGML_* overrides), by
/// llama.cpp's names. `reported` is what `llama_print_system_info` says the build uses,
/// for a GGML_NATIVE build whose switches build.rs cannot read.
fn features_missing(reported: &[String]) -> Vec<&'static str> {
    let Some(host) = cpu::host() else {
        return Vec::new();
    };
    match cpu::Build::this() {
        cpu::Build::Switches(built) => cpu::unused(&built, &host, false),
        cpu::Build::Native | cpu::Build::Unknown => cpu::unused(reported, &host, true),
    }
}

/// Top-1 minus top-2 logit of a row.
fn top2_margin(logits: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &x in logits {
        if x > a {
            b = a;
            a = x;
        } else if x > b {
            b = x;
        }
    }
    a - b
}

/// `ln softmax(logits)[token]` (in f64, then f32) and the row's argmax: one position of
/// a teacher-forced text.
fn logprob_at(logits: &[f32], token: u32) -> Option<(f32, u32)> {
    let (mut top, mut max) = (0usize, f32::NEG_INFINITY);
    for (i, &x) in logits.iter().enumerate() {
        if x > max {
            (top, max) = (i, x);
        }
    }
    let sum: f64 = logits.iter().map(|&x| f64::from(x - max).exp()).sum();
    let x = *logits.get(token as usize)?;
    Some(((f64::from(x - max) - sum.ln()) as f32, top as u32))
}

/// A 32-bit sampler seed from the request's 64-bit one; llama.cpp reads
/// `LLAMA_DEFAULT_SEED` (u32::MAX) as "random", so that value is moved aside.
fn seed32(seed: u64) -> u32 {
    let s = (seed ^ (seed >> 32)) as u32;
    if s == ffi::LLAMA_DEFAULT_SEED {
        s - 1
    } else {
        s
    }
}

pub struct LlamaCppEngine {
    info: EngineInfo,
    opts: Options,
    n_vocab: u32,
    n_ctx_seq: u32,
    n_batch: usize,
    sched: Scheduler,
    samplers: Vec<Option<Sampler>>,
    /// Requests that cannot run, reported (failed alone) at the next poll.
    rejected: Vec<(RequestId, String)>,
    plan: Vec<Entry>,
    batch: Batch,
    /// KV cells of the context (n_ctx), for the step stats' kv_usage.
    kv_cells: u64,
    /// The steps' stats since the last `take_step_stats`.
    stats: Option<StepStats>,
    /// Sampling time and samples of finished requests' chains since the last
    /// `take_counters` (llama.cpp counts them per chain).
    sample_ms: f64,
    samples: u64,
    // Dropped in this order: the context before the model it holds an Rc of.
    ctx: Option<Context>,
    model: Option<Rc<Model>>,
}

impl LlamaCppEngine {
    pub fn load(config: &EngineConfig) -> Result<LlamaCppEngine, EngineError> {
        let opts = Options::from_args(&config.engine_args)?;
        let Some(model_arg) = config.model.as_deref() else {
            return Err(EngineError::Usage(
                "--model is required for --engine llamacpp; pass a GGUF file or its directory"
                    .into(),
            ));
        };
        let path = find_gguf(model_arg).map_err(EngineError::Usage)?;
        // Before any llama.cpp code runs: code for features this CPU lacks would fault.
        if let Some(problem) = cpu::problem() {
            return Err(EngineError::Usage(problem));
        }
        let sys_info = ffi::system_info();
        if opts.n_gpu_layers > 0 && !sys_info.gpu_offload {
            return Err(EngineError::Usage(format!(
                "--engine-arg n_gpu_layers={}: this llama.cpp build has no GPU backend; build with `--features llamacpp-cuda` on a machine with the CUDA toolkit, or drop n_gpu_layers",
                opts.n_gpu_layers
            )));
        }
        if opts.n_parallel as usize > sys_info.max_parallel_sequences {
            return Err(EngineError::Usage(format!(
                "--engine-arg n_parallel={}: llama.cpp decodes at most {} sequences together",
                opts.n_parallel, sys_info.max_parallel_sequences
            )));
        }
        if opts.mlock && !sys_info.mlock {
            return Err(EngineError::Usage(
                "--engine-arg mlock=true: this system does not support mlock".into(),
            ));
        }
        let load_start = CpuSample::now();
        let model = Model::load(
            &path,
            &ModelParams {
                n_gpu_layers: opts.n_gpu_layers,
                mmap: opts.mmap && sys_info.mmap,
                mlock: opts.mlock,
                repack: opts.repack,
            },
        )
        .map_err(|e| {
            EngineError::Usage(format!(
                "--model {}: llama.cpp cannot load this GGUF: {}",
                path.display(),
                e.message
            ))
        })?;
        let model = Rc::new(model);
        let facts = model.facts();
        let busy = load_start.until(&CpuSample::now());
        let (threads, threads_reason) = match opts.threads {
            Some(t) => (t, "set with --engine-arg threads".to_string()),
            None => {
                let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
                let other = if busy.wall_s > 0.0 {
                    busy.other_cpu_s / busy.wall_s
                } else {
                    0.0
                };
                default_threads(cpus, other)
            }
        };
        let threads_batch = opts.threads_batch.unwrap_or(threads);
        let n_ctx = opts.context_size(facts.n_ctx_train.max(1) as u32);
        let flash_attn = match opts.flash_attn {
            FlashAttn::Auto => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_AUTO,
            FlashAttn::On => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED,
            FlashAttn::Off => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED,
        };
        let params = ContextParams {
            n_ctx,
            n_batch: opts.n_batch,
            n_ubatch: opts.n_ubatch,
            n_seq_max: opts.n_parallel,
            n_threads: threads as i32,
            n_threads_batch: threads_batch as i32,
            poll: opts.poll,
            flash_attn,
            type_k: kv_type(opts.cache_type_k),
            type_v: kv_type(opts.cache_type_v),
            kv_unified: opts.kv_unified,
            swa_full: opts.swa_full,
        };
        let ctx = Context::new(model.clone(), &params, crate::process::interrupted).map_err(|e| {
            EngineError::Usage(format!(
                "llama.cpp cannot make a context with n_ctx={n_ctx}, n_parallel={}, n_batch={}, n_ubatch={}, cache types {}/{}, flash_attn {}: {}; lower n_ctx or n_parallel, or change the settings",
                opts.n_parallel,
                opts.n_batch,
                opts.n_ubatch,
                opts.cache_type_k.name(),
                opts.cache_type_v.name(),
                opts.flash_attn.name(),
                e.message
            ))
        })?;
        let sizes = ctx.sizes();
        let n_parallel = sizes.n_seq_max.max(1) as usize;
        let kv_budget = opts.kv_unified.then_some(u64::from(sizes.n_ctx));
        let n_batch = sizes.n_batch.max(1) as usize;
        let built = ffi::enabled_features(&sys_info.system_info);
        let missing = features_missing(&built);
        let eog = model.eog_tokens();
        let metadata = serde_json::json!({
            "bindings": BINDINGS,
            "llama_cpp": {
                "ggml_version": sys_info.ggml_version,
                "ggml_commit": sys_info.ggml_commit,
                "system_info": sys_info.system_info.trim(),
                "cpu_features": built,
                "host_cpu_features_not_built": missing,
                "gpu_offload_supported": sys_info.gpu_offload,
                "openmp": false,
            },
            "model": {
                "path": path.display().to_string(),
                "file_bytes": std::fs::metadata(&path).map_or(0, |m| m.len()),
                "architecture": model.meta("general.architecture"),
                "name": model.meta("general.name"),
                "facts": facts,
                "bos_token_id": model.bos(),
                "adds_bos": model.add_bos(),
                "eog_token_ids": eog,
            },
            "context": {
                "requested": {
                    "n_ctx": n_ctx,
                    "n_batch": opts.n_batch,
                    "n_ubatch": opts.n_ubatch,
                    "n_parallel": opts.n_parallel,
                },
                "actual": sizes,
                "n_ctx_per_slot": sizes.n_ctx_seq,
                "threads": threads,
                "threads_batch": threads_batch,
                "threads_reason": threads_reason,
                "thread_pool_poll": opts.poll,
                "flash_attn": opts.flash_attn.name(),
                "cache_type_k": opts.cache_type_k.name(),
                "cache_type_v": opts.cache_type_v.name(),
                "kv_unified": opts.kv_unified,
                "swa_full": opts.swa_full,
                "mmap": opts.mmap && sys_info.mmap,
                "mlock": opts.mlock,
                "repack": opts.repack,
                "n_gpu_layers": opts.n_gpu_layers,
            },
            "sampling": {
                "greedy": "temperature 0: llama.cpp's greedy sampler",
                "chain": "temperature > 0: top_k (if > 0) -> top_p (if < 1) -> min_p (if > 0) -> temp -> dist(seed), llama.cpp's sampler chain",
                "top_k": opts.top_k,
                "top_p": opts.top_p,
                "min_p": opts.min_p,
                "seed": "per request: the run's --seed + request id, folded to 32 bits",
            },
            "scheduler": {
                "modelled_on": "llama-server's slots (tools/server, update_slots)",
                "differs": SCHEDULER_DIFFERS,
                "n_parallel": n_parallel,
            },
            "engine_stamps": "scheduled_ns: slot admission; first/last_token_ns: right after sampling, inside poll (as llama-server stamps its slots' timings)",
            "perf_counters": "engine_counters per point: llama.cpp's llama_perf_context (a decode call with more than one token counts as prompt evaluation, one token as eval) and the sampler chains' llama_perf_sampler",
        });
        let device = if opts.n_gpu_layers != 0 && sys_info.gpu_offload {
            "gpu (llama.cpp offload)".to_string()
        } else {
            "cpu".to_string()
        };
        let info = EngineInfo {
            name: "llamacpp".into(),
            version: format!("{BINDINGS}, ggml {}", sys_info.ggml_version),
            model: path.display().to_string(),
            dtype: facts.file_type.clone(),
            device,
            kind: EngineKind::Step,
            notes: vec![SCHEDULER_NOTE.to_string()],
            compute: Some(HostCompute {
                threads: Some(threads),
                ..Default::default()
            }),
            scheduler: Some(SchedulerFacts {
                max_running: u32::try_from(n_parallel).ok(),
                kv_cache_tokens: Some(u64::from(sizes.n_ctx)),
                prefix_caching: Some(false),
                chunked_prefill: Some(true),
                // Not reported: each slot computes its whole prompt.
                cached_prompt_tokens_source: None,
                step_stats_source: Some(
                    "llama.cpp: the harness's slot scheduler (running slots and waiting requests \
                     after the step; prefill and decode tokens and requests in the step's batch; \
                     kv_usage = KV cells its sequences hold / n_ctx; it never preempts; no prefix \
                     cache, no speculation, no engine step time)"
                        .into(),
                ),
            }),
            metadata,
            ..Default::default()
        };
        if !missing.is_empty() {
            // stderr is engine.log during the run: the warning sits with llama.cpp's lines.
            eprintln!(
                "llm-harness: llama.cpp was built without {} that this CPU has; {}",
                missing.join(", "),
                cpu::HOW_TO_REBUILD
            );
        }
        Ok(LlamaCppEngine {
            info,
            opts,
            n_vocab: facts.n_vocab,
            n_ctx_seq: sizes.n_ctx_seq,
            n_batch,
            sched: Scheduler::new(n_parallel, n_batch, kv_budget),
            samplers: (0..n_parallel).map(|_| None).collect(),
            rejected: Vec::new(),
            plan: Vec::with_capacity(n_batch + n_parallel),
            batch: Batch::new(n_batch),
            kv_cells: u64::from(sizes.n_ctx),
            stats: None,
            sample_ms: 0.0,
            samples: 0,
            ctx: Some(ctx),
            model: Some(model),
        })
    }

    /// Why `req` cannot run, if it cannot.
    fn check(&self, req: &GenRequest) -> Option<String> {
        if req.prompt.is_empty() {
            return Some("empty prompt: llama.cpp needs at least one prompt token".into());
        }
        if req.output_len == 0 {
            return Some("output_len must be at least 1".into());
        }
        if let Some(&t) = req.prompt.iter().find(|&&t| t >= self.n_vocab) {
            return Some(format!(
                "prompt token id {t} is outside the model's vocabulary ({} tokens): the tokenizer does not match the GGUF",
                self.n_vocab
            ));
        }
        let need = req.prompt.len() as u64 + u64::from(req.output_len);
        if need > u64::from(self.n_ctx_seq) {
            return Some(format!(
                "prompt ({} tokens) + output_len ({}) = {need} tokens exceeds the slot's context of {} tokens (n_ctx / n_parallel); raise --engine-arg n_ctx",
                req.prompt.len(),
                req.output_len,
                self.n_ctx_seq
            ));
        }
        None
    }

    fn ctx(&mut self) -> Result<&mut Context, EngineError> {
        self.ctx
            .as_mut()
            .ok_or_else(|| EngineError::failed("llamacpp: the engine was shut down"))
    }

    /// Frees slot `i`'s KV cells and sampler; returns its request's data.
    fn free_slot(&mut self, i: usize) -> Option<super::slots::Slot> {
        let slot = self.sched.release(i)?;
        if let Some(mut s) = self.samplers[i].take() {
            let (ms, n) = s.take_perf();
            self.sample_ms += ms;
            self.samples += u64::from(n);
        }
        if let Some(ctx) = self.ctx.as_mut() {
            // Removing a whole sequence cannot fail (llama.h); a failure would leave
            // cells that the slot's next request must not see, so it is logged.
            if let Err(e) = ctx.remove_sequence(i as i32) {
                eprintln!("llm-harness: {e}");
            }
        }
        Some(slot)
    }

    fn finish(&mut self, i: usize, reason: FinishReason, error: Option<String>) -> Option<Finish> {
        let s = self.free_slot(i)?;
        Some(Finish {
            reason,
            error,
            token_ids: s.ids,
            top2_margins: s.margins,
            engine: Some(s.stamps),
            // Each slot computes its prompt from scratch (no prompt-cache reuse).
            cached_prompt_tokens: None,
        })
    }

    fn fail_alone(&mut self, i: usize, why: String, out: &mut Vec<TokenEvent>) {
        let Some(id) = self.sched.slot(i).map(|s| s.req.id) else {
            return;
        };
        let f = self.finish(i, FinishReason::Error, Some(why));
        out.push(TokenEvent {
            request: id,
            new_tokens: 0,
            at: None,
            finish: f.map(Box::new),
        });
    }

    /// Gives newly admitted slots an empty sequence and their sampler chain.
    fn admit(&mut self, out: &mut Vec<TokenEvent>) -> Result<(), EngineError> {
        for i in self.sched.admit(clock::now()) {
            let Some(req) = self.sched.slot(i).map(|s| s.req.clone()) else {
                continue;
            };
            // The slot's sequence is empty after its last request; this makes sure of it
            // even after an aborted decode.
            self.ctx()?
                .remove_sequence(i as i32)
                .map_err(|e| EngineError::failed(e.to_string()))?;
            let cfg = SamplerConfig {
                temperature: req.temperature,
                top_k: self.opts.top_k,
                top_p: self.opts.top_p,
                min_p: self.opts.min_p,
                seed: req.seed.map(seed32),
            };
            match Sampler::new(&cfg) {
                Ok(s) => self.samplers[i] = Some(s),
                Err(e) => self.fail_alone(i, e.to_string(), out),
            }
        }
        Ok(())
    }

    /// Decodes one chunk of the step's batch and samples its slots.
    fn run_chunk(
        &mut self,
        from: usize,
        to: usize,
        out: &mut Vec<TokenEvent>,
    ) -> Result<(), EngineError> {
        self.batch.clear();
        for e in &self.plan[from..to] {
            // The batch holds n_batch tokens and chunks are at most that long.
            if self
                .batch
                .push(e.token, e.pos, e.slot as i32, e.logits)
                .is_none()
            {
                return Err(EngineError::failed(
                    "llamacpp: a step chunk outgrew its batch",
                ));
            }
        }
        let Some(ctx) = self.ctx.as_mut() else {
            return Err(EngineError::failed("llamacpp: the engine was shut down"));
        };
        match ctx.decode(&self.batch) {
            Ok(()) => {}
            Err(DecodeError::NoKvSlot(e)) => {
                // The memory is as before the call: these requests fail alone, the
                // others go on.
                let mut slots: Vec<usize> = self.plan[from..to].iter().map(|e| e.slot).collect();
                slots.dedup();
                for i in slots {
                    self.fail_alone(i, e.to_string(), out);
                }
                return Ok(());
            }
            Err(DecodeError::Aborted) => {
                // Ctrl-C: processed ubatches stay in memory; remove this chunk's positions
                // so every sequence is as before the step, then let the driver stop.
                let chunk: Vec<Entry> = self.plan[from..to].to_vec();
                for e in &chunk {
                    let first = chunk
                        .iter()
                        .filter(|x| x.slot == e.slot)
                        .map(|x| x.pos)
                        .min()
                        .unwrap_or(e.pos);
                    let _ = ctx.remove_positions(e.slot as i32, first as i32);
                }
                return Ok(());
            }
            Err(DecodeError::Failed(e)) => return Err(EngineError::failed(e.to_string())),
        }
        let chunk: Vec<Entry> = self.plan[from..to].to_vec();
        self.sched.decoded(&chunk);
        let mut sampled: Vec<(usize, u32, Option<f32>)> = Vec::new();
        let mut failed: Vec<(usize, String)> = Vec::new();
        for (k, e) in chunk.iter().enumerate() {
            if !e.logits {
                continue;
            }
            let want_margin = self.sched.slot(e.slot).is_some_and(|s| s.margins.is_some());
            let (Some(ctx), Some(sampler)) = (self.ctx.as_mut(), self.samplers[e.slot].as_mut())
            else {
                continue;
            };
            let margin = if want_margin {
                ctx.logits(k as i32).map(top2_margin)
            } else {
                None
            };
            match ctx.sample(sampler, k as i32) {
                Ok(t) => sampled.push((e.slot, t, margin)),
                Err(err) => failed.push((e.slot, err.to_string())),
            }
        }
        let at = clock::now();
        for (i, why) in failed {
            self.fail_alone(i, why, out);
        }
        for (i, token, margin) in sampled {
            let eog = self.model.as_ref().is_some_and(|m| m.is_eog(token));
            let Some(id) = self.sched.slot(i).map(|s| s.req.id) else {
                continue;
            };
            let done = self.sched.accept(i, token, margin, eog, at);
            let finish = done.and_then(|r| self.finish(i, r, None)).map(Box::new);
            out.push(TokenEvent {
                request: id,
                new_tokens: 1,
                at: None,
                finish,
            });
        }
        Ok(())
    }
}

impl Engine for LlamaCppEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn submit(&mut self, req: &GenRequest) -> Result<(), EngineError> {
        if self.ctx.is_none() {
            return Err(EngineError::failed("llamacpp: the engine was shut down"));
        }
        match self.check(req) {
            Some(why) => self.rejected.push((req.id, why)),
            None => self.sched.enqueue(req.clone(), clock::now()),
        }
        Ok(())
    }

    fn poll(&mut self, timeout: Duration, out: &mut Vec<TokenEvent>) -> Result<(), EngineError> {
        let start = out.len();
        for (id, why) in self.rejected.drain(..) {
            let mut f = Finish::new(FinishReason::Error);
            f.error = Some(why);
            out.push(TokenEvent {
                request: id,
                new_tokens: 0,
                at: None,
                finish: Some(Box::new(f)),
            });
        }
        self.admit(out)?;
        self.sched.plan(&mut self.plan);
        if self.plan.is_empty() {
            if out.len() == start {
                // Idle: wait for the next submit like the other step engines.
                std::thread::sleep(timeout);
            }
            return Ok(());
        }
        // Read before decoding: the slots' prompt progress says which entries prefill.
        let mut stats = self.sched.composition(&self.plan);
        let mut from = 0;
        while from < self.plan.len() {
            let to = (from + self.n_batch).min(self.plan.len());
            self.run_chunk(from, to, out)?;
            if crate::process::interrupted() {
                break;
            }
            from = to;
        }
        self.sched.gauges(&mut stats, Some(self.kv_cells));
        StepStats::fold(&mut self.stats, stats);
        Ok(())
    }

    fn take_step_stats(&mut self) -> Option<StepStats> {
        self.stats.take()
    }

    fn in_flight(&self) -> usize {
        self.sched.waiting() + self.sched.running() + self.rejected.len()
    }

    fn abort(&mut self, id: RequestId) -> Result<(), EngineError> {
        self.rejected.retain(|(r, _)| *r != id);
        let slot = self
            .sched
            .occupied()
            .into_iter()
            .find(|&i| self.sched.slot(i).is_some_and(|s| s.req.id == id));
        match slot {
            Some(i) => {
                self.free_slot(i);
            }
            None => {
                self.sched.remove(id);
            }
        }
        Ok(())
    }

    fn shutdown(&mut self) -> Result<(), EngineError> {
        for i in self.sched.occupied() {
            self.free_slot(i);
        }
        self.sched.clear();
        self.rejected.clear();
        self.samplers.iter_mut().for_each(|s| *s = None);
        // The context (KV cache, threads) before the model.
        self.ctx = None;
        self.model = None;
        Ok(())
    }

    /// Each text decoded alone as sequence 0 with logits at every position, in chunks
    /// of `n_batch`; the log-softmax of llama.cpp's logits (`llama_get_logits_ith`) at
    /// the next token, and their argmax. Nothing may be in flight.
    fn prompt_logprobs(
        &mut self,
        texts: &[Vec<u32>],
    ) -> Result<Option<Vec<TextLogprobs>>, EngineError> {
        if self.in_flight() > 0 {
            return Err(EngineError::failed(
                "llamacpp: prompt log-probabilities need an idle engine",
            ));
        }
        let n_batch = self.n_batch;
        let mut out = Vec::with_capacity(texts.len());
        for text in texts {
            if text.len() > self.n_ctx_seq as usize {
                return Err(EngineError::Usage(format!(
                    "a text of {} tokens is longer than the context ({} per sequence); raise --engine-arg n_ctx or pass shorter texts",
                    text.len(),
                    self.n_ctx_seq
                )));
            }
            let Some(ctx) = self.ctx.as_mut() else {
                return Err(EngineError::failed("llamacpp: the engine was shut down"));
            };
            let mut scored = TextLogprobs::default();
            for (c, chunk) in text.chunks(n_batch).enumerate() {
                self.batch.clear();
                for (j, &t) in chunk.iter().enumerate() {
                    self.batch.push(t, (c * n_batch + j) as u32, 0, true);
                }
                let decoded = ctx.decode(&self.batch).map_err(|e| match e {
                    DecodeError::NoKvSlot(e) | DecodeError::Failed(e) => {
                        EngineError::failed(e.to_string())
                    }
                    DecodeError::Aborted => EngineError::failed("llamacpp: interrupted"),
                });
                if let Err(e) = decoded {
                    let _ = ctx.remove_sequence(0);
                    return Err(e);
                }
                for j in 0..chunk.len() {
                    let Some(&next) = text.get(c * n_batch + j + 1) else {
                        break;
                    };
                    let (lp, top) = ctx
                        .logits(j as i32)
                        .and_then(|row| logprob_at(row, next))
                        .ok_or_else(|| {
                            EngineError::failed(format!(
                                "llamacpp: no logits for position {} (token {next} outside the vocabulary?)",
                                c * n_batch + j
                            ))
                        })?;
                    scored.logprobs.push(lp);
                    scored.top1.push(top);
                }
            }
            ctx.remove_sequence(0)
                .map_err(|e| EngineError::failed(e.to_string()))?;
            out.push(scored);
        }
        Ok(Some(out))
    }

    fn take_counters(&mut self) -> Option<EngineCounters> {
        // Finished requests' chains were read when they ended; running ones count up to
        // now (each reading resets a chain, so nothing is counted twice).
        let (mut sample_ms, mut samples) = (self.sample_ms, self.samples);
        for s in self.samplers.iter_mut().flatten() {
            let (ms, n) = s.take_perf();
            sample_ms += ms;
            samples += u64::from(n);
        }
        self.sample_ms = 0.0;
        self.samples = 0;
        let p = self.ctx.as_mut()?.take_perf();
        let fig = |key: &str, value: f64, unit: &str| EngineFigure {
            key: key.into(),
            value,
            unit: unit.into(),
        };
        Some(EngineCounters {
            source: "llama.cpp llama_perf_context (reset at each reading): llama_decode calls with more than one token count as prompt evaluation, single-token calls as eval, so a batched decode step is 'prompt eval' here; sampling from the sampler chains' llama_perf_sampler".into(),
            figures: vec![
                fig("engine_prompt_eval_ms", p.t_p_eval_ms, "ms"),
                fig("engine_prompt_eval_tokens", f64::from(p.n_p_eval), ""),
                fig("engine_eval_ms", p.t_eval_ms, "ms"),
                fig("engine_eval_tokens", f64::from(p.n_eval), ""),
                fig("engine_decode_ms", p.t_p_eval_ms + p.t_eval_ms, "ms"),
                fig("engine_graph_reuses", f64::from(p.n_reused), ""),
                fig("engine_sample_ms", sample_ms, "ms"),
                fig("engine_samples", samples as f64, ""),
            ],
        })
    }
}

impl Drop for LlamaCppEngine {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprob_at_is_the_log_softmax() {
        // ln(e^1 / (e^0 + e^1 + e^2)) = 1 - ln(1 + e + e^2).
        let (lp, top) = logprob_at(&[0.0, 1.0, 2.0], 1).unwrap();
        let want = 1.0 - (1.0 + 1f64.exp() + 2f64.exp()).ln();
        assert!((f64::from(lp) - want).abs() < 1e-6, "{lp} vs {want}");
        assert_eq!(top, 2);
        // Large logits do not overflow.
        let (lp, _) = logprob_at(&[1000.0, 1000.0], 0).unwrap();
        assert!((lp - (-std::f32::consts::LN_2)).abs() < 1e-6);
        assert_eq!(logprob_at(&[0.0], 5), None);
    }

    #[test]
    fn margins_and_seeds() {
        assert_eq!(top2_margin(&[1.0, 3.0, 2.5, -1.0]), 0.5);
        assert_eq!(top2_margin(&[2.0, 2.0]), 0.0);
        assert_ne!(seed32(u64::from(u32::MAX)), u32::MAX);
        assert_eq!(seed32(7), 7);
    }

    #[test]
    fn thread_default_leaves_busy_cores() {
        assert_eq!(default_threads(2, 0.1).0, 2);
        assert_eq!(default_threads(2, 0.9).0, 1);
        assert_eq!(default_threads(2, 3.0).0, 1);
        assert_eq!(default_threads(16, 4.2).0, 12);
        assert!(default_threads(2, 0.9).1.contains("0.90 cores busy"));
    }
}
