"""Test adapter for the Python bridge: no ML packages, exact behaviour.

Options (``--engine-arg``):
  mode=step|stream   step: one token per in-flight request per step(), stamped by
                     the Rust driver; stream: a producer thread emits the tokens
                     and stamps them with time.monotonic_ns().
  step_ms=F          time per step (default 1).
  fail_at_step=N     raise RuntimeError inside step N (counting from 1).
  fail_request=RID   that request ends with an error carrying a traceback.
  spawn_child=true   start a `sleep 300` child at load; shutdown() kills it.
  noop=true          step() does nothing and returns at once (bridge cost).
  load_s=F           take this long to load (Ctrl-C while loading).
  token_offset=N     add N to every returned token id (a parity mismatch on purpose).
  sigquit_at_load=true  a child process sends the host SIGQUIT and exits, then the
                     load fails: what SGLang's processes do when its scheduler fails
                     at start-up.

With return_token_ids, token k of a request echoes prompt[k % len] (+ token_offset),
the same rule as the calibration engine. ``prompt_logprobs`` follows the calibration
engine's rule too (src/engine/calibration.rs, "Log-probabilities", with no offset or
shift): at position i with token t, ln p = -((t + i) mod 16)/8, top-1 t when
(t + i) mod 16 = 0, else t + 1.
"""

import atexit
import os
import subprocess
import sys
import threading
import time

import harness_bridge as hb

_OPTIONS = {"mode": str, "step_ms": float, "fail_at_step": int, "fail_request": int, "spawn_child": bool, "noop": bool,
            "load_s": float, "token_offset": int, "sigquit_at_load": bool}


class _Req:
    __slots__ = ("rid", "output_len", "generated", "want_ids", "prompt")

    def __init__(self, rid, output_len, want_ids, prompt):
        self.rid, self.output_len, self.generated, self.want_ids = rid, output_len, 0, want_ids
        self.prompt = list(prompt) if want_ids else None


