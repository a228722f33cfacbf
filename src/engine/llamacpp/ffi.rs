//! The thin safe layer over llama.cpp's C API, from the bindings bindgen generates
//! from `llama.h` (the `llama-cpp-sys-2` crate, which vendors llama.cpp and builds it
//! with cmake). Only what the engine needs: model and context parameters, batches,
//! decode, logits, per-sequence memory removal, sampler chains, the abort callback,
//! the perf counters and the log callback.
//!
//! Ownership: every raw handle has one owner that frees it in `Drop` ([`Model`],
//! [`Context`], [`Batch`], [`Sampler`], the thread pool). A context holds an `Rc` of
//! its model, so the model outlives it. Errors: every failing call becomes a
//! [`LlamaError`] carrying llama.cpp's own words, the error and warning lines it
//! logged during the call (llama.cpp reports most failures only through its log).
//! Nothing unwinds across the boundary: llama.cpp's C API catches its C++ exceptions,
//! and the two callbacks it calls into Rust (log, abort) catch panics.
//!
//! Threads: llama.cpp runs its compute threads inside `llama_decode`; everything here
//! is called from the one thread that drives the engine (the types are not `Send`).

use llama_cpp_sys_2 as sys;
use std::ffi::{c_char, c_void, CStr, CString};
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::{Mutex, Once};

/// A llama.cpp call that failed, with what llama.cpp said about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("llama.cpp {call} failed{}: {message}", code.map(|c| format!(" (returned {c})")).unwrap_or_default())]
pub struct LlamaError {
    pub call: &'static str,
    pub code: Option<i32>,
    /// llama.cpp's error and warning lines from the call, or the meaning llama.h gives
    /// the return code when it logged nothing.
    pub message: String,
}

impl LlamaError {
    fn new(call: &'static str, code: Option<i32>, fallback: &str) -> LlamaError {
        let logged = log::take_problems();
        LlamaError {
            call,
            code,
            message: if logged.is_empty() {
                fallback.to_string()
            } else {
                logged.join("; ")
            },
        }
    }
}

/// The log callback: every line llama.cpp and ggml log goes to this process's stderr
/// (the run's engine.log while the harness captures it), and error and warning lines
/// are also kept so that a failing call can carry them.
pub mod log {
    use super::*;

    /// Most problem lines kept between two calls (a failing load logs a few).
    const KEEP: usize = 32;

    struct State {
        problems: Vec<String>,
        /// The level of the line being continued (`GGML_LOG_LEVEL_CONT`).
        last_level: u32,
    }

    static STATE: Mutex<State> = Mutex::new(State {
        problems: Vec::new(),
        last_level: 0,
    });

    fn state() -> std::sync::MutexGuard<'static, State> {
        STATE.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets problem lines logged so far (before a call whose failure we report).
    pub fn clear() {
        state().problems.clear();
    }

    /// The error and warning lines logged since the last `clear`/`take`.
    pub fn take_problems() -> Vec<String> {
        std::mem::take(&mut state().problems)
    }

    fn record(level: u32, text: &[u8]) {
        let mut s = state();
        let level = if level == sys::GGML_LOG_LEVEL_CONT {
            s.last_level
        } else {
            level
        };
        s.last_level = level;
        if level == sys::GGML_LOG_LEVEL_ERROR || level == sys::GGML_LOG_LEVEL_WARN {
            let line = String::from_utf8_lossy(text).trim().to_string();
            if !line.is_empty() && s.problems.len() < KEEP {
                s.problems.push(line);
            }
        }
    }

    /// Called by llama.cpp and ggml, on any of their threads.
    pub(super) unsafe extern "C" fn callback(
        level: sys::ggml_log_level,
        text: *const c_char,
        _user: *mut c_void,
    ) {
        if text.is_null() {
            return;
        }
        // SAFETY: llama.cpp passes a NUL-terminated string valid for this call.
        let bytes = unsafe { CStr::from_ptr(text) }.to_bytes();
        // A panic must not unwind into C; a failed write to the log is not an error
        // worth stopping the engine for.
        let _ = catch_unwind(AssertUnwindSafe(|| {
            let _ = std::io::stderr().write_all(bytes);
            record(level, bytes);
        }));
    }
}

