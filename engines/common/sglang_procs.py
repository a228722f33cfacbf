"""SGLang's processes as the ``sglang`` adapter (engines/sglang.py) sees them: which
children it started, whether one has died, and how they end.

``sglang.Engine`` starts its scheduler and detokenizer as child processes of the host
(and, through multiprocessing, a resource tracker). Its own ``Engine.shutdown()`` kills
**every** child of the host process (``kill_process_tree(os.getpid(),
include_parent=False)``), children the harness started included: ``shutdown`` here runs
it with that kill narrowed to SGLang's own processes, and ``reap_new_children`` ends and
reaps whatever the load left, so no zombie stays behind.

Loaded as the module ``sglang_procs`` after ``harness_bridge``; imports psutil and
SGLang only inside its functions.
"""

import atexit
import os

# SIGTERM to SIGKILL for SGLang's processes at shutdown (SGLang itself waits up to 60 s).
KILL_GRACE_S = 5


def children():
    """The pids of this process's children (empty when psutil is missing)."""
    try:
        import psutil

        return [c.pid for c in psutil.Process().children()]
    except Exception:
        return []


def exited(pids, names):
    """Why the engine can no longer serve, when one of ``pids`` (SGLang's processes,
    ``names`` their roles by pid) has exited; None while all run."""
    import psutil

    for pid in pids:
        try:
            gone = psutil.Process(pid).status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
        except psutil.NoSuchProcess:
            gone = True
        if gone:
            title = names.get(pid, "child")
            try:
                title = psutil.Process(pid).name() or title
            except psutil.Error:
                pass
            return (f"SGLang's {names.get(pid, 'child')} process (pid {pid}, {title}) exited while the "
                    "engine was serving; its traceback, if it wrote one, is in engine.log")
    return None


def shutdown(engine, pids):
    """SGLang's own ``engine.shutdown()``, with its process-tree kill of the host's
    children narrowed to ``pids`` (SGLang's processes) and their descendants."""
    import psutil
    import sglang.srt.entrypoints.engine as engine_module

    # multiprocessing's resource tracker ignores SIGTERM (it would hold up the kill
    # for SGLang's whole wait); it is stopped the way it expects in reap_new_children.
    own = set(pids) - {resource_tracker_pid()}
    for pid in list(own):
        try:
            own.update(c.pid for c in psutil.Process(pid).children(recursive=True))
        except psutil.Error:
            pass
    sglang_kill = engine_module.kill_process_tree

    def scoped_kill(parent_pid, include_parent=True, skip_pid=None, wait_timeout=None):
        # Engine.shutdown() kills every child of this process; kill SGLang's only.
        if parent_pid == os.getpid() and not include_parent:
            kill(own, min(wait_timeout or KILL_GRACE_S, KILL_GRACE_S))
        else:
            sglang_kill(parent_pid, include_parent=include_parent, skip_pid=skip_pid, wait_timeout=wait_timeout)

    engine_module.kill_process_tree = scoped_kill
    try:
        engine.shutdown()
    finally:
        engine_module.kill_process_tree = sglang_kill
        atexit.unregister(engine.shutdown)


def reap_new_children(before):
    """Ends and reaps every child of this process not in ``before`` (SGLang's
    processes, multiprocessing's resource tracker), so none is left as a zombie."""
    import multiprocessing

    new = set(children()) - set(before)
    tracker = resource_tracker_pid()
    if tracker in new:
        try:
            from multiprocessing import resource_tracker

            resource_tracker._resource_tracker._stop()  # it exits when its pipe closes; _stop reaps it
        except Exception:
            pass
    kill(set(children()) - set(before), KILL_GRACE_S)
    multiprocessing.active_children()  # joins (reaps) finished multiprocessing children


def resource_tracker_pid():
    """The pid of multiprocessing's resource tracker in this process (None: not started)."""
    try:
        from multiprocessing import resource_tracker

        return getattr(resource_tracker._resource_tracker, "_pid", None)
    except Exception:
        return None


def kill(pids, wait_s):
    """SIGTERM, then SIGKILL after ``wait_s``, to ``pids``; reaps those that are our children."""
    import psutil

    procs = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            p.terminate()
            procs.append(p)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=wait_s)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