class TestAdapter(hb.EngineAdapter):
    def __init__(self, model, options):
        o = hb.parse_options("python-test", options, _OPTIONS)
        self.mode = o.get("mode", "step")
        if self.mode not in ("step", "stream"):
            raise hb.UsageError(f"--engine-arg mode={self.mode}: expected step or stream")
        self.step_s = o.get("step_ms", 1.0) / 1e3
        self.fail_at_step = o.get("fail_at_step")
        self.fail_request = o.get("fail_request")
        self.noop = o.get("noop", False)
        self.token_offset = o.get("token_offset", 0)
        time.sleep(max(0.0, o.get("load_s", 0.0)))
        if o.get("sigquit_at_load"):
            # As SGLang's scheduler does: a child signals its parent, then dies.
            subprocess.run(["sh", "-c", f"kill -QUIT {os.getpid()}"], check=True)
            raise RuntimeError("injected start-up failure after a child's SIGQUIT")
        self.steps = 0
        self.reqs = {}
        self.lock = threading.Lock()
        self.child = subprocess.Popen(["sleep", "300"]) if o.get("spawn_child") else None
        if self.child is not None:
            atexit.register(self._kill_child)  # also when the host exits without shutdown()
        # Engines log from Python and from C alike; the harness keeps both off the
        # terminal (engine.log) unless --verbose.
        print("python-test: loaded (print to stdout)")
        sys.stderr.write("python-test: a warning on sys.stderr\n")
        os.write(2, b"python-test: a line written to fd 2 as C code would\n")
        self.stream = None
        if self.mode == "stream":
            self.stream = hb.StreamQueue()
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._produce, name="test-producer", daemon=True)
            self.thread.start()

    def info(self):
        return hb.engine_info(
            "python-test", "1", "none", "-", "host", self.mode,
            {"mode": self.mode, "step_ms": self.step_s * 1e3, "child_pid": self.child.pid if self.child else None,
             "venv": os.environ.get("VIRTUAL_ENV"), "python": sys.executable},
            notes=[f"python-test: a child process (pid {self.child.pid}) runs beside the adapter until shutdown"]
            if self.child else [],
            scheduler={"step_stats_source": "python-test: its own step (step mode; every in-flight request decodes "
                       "one token, none prefill or wait; no KV cache)"} if self.mode == "step" else None,
        )

    def submit(self, rid, prompt_token_ids, output_len, min_tokens, ignore_eos, temperature, seed, return_token_ids):
        with self.lock:
            self.reqs[rid] = _Req(rid, output_len, return_token_ids, prompt_token_ids)

    def _advance(self, emit):
        """One step: a token for every in-flight request. ``emit(rid, n, fin, extra)``."""
        self.steps += 1
        if self.fail_at_step is not None and self.steps == self.fail_at_step:
            raise RuntimeError(f"injected failure at step {self.steps}")
        with self.lock:
            reqs = list(self.reqs.values())
        for r in reqs:
            if r.rid == self.fail_request:
                try:
                    raise ValueError(f"injected failure of request {r.rid}")
                except ValueError as e:
                    emit(r.rid, 0, hb.ERROR, {"error": hb.format_exception(e)})
                with self.lock:
                    self.reqs.pop(r.rid, None)
                continue
            r.generated += 1
            if r.generated >= r.output_len:
                # Token k echoes prompt[k % len], as the calibration engine does.
                ids = ([r.prompt[k % len(r.prompt)] + self.token_offset for k in range(r.generated)]
                       if r.want_ids and r.prompt else None)
                emit(r.rid, 1, hb.LENGTH, {"token_ids": ids} if ids else None)
                with self.lock:
                    self.reqs.pop(r.rid, None)
            else:
                emit(r.rid, 1, hb.NOT_FINISHED, None)

    def step(self, timeout_s):
        if self.noop:
            return hb.EMPTY
        if self.stream is not None:
            return self.stream.step(timeout_s)
        if not self.reqs:
            time.sleep(min(timeout_s, 0.001))
            return hb.EMPTY
        time.sleep(self.step_s)
        buf = hb.EventBuffer()

        def emit(rid, n, fin, extra):
            buf.add(rid, n, fin)
            if extra:
                buf.finish_info(rid, **extra)

        running = len(self.reqs)
        self._advance(emit)
        # Exact stats of its one-token-per-request step, so the bridge's parsing of a
        # step()'s third element is tested without an engine.
        stats = {"engine_steps": 1, "running": running, "waiting": 0, "preempted": 0, "prefill_requests": 0,
                 "prefill_tokens": 0, "decode_requests": running, "decode_tokens": running, "kv_usage": None}
        return (*buf.take(), stats)

    def _produce(self):
        while not self.stop.is_set():
            if not self.reqs:
                time.sleep(0.0005)
                continue
            time.sleep(self.step_s)
            try:
                self._advance(lambda rid, n, fin, extra: self.stream.push(rid, n, fin, extra))
            except RuntimeError as e:
                # An engine-wide failure: every in-flight request fails with the traceback.
                with self.lock:
                    rids = list(self.reqs)
                    self.reqs.clear()
                for rid in rids:
                    self.stream.push(rid, 0, hb.ERROR, {"error": hb.format_exception(e)})

    def prompt_logprobs(self, texts):
        out = []
        for ids in texts:
            rs = [(t, (t + i) % 16) for i, t in enumerate(ids) if i > 0]
            out.append(([-r / 8 for _, r in rs], [t if r == 0 else t + 1 for t, r in rs]))
        return out

    def in_flight(self):
        return len(self.reqs)

    def abort(self, rid):
        with self.lock:
            self.reqs.pop(rid, None)

    def shutdown(self):
        if self.stream is not None:
            self.stop.set()
            self.thread.join(timeout=2)
        self._kill_child()

    def _kill_child(self):
        child, self.child = self.child, None
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=2)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def create(model, options):
    return TestAdapter(model, options)