/// Installs the log callback and initialises llama.cpp's backends, once per process.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: the callback is a plain function that lives for the whole program and
        // never unwinds; llama_backend_init has no preconditions. Both run before any
        // other llama.cpp call of this process (Once).
        unsafe {
            sys::llama_log_set(Some(log::callback), std::ptr::null_mut());
            sys::llama_backend_init();
        }
    });
}

fn owned(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: llama.cpp returns NUL-terminated static strings from these getters.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// llama.cpp's build and system facts.
pub struct SystemInfo {
    /// `llama_print_system_info()`: the CPU features and backends this build uses.
    pub system_info: String,
    pub ggml_version: String,
    pub ggml_commit: String,
    pub max_parallel_sequences: usize,
    pub gpu_offload: bool,
    pub mmap: bool,
    pub mlock: bool,
}

pub fn system_info() -> SystemInfo {
    init();
    // SAFETY: pure getters without arguments, valid after init.
    unsafe {
        SystemInfo {
            system_info: owned(sys::llama_print_system_info()),
            ggml_version: owned(sys::ggml_version()),
            ggml_commit: owned(sys::ggml_commit()),
            max_parallel_sequences: sys::llama_max_parallel_sequences(),
            gpu_offload: sys::llama_supports_gpu_offload(),
            mmap: sys::llama_supports_mmap(),
            mlock: sys::llama_supports_mlock(),
        }
    }
}

/// How to load a model.
#[derive(Clone, Debug)]
pub struct ModelParams {
    pub n_gpu_layers: i32,
    pub mmap: bool,
    pub mlock: bool,
    /// Repack weights at load into the CPU backend's faster layouts (llama.cpp's
    /// default; `--no-repack` turns it off).
    pub repack: bool,
}

/// A loaded model (`llama_model`), freed on drop.
pub struct Model {
    ptr: NonNull<sys::llama_model>,
    vocab: NonNull<sys::llama_vocab>,
}

impl Model {
    pub fn load(path: &Path, p: &ModelParams) -> Result<Model, LlamaError> {
        init();
        let c_path = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| LlamaError {
            call: "llama_model_load_from_file",
            code: None,
            message: format!("the path {} holds a NUL byte", path.display()),
        })?;
        // SAFETY: returns a plain struct of defaults.
        let mut params = unsafe { sys::llama_model_default_params() };
        params.n_gpu_layers = p.n_gpu_layers;
        params.use_extra_bufts = p.repack;
        params.load_mode = match (p.mmap, p.mlock) {
            (true, true) => sys::LLAMA_LOAD_MODE_MMAP_MLOCK,
            (true, false) => sys::LLAMA_LOAD_MODE_MMAP,
            (false, true) => sys::LLAMA_LOAD_MODE_MLOCK,
            (false, false) => sys::LLAMA_LOAD_MODE_NONE,
        };
        log::clear();
        // SAFETY: `c_path` is a valid C string for the call; `params` is initialised.
        let ptr = unsafe { sys::llama_model_load_from_file(c_path.as_ptr(), params) };
        let ptr = NonNull::new(ptr).ok_or_else(|| {
            LlamaError::new(
                "llama_model_load_from_file",
                None,
                "it returned no model and logged no reason",
            )
        })?;
        // SAFETY: `ptr` is a live model; its vocab lives as long as the model.
        let vocab = unsafe { sys::llama_model_get_vocab(ptr.as_ptr()) };
        let Some(vocab) = NonNull::new(vocab.cast_mut()) else {
            // SAFETY: the model was just loaded and is not used again.
            unsafe { sys::llama_model_free(ptr.as_ptr()) };
            return Err(LlamaError::new(
                "llama_model_get_vocab",
                None,
                "the model has no vocabulary",
            ));
        };
        Ok(Model { ptr, vocab })
    }

    fn m(&self) -> *const sys::llama_model {
        self.ptr.as_ptr()
    }

    fn v(&self) -> *const sys::llama_vocab {
        self.vocab.as_ptr()
    }

    pub fn n_vocab(&self) -> u32 {
        // SAFETY: a live vocab.
        unsafe { sys::llama_vocab_n_tokens(self.v()) }.max(0) as u32
    }

    /// Whether `token` ends generation (EOS, EOT and the like).
    pub fn is_eog(&self, token: u32) -> bool {
        // SAFETY: a live vocab; llama.cpp range-checks the id.
        unsafe { sys::llama_vocab_is_eog(self.v(), token as sys::llama_token) }
    }

    pub fn bos(&self) -> i32 {
        // SAFETY: a live vocab.
        unsafe { sys::llama_vocab_bos(self.v()) }
    }

    pub fn add_bos(&self) -> bool {
        // SAFETY: a live vocab.
        unsafe { sys::llama_vocab_get_add_bos(self.v()) }
    }

    /// Every token id that ends generation.
    pub fn eog_tokens(&self) -> Vec<u32> {
        (0..self.n_vocab()).filter(|&t| self.is_eog(t)).collect()
    }

    /// The model's shape and file facts, for the run metadata.
    pub fn facts(&self) -> ModelFacts {
        let mut buf = vec![0u8; 256];
        // SAFETY: `buf` is writable for its length; llama.cpp NUL-terminates within it.
        let n = unsafe { sys::llama_model_desc(self.m(), buf.as_mut_ptr().cast(), buf.len()) };
        buf.truncate(n.clamp(0, 255) as usize);
        // SAFETY: getters on a live model.
        unsafe {
            ModelFacts {
                description: String::from_utf8_lossy(&buf).into_owned(),
                file_type: owned(sys::llama_ftype_name(sys::llama_model_ftype(self.m()))),
                size_bytes: sys::llama_model_size(self.m()),
                n_params: sys::llama_model_n_params(self.m()),
                n_ctx_train: sys::llama_model_n_ctx_train(self.m()),
                n_layer: sys::llama_model_n_layer(self.m()),
                n_embd: sys::llama_model_n_embd(self.m()),
                n_head: sys::llama_model_n_head(self.m()),
                n_head_kv: sys::llama_model_n_head_kv(self.m()),
                n_swa: sys::llama_model_n_swa(self.m()),
                n_vocab: self.n_vocab(),
            }
        }
    }

    /// A GGUF metadata value as a string (`general.architecture`, ...).
    pub fn meta(&self, key: &str) -> Option<String> {
        let key = CString::new(key).ok()?;
        let mut buf = vec![0u8; 512];
        // SAFETY: `key` is a C string and `buf` writable for its length.
        let n = unsafe {
            sys::llama_model_meta_val_str(
                self.m(),
                key.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        (n >= 0).then(|| {
            buf.truncate((n as usize).min(buf.len() - 1));
            String::from_utf8_lossy(&buf).into_owned()
        })
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: the model is ours and every context using it holds an Rc, so none is
        // alive any more.
        unsafe { sys::llama_model_free(self.ptr.as_ptr()) }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelFacts {
    pub description: String,
    pub file_type: String,
    pub size_bytes: u64,
    pub n_params: u64,
    pub n_ctx_train: i32,
    pub n_layer: i32,
    pub n_embd: i32,
    pub n_head: i32,
    pub n_head_kv: i32,
    pub n_swa: i32,
    pub n_vocab: u32,
}

/// ggml's CPU thread pool, attached to a context (as llama-bench does) so threads are
/// not created per decode call.
struct ThreadPool(NonNull<sys::ggml_threadpool>);

impl ThreadPool {
    fn new(n_threads: i32, poll: u32) -> Result<ThreadPool, LlamaError> {
        // SAFETY: returns a plain struct of defaults for `n_threads`.
        let mut p = unsafe { sys::ggml_threadpool_params_default(n_threads) };
        p.poll = poll;
        log::clear();
        // SAFETY: `p` is initialised and only read during the call.
        let ptr = unsafe { sys::ggml_threadpool_new(&mut p) };
        NonNull::new(ptr).map(ThreadPool).ok_or_else(|| {
            LlamaError::new("ggml_threadpool_new", None, "no thread pool was created")
        })
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        // SAFETY: ours; the context that used it is freed first (Context::drop).
        unsafe { sys::ggml_threadpool_free(self.0.as_ptr()) }
    }
}

/// How to make a context.
#[derive(Clone, Debug)]
pub struct ContextParams {
    pub n_ctx: u32,
    pub n_batch: u32,
    pub n_ubatch: u32,
    pub n_seq_max: u32,
    pub n_threads: i32,
    pub n_threads_batch: i32,
    pub poll: u32,
    /// -1 auto, 0 off, 1 on (llama.h's `llama_flash_attn_type`).
    pub flash_attn: i32,
    pub type_k: sys::ggml_type,
    pub type_v: sys::ggml_type,
    pub kv_unified: bool,
    pub swa_full: bool,
}

/// The abort hook: asked by ggml between graph nodes whether to stop `llama_decode`.
type AbortHook = Box<dyn Fn() -> bool>;

unsafe extern "C" fn abort_trampoline(data: *mut c_void) -> bool {
    if data.is_null() {
        return false;
    }
    // SAFETY: `data` is the address of the AbortHook its Context owns in a Box, which
    // lives until after the context is freed.
    let hook = unsafe { &*(data as *const AbortHook) };
    // A panicking hook aborts the decode rather than unwinding into C.
    catch_unwind(AssertUnwindSafe(hook)).unwrap_or(true)
}

/// How a decode failed (llama.h's return codes).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// 1: no room in the KV cache for the batch; the memory is as before the call.
    #[error("{0}")]
    NoKvSlot(LlamaError),
    /// 2: the abort callback stopped it; ubatches already processed stay in memory.
    #[error("llama_decode was aborted")]
    Aborted,
    /// -1: invalid input batch; < -1: fatal error.
    #[error("{0}")]
    Failed(LlamaError),
}

/// llama.cpp's own counters since the last reset (`llama_perf_context`).
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct Perf {
    pub t_p_eval_ms: f64,
    pub t_eval_ms: f64,
    pub n_p_eval: u32,
    pub n_eval: u32,
    pub n_reused: u32,
}

/// A context (`llama_context`): the KV cache, the compute buffers and the threads.
pub struct Context {
    ptr: NonNull<sys::llama_context>,
    n_vocab: usize,
    // Freed after the context (Drop frees the context first, then fields drop).
    _pool: ThreadPool,
    _abort: Box<AbortHook>,
    _model: Rc<Model>,
}

impl Context {
    pub fn new(
        model: Rc<Model>,
        p: &ContextParams,
        abort: impl Fn() -> bool + 'static,
    ) -> Result<Context, LlamaError> {
        let abort: Box<AbortHook> = Box::new(Box::new(abort));
        let pool = ThreadPool::new(p.n_threads.max(p.n_threads_batch), p.poll)?;
        // SAFETY: returns a plain struct of defaults.
        let mut c = unsafe { sys::llama_context_default_params() };
        c.n_ctx = p.n_ctx;
        c.n_batch = p.n_batch;
        c.n_ubatch = p.n_ubatch;
        c.n_seq_max = p.n_seq_max;
        c.n_threads = p.n_threads;
        c.n_threads_batch = p.n_threads_batch;
        c.flash_attn_type = p.flash_attn;
        c.type_k = p.type_k;
        c.type_v = p.type_v;
        c.kv_unified = p.kv_unified;
        c.swa_full = p.swa_full;
        // The perf counters are recorded beside the harness's stamps.
        c.no_perf = false;
        c.abort_callback = Some(abort_trampoline);
        c.abort_callback_data = (&*abort as *const AbortHook).cast_mut().cast();
        log::clear();
        // SAFETY: the model is alive (we keep an Rc); `c` is initialised; the abort data
        // points into a Box this Context owns and frees only after llama_free.
        let ptr = unsafe { sys::llama_init_from_model(model.ptr.as_ptr(), c) };
        let ptr = NonNull::new(ptr).ok_or_else(|| {
            LlamaError::new(
                "llama_init_from_model",
                None,
                "it returned no context and logged no reason",
            )
        })?;
        // SAFETY: both live; the pool outlives the context (freed after it in drop).
        unsafe {
            sys::llama_attach_threadpool(ptr.as_ptr(), pool.0.as_ptr(), std::ptr::null_mut())
        };
        Ok(Context {
            ptr,
            n_vocab: model.n_vocab() as usize,
            _pool: pool,
            _abort: abort,
            _model: model,
        })
    }

    fn c(&self) -> *mut sys::llama_context {
        self.ptr.as_ptr()
    }

    /// What llama.cpp made of the requested sizes (it rounds and caps some).
    pub fn sizes(&self) -> ContextSizes {
        // SAFETY: getters on a live context.
        unsafe {
            ContextSizes {
                n_ctx: sys::llama_n_ctx(self.c()),
                n_ctx_seq: sys::llama_n_ctx_seq(self.c()),
                n_batch: sys::llama_n_batch(self.c()),
                n_ubatch: sys::llama_n_ubatch(self.c()),
                n_seq_max: sys::llama_n_seq_max(self.c()),
                n_threads: sys::llama_n_threads(self.c()),
                n_threads_batch: sys::llama_n_threads_batch(self.c()),
            }
        }
    }

    /// Runs the model on `batch`.
    pub fn decode(&mut self, batch: &Batch) -> Result<(), DecodeError> {
        log::clear();
        // SAFETY: a live context; the batch's arrays hold `n_tokens` initialised entries
        // (Batch::push keeps that invariant) and llama.cpp only reads them.
        let ret = unsafe { sys::llama_decode(self.c(), batch.raw) };
        match ret {
            0 => Ok(()),
            1 => Err(DecodeError::NoKvSlot(LlamaError::new(
                "llama_decode",
                Some(1),
                "could not find a KV slot for the batch (reduce the batch or increase the context)",
            ))),
            2 => {
                log::clear();
                Err(DecodeError::Aborted)
            }
            -1 => Err(DecodeError::Failed(LlamaError::new(
                "llama_decode",
                Some(-1),
                "invalid input batch",
            ))),
            code => Err(DecodeError::Failed(LlamaError::new(
                "llama_decode",
                Some(code),
                "fatal error",
            ))),
        }
    }

    /// The logits of batch position `i` of the last decode (`n_vocab` floats). The
    /// borrow ends before the next decode, which would overwrite them.
    pub fn logits(&self, i: i32) -> Option<&[f32]> {
        // SAFETY: a live context; llama.cpp returns NULL for a position without logits.
        let p = unsafe { sys::llama_get_logits_ith(self.c(), i) };
        // SAFETY: a non-NULL row holds n_vocab floats, valid until the next decode (which
        // needs &mut self, so this borrow has ended).
        (!p.is_null()).then(|| unsafe { std::slice::from_raw_parts(p, self.n_vocab) })
    }

    /// Samples from batch position `i` with `sampler` (and advances its state).
    pub fn sample(&mut self, sampler: &mut Sampler, i: i32) -> Result<u32, LlamaError> {
        if self.logits(i).is_none() {
            return Err(LlamaError::new(
                "llama_get_logits_ith",
                None,
                &format!("batch position {i} has no logits"),
            ));
        }
        // SAFETY: both live; position `i` has logits (checked above), so llama.cpp's
        // internal assertion on them holds.
        let t = unsafe { sys::llama_sampler_sample(sampler.0.as_ptr(), self.c(), i) };
        u32::try_from(t)
            .map_err(|_| LlamaError::new("llama_sampler_sample", Some(t), "no token was sampled"))
    }

    /// Removes every KV cell of sequence `seq` (a finished or aborted request).
    pub fn remove_sequence(&mut self, seq: i32) -> Result<(), LlamaError> {
        self.remove_positions(seq, -1)
    }

    /// Removes sequence `seq`'s cells from position `from` on (-1: all).
    pub fn remove_positions(&mut self, seq: i32, from: i32) -> Result<(), LlamaError> {
        log::clear();
        // SAFETY: a live context; the memory handle lives as long as it.
        let ok = unsafe {
            let mem = sys::llama_get_memory(self.c());
            !mem.is_null() && sys::llama_memory_seq_rm(mem, seq, from, -1)
        };
        if ok {
            Ok(())
        } else {
            Err(LlamaError::new(
                "llama_memory_seq_rm",
                None,
                &format!("sequence {seq} from position {from} could not be removed"),
            ))
        }
    }

    /// The highest position sequence `seq` holds (-1: empty).
    pub fn sequence_end(&self, seq: i32) -> i32 {
        // SAFETY: a live context and its memory.
        unsafe {
            let mem = sys::llama_get_memory(self.c());
            if mem.is_null() {
                -1
            } else {
                sys::llama_memory_seq_pos_max(mem, seq)
            }
        }
    }

    /// The counters since the last reset, then resets them. llama.cpp reports counts
    /// of at least 1 even when nothing ran; a zero time means a zero count here.
    pub fn take_perf(&mut self) -> Perf {
        // SAFETY: a live context.
        let d = unsafe { sys::llama_perf_context(self.c()) };
        // SAFETY: a live context.
        unsafe { sys::llama_perf_context_reset(self.c()) };
        let count = |t: f64, n: i32| if t > 0.0 { n.max(0) as u32 } else { 0 };
        Perf {
            t_p_eval_ms: d.t_p_eval_ms,
            t_eval_ms: d.t_eval_ms,
            n_p_eval: count(d.t_p_eval_ms, d.n_p_eval),
            n_eval: count(d.t_eval_ms, d.n_eval),
            n_reused: d.n_reused.max(0) as u32,
        }
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: ours; freed once, before the thread pool, the abort hook and the
        // model it uses (fields drop after this).
        unsafe { sys::llama_free(self.ptr.as_ptr()) }
    }
}

#[derive(Copy, Clone, Debug, serde::Serialize)]
pub struct ContextSizes {
    pub n_ctx: u32,
    pub n_ctx_seq: u32,
    pub n_batch: u32,
    pub n_ubatch: u32,
    pub n_seq_max: u32,
    pub n_threads: i32,
    pub n_threads_batch: i32,
}

/// A `llama_batch` of up to `capacity` tokens, one sequence id each.
pub struct Batch {
    raw: sys::llama_batch,
    capacity: usize,
}

impl Batch {
    pub fn new(capacity: usize) -> Batch {
        let capacity = capacity.max(1);
        // SAFETY: allocates arrays for `capacity` tokens with one sequence id each.
        let raw = unsafe { sys::llama_batch_init(capacity as i32, 0, 1) };
        let mut b = Batch { raw, capacity };
        b.clear();
        b
    }

    pub fn clear(&mut self) {
        self.raw.n_tokens = 0;
    }

    pub fn len(&self) -> usize {
        self.raw.n_tokens as usize
    }

    pub fn is_empty(&self) -> bool {
        self.raw.n_tokens == 0
    }

    /// Appends a token; returns its batch position, or None when the batch is full.
    pub fn push(&mut self, token: u32, pos: u32, seq: i32, logits: bool) -> Option<i32> {
        let i = self.len();
        if i >= self.capacity {
            return None;
        }
        // SAFETY: llama_batch_init allocated `capacity` entries in each array and one
        // sequence id behind each seq_id pointer; `i < capacity`.
        unsafe {
            *self.raw.token.add(i) = token as sys::llama_token;
            *self.raw.pos.add(i) = pos as sys::llama_pos;
            *self.raw.n_seq_id.add(i) = 1;
            *(*self.raw.seq_id.add(i)) = seq;
            *self.raw.logits.add(i) = i8::from(logits);
        }
        self.raw.n_tokens += 1;
        Some(i as i32)
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: allocated by llama_batch_init and freed once.
        unsafe { sys::llama_batch_free(self.raw) }
    }
}

/// `LLAMA_DEFAULT_SEED` in llama.h (a macro bindgen does not carry): a random seed.
pub const LLAMA_DEFAULT_SEED: u32 = 0xFFFF_FFFF;

/// How a request samples.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// 0: greedy (the other fields are ignored).
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub min_p: f32,
    /// None: a random seed (LLAMA_DEFAULT_SEED).
    pub seed: Option<u32>,
}

/// A sampler chain (`llama_sampler_chain_init`), freed on drop.
pub struct Sampler(NonNull<sys::llama_sampler>);

impl Sampler {
    /// llama.cpp's own chain: greedy at temperature 0, else top-k → top-p → min-p →
    /// temperature → a seeded draw (each filter only when set).
    pub fn new(cfg: &SamplerConfig) -> Result<Sampler, LlamaError> {
        // SAFETY: returns a plain struct of defaults.
        let mut params = unsafe { sys::llama_sampler_chain_default_params() };
        params.no_perf = false;
        // SAFETY: creates a chain from initialised params.
        let chain = unsafe { sys::llama_sampler_chain_init(params) };
        let chain = Sampler(NonNull::new(chain).ok_or_else(|| {
            LlamaError::new(
                "llama_sampler_chain_init",
                None,
                "no sampler chain was created",
            )
        })?);
        let add = |s: *mut sys::llama_sampler, name: &'static str| {
            if s.is_null() {
                return Err(LlamaError::new(name, None, "no sampler was created"));
            }
            // SAFETY: both live; the chain takes ownership of `s` and frees it with itself.
            unsafe { sys::llama_sampler_chain_add(chain.0.as_ptr(), s) };
            Ok(())
        };
        // SAFETY (each init below): plain constructors with validated arguments.
        if cfg.temperature <= 0.0 {
            add(
                unsafe { sys::llama_sampler_init_greedy() },
                "llama_sampler_init_greedy",
            )?;
            return Ok(chain);
        }
        if cfg.top_k > 0 {
            add(
                unsafe { sys::llama_sampler_init_top_k(cfg.top_k as i32) },
                "llama_sampler_init_top_k",
            )?;
        }
        if cfg.top_p < 1.0 {
            add(
                unsafe { sys::llama_sampler_init_top_p(cfg.top_p, 1) },
                "llama_sampler_init_top_p",
            )?;
        }
        if cfg.min_p > 0.0 {
            add(
                unsafe { sys::llama_sampler_init_min_p(cfg.min_p, 1) },
                "llama_sampler_init_min_p",
            )?;
        }
        add(
            unsafe { sys::llama_sampler_init_temp(cfg.temperature) },
            "llama_sampler_init_temp",
        )?;
        let seed = cfg.seed.unwrap_or(LLAMA_DEFAULT_SEED);
        add(
            unsafe { sys::llama_sampler_init_dist(seed) },
            "llama_sampler_init_dist",
        )?;
        Ok(chain)
    }

    /// Time spent sampling (ms) and tokens sampled since the last call, by llama.cpp's
    /// own count (read, then reset).
    pub fn take_perf(&mut self) -> (f64, u32) {
        // SAFETY: a live sampler chain (perf works only on chains, which ours are).
        let d = unsafe { sys::llama_perf_sampler(self.0.as_ptr()) };
        // SAFETY: as above.
        unsafe { sys::llama_perf_sampler_reset(self.0.as_ptr()) };
        (d.t_sample_ms, d.n_sample.max(0) as u32)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        // SAFETY: ours, freed once, with every sampler the chain owns.
        unsafe { sys::llama_sampler_free(self.0.as_ptr()) }
    }
}

/// The `NAME = 1` entries of `llama_print_system_info()` (the CPU features and options
/// this build uses), e.g. `["SSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2", ...]`.
pub fn enabled_features(system_info: &str) -> Vec<String> {
    system_info
        .split('|')
        .filter_map(|part| {
            let part = part.rsplit(':').next().unwrap_or(part);
            let (k, v) = part.split_once('=')?;
            (v.trim() == "1").then(|| k.trim().to_string())
        })
        .filter(|k| !k.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_from_system_info() {
        let s = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 0 | LLAMAFILE = 1 | REPACK = 1 | ";
        assert_eq!(
            enabled_features(s),
            ["SSE3", "SSSE3", "AVX", "AVX2", "LLAMAFILE", "REPACK"]
        );
    }

    #[test]
    fn log_lines_become_error_text() {
        log::clear();
        // SAFETY: the callback takes any NUL-terminated string.
        unsafe {
            log::callback(
                sys::GGML_LOG_LEVEL_INFO,
                c"info line\n".as_ptr(),
                std::ptr::null_mut(),
            );
            log::callback(
                sys::GGML_LOG_LEVEL_ERROR,
                c"bad thing\n".as_ptr(),
                std::ptr::null_mut(),
            );
            log::callback(
                sys::GGML_LOG_LEVEL_CONT,
                c"more\n".as_ptr(),
                std::ptr::null_mut(),
            );
            log::callback(
                sys::GGML_LOG_LEVEL_WARN,
                std::ptr::null(),
                std::ptr::null_mut(),
            );
        }
        let e = LlamaError::new("x", Some(3), "fallback");
        assert_eq!(e.message, "bad thing; more");
        assert_eq!(
            e.to_string(),
            "llama.cpp x failed (returned 3): bad thing; more"
        );
        assert_eq!(LlamaError::new("y", None, "fallback").message, "fallback");
    }

    #[test]
    fn batches_hold_their_capacity() {
        let mut b = Batch::new(2);
        assert_eq!(b.push(5, 0, 0, false), Some(0));
        assert_eq!(b.push(6, 1, 0, true), Some(1));
        assert_eq!(b.push(7, 2, 0, true), None);
        assert_eq!(b.len(), 2);
        b.clear();
        assert!(b.is_empty());
    }
}
