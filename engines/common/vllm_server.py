"""Starts vLLM's OpenAI-compatible server for ``--engine vllm-server``.

Run by the harness with the vLLM venv's python, in its own process group, on
127.0.0.1 and a port the harness chose; its output is the run's ``server.log``. It
builds the engine configuration exactly as the in-process adapter does
(``vllm_args``: same defaults, same ``--engine-arg`` mapping, same validation), turns
it into the command line of ``python -m vllm.entrypoints.openai.api_server`` and
parses that with vLLM's own parser; a value whose command-line form does not parse
back to the same value is set on the parsed namespace directly (and named in the
info file). It then runs what that module's ``main()`` runs (``run_server``), in this
process.

One addition to the stock server: each finished request's ``RequestStateStats``
stamps (queued, scheduled, first and last token; engine-core ``time.monotonic()``,
i.e. CLOCK_MONOTONIC, the harness's clock) are appended to ``--stamps FILE`` keyed by
the request id, from inside vLLM's output processing, before the request's final
chunk can be sent. The harness matches them to its own stamps to split the served
overhead into before and after the engine.

Exit code 2 with a line starting ``harness-usage: `` on stderr: bad engine args.
"""

import argparse
import contextlib
import io
import json
import os
import sys

import harness_bridge as hb
import vllm_args

USAGE_MARK = "harness-usage: "
MODULE = "vllm.entrypoints.openai.api_server"
_MISSING = object()


def _forms(key, value):
    """Command-line spellings of ``key=value`` to try, best first."""
    flag = "--" + key.replace("_", "-")
    if isinstance(value, bool):
        yield [flag] if value else ["--no-" + key.replace("_", "-")]
        yield [flag, "true" if value else "false"]
    elif value is None:
        pass
    elif isinstance(value, (dict, list)):
        yield [flag, json.dumps(value)]
    else:
        yield [flag, str(value)]
    yield []  # vLLM's own default already equals it


def command_line(parser, base, args):
    """(argv, not_on_command_line): the api_server flags for ``args``, each checked by
    parsing it with vLLM's own parser; keys no spelling reproduces are returned apart."""
    argv, missing = list(base), []
    for key, value in args.items():
        if key == "model":
            continue
        for form in _forms(key, value):
            try:
                # A spelling the parser refuses prints its usage: keep that out of the log.
                with contextlib.redirect_stderr(io.StringIO()):
                    ns = parser.parse_args(base + form)
            except SystemExit:
                continue
            if getattr(ns, key, _MISSING) == value:
                argv += form
                break
        else:
            missing.append(key)
    return argv, missing


def install_stamps(path):
    """Appends each finished request's RequestStateStats stamps to ``path``."""
    from vllm.v1.engine import output_processor as op

    original = op.OutputProcessor._update_stats_from_finished
    out = open(path, "a", buffering=1)

    def update_stats_from_finished(self, req_state, finish_reason, iteration_stats):
        original(self, req_state, finish_reason, iteration_stats)
        s = getattr(req_state, "stats", None)
        if s is None:
            return
        out.write(json.dumps({
            "id": req_state.external_req_id,
            "queued_ns": hb.secs_to_ns(getattr(s, "queued_ts", None)),
            "scheduled_ns": hb.secs_to_ns(getattr(s, "scheduled_ts", None)),
            "first_token_ns": hb.secs_to_ns(getattr(s, "first_token_ts", None)),
            "last_token_ns": hb.secs_to_ns(getattr(s, "last_token_ts", None)),
            "tokens": getattr(s, "num_generation_tokens", None),
        }) + "\n")

    op.OutputProcessor._update_stats_from_finished = update_stats_from_finished
    return "vllm.v1.engine.output_processor.OutputProcessor._update_stats_from_finished"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--options", default="{}", help="--engine-arg KEY=VALUE pairs as a JSON object")
    p.add_argument("--info", required=True, help="where to write the effective configuration (JSON)")
    p.add_argument("--stamps", required=True, help="where to append per-request engine stamps (JSONL)")
    a = p.parse_args()
    try:
        hb.require_model_dir("vllm-server", a.model)
        gpu = vllm_args.on_gpu()
        vllm_args.set_cpu_env(gpu)
        args, from_user = vllm_args.engine_args("vllm-server", a.model, json.loads(a.options), gpu)
        vllm_args.bind_cpus_for_ranks(args, gpu)
        vllm_args.build(args)
    except hb.UsageError as e:
        print(f"{USAGE_MARK}{e}", file=sys.stderr, flush=True)
        sys.exit(2)

    import uvloop
    from vllm.entrypoints.launchers.api_server.entry import run_server
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.entrypoints.serve.utils.api_utils import cli_env_setup
    from vllm.logger import configure_logging_from_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    # What api_server's main() does, with our argv.
    cli_env_setup()
    parser = make_arg_parser(FlexibleArgumentParser(description="vLLM OpenAI-Compatible RESTful API server."))
    base = ["--model", a.model, "--host", "127.0.0.1", "--port", str(a.port)]
    argv, missing = command_line(parser, base, args)
    ns = parser.parse_args(argv)
    for key in missing:
        setattr(ns, key, args[key])
    configure_logging_from_args(ns)
    validate_parsed_serve_args(ns)
    hook = install_stamps(a.stamps)
    info = {
        "command": [sys.executable, "-m", MODULE, *argv],
        "not_on_command_line": {k: hb.jsonable(args[k]) for k in missing},
        "engine_args": {k: hb.jsonable(v) for k, v in args.items()},
        "engine_args_from_user": from_user,
        "version": vllm_args.version(),
        "gpu": gpu,
        "pid": os.getpid(),
        "stamps_hook": hook,
        "env": {k: os.environ[k] for k in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND",
                                            "OMP_NUM_THREADS", "VLLM_ENABLE_V1_MULTIPROCESSING")
                if k in os.environ},
    }
    tmp = a.info + ".tmp"
    with open(tmp, "w") as f:
        json.dump(info, f, indent=1)
    os.replace(tmp, a.info)
    print(f"harness: serving {a.model} as: {' '.join(info['command'])}", file=sys.stderr, flush=True)
    uvloop.run(run_server(ns))


if __name__ == "__main__":
    main()
