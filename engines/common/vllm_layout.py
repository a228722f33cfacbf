"""vLLM's parallel layout as the in-process adapter (``engines/vllm.py``) reports it, and
the Ray cluster a ``distributed_executor_backend=ray`` run uses.

The harness builds no cluster layer: sizes and executor come from vLLM's own
``ParallelConfig``, and each rank's node, process and device from the rank itself
(``LLMEngine.collective_rpc`` runs :func:`rank_facts` in every worker, whichever
executor holds them: ``uni`` in this process, ``mp`` in its worker processes, ``ray``
in Ray actors, on whatever node they were placed).

Ray: ``--engine-arg ray_address=HOST:PORT`` (or the standard ``RAY_ADDRESS``) joins a
running cluster (``ray start``, KubeRay, a Slurm script) and only disconnects at the
end, which ends the run's actors; without one, a local head on loopback is started
here and stopped at shutdown, with every process it started.

Loaded as the module ``vllm_layout`` after ``harness_bridge``; imports vLLM and Ray
only inside its functions.
"""

import os
import sys

import harness_bridge as hb

SOURCE = ("vLLM ParallelConfig (tensor/pipeline/data_parallel_size, distributed_executor_backend); each "
          "rank's rank, tp/pp rank, pid, hostname, device and Ray node from the worker itself "
          "(LLMEngine.collective_rpc)")


def rank_facts(worker):
    """Runs in a worker (pickled by value, so it needs nothing of the harness there):
    what the rank knows of itself. Each fact only where the worker has it."""
    import os
    import socket

    facts = {"pid": os.getpid(), "node": socket.gethostname()}
    rank = getattr(worker, "rank", None)
    if rank is not None:
        facts["rank"] = int(rank)
    device = getattr(worker, "device", None)
    if device is not None:
        facts["device"] = str(device)
    try:
        from vllm.distributed import parallel_state as ps

        facts["tp_rank"] = int(ps.get_tp_group().rank_in_group)
        facts["pp_rank"] = int(ps.get_pp_group().rank_in_group)
    except Exception:
        pass
    try:
        import ray

        if ray.is_initialized():
            facts["ray_node_id"] = ray.get_runtime_context().get_node_id()
            facts["node_ip"] = ray.util.get_node_ip_address()
    except Exception:
        pass
    return facts


def layout(engine):
    """``info()["layout"]`` for an in-process ``LLMEngine``, and why the ranks are
    missing where they are (None when they are all there)."""
    pc = engine.vllm_config.parallel_config
    backend = pc.distributed_executor_backend
    if backend is not None and not isinstance(backend, str):
        backend = getattr(backend, "__name__", str(backend))
    out = {"tensor_parallel": int(pc.tensor_parallel_size), "pipeline_parallel": int(pc.pipeline_parallel_size),
           "data_parallel": int(pc.data_parallel_size), "source": SOURCE}
    if backend:
        out["backend"] = backend
    why = None
    try:
        import cloudpickle

        # By value: the workers cannot import this module, which lives in the harness.
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
        ranks = list(engine.collective_rpc(rank_facts))
        for i, r in enumerate(ranks):
            r.setdefault("rank", i)
        out["ranks"] = sorted(ranks, key=lambda r: r["rank"])
    except Exception as e:
        why = f"vLLM's workers did not report themselves ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    return out, why


class Ray:
    """The Ray cluster of a run: joined (``address``) or a local head started here."""

    def __init__(self, address):
        try:
            import ray
        except ImportError:
            raise hb.UsageError("distributed_executor_backend=ray needs Ray in the vllm env; scripts/setup.sh vllm "
                                "installs it (pinned in scripts/setup.d/pins/vllm.lock)") from None
        self._ray = ray
        self.address = address
        self.started_head = not address
        if ray.is_initialized():
            self.started_head = False
            return
        try:
            if address:
                ray.init(address=address, log_to_driver=True)
            else:
                # A fresh cluster of this one node, on loopback, gone at shutdown.
                ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False)
        except ConnectionError as e:
            raise hb.UsageError(f"cannot join the Ray cluster at {address}: {str(e).splitlines()[0]}; "
                                "start it first (ray start --head) or leave ray_address out for a local head") from None

    def describe(self):
        nodes = [n for n in self._ray.nodes() if n.get("Alive")]
        how = f"joined at {self.address}" if not self.started_head else "a local head on 127.0.0.1 started by the harness"
        return {"ray": self._ray.__version__, "cluster": how, "nodes": len(nodes),
                "node_ids": sorted(n["NodeID"] for n in nodes)}

    def stop(self):
        """Disconnects (a joined cluster then ends this job's actors) or, for the head
        started here, stops it and every process it started."""
        try:
            self._ray.shutdown()
        except Exception:
            pass


def ray_for(args, address):
    """The Ray cluster of a run whose EngineArgs are ``args`` (None unless its backend is
    ``ray``). ``address`` (``--engine-arg ray_address``) implies the Ray backend and wins
    over ``RAY_ADDRESS``."""
    backend = args.get("distributed_executor_backend")
    if address and backend is None:
        args["distributed_executor_backend"] = backend = "ray"
    if backend != "ray":
        if address:
            raise hb.UsageError(f"--engine-arg ray_address needs distributed_executor_backend=ray (given: {backend})")
        return None
    from vllm.platforms import current_platform

    # vLLM's own check, made before a cluster is joined or started: a platform with no
    # Ray device key (vLLM's CPU platform among them) cannot place workers on Ray.
    if not getattr(current_platform, "ray_device_key", ""):
        raise hb.UsageError(f"vLLM's {current_platform.device_name} platform does not support Ray (its ray_device_key "
                            "is empty; vLLM: 'current platform cpu does not support ray'); use "
                            "distributed_executor_backend=mp here, Ray on a GPU host")
    return Ray(address or os.environ.get("RAY_ADDRESS") or None)
