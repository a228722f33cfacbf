"""The child processes an engine adapter starts inside the harness's process, as the
Python adapters see them: which children are new, whether one of them has died, and
how they end (SIGTERM, then SIGKILL, reaped, so none is left as a zombie), with
multiprocessing's resource tracker stopped the way it expects. Used by the SGLang
adapter (its scheduler and detokenizer) and the vLLM adapter (its multiprocessing
workers at tensor or pipeline parallel > 1).

Loaded as the module ``child_procs`` after ``harness_bridge``; imports psutil only
inside its functions.
"""

# SIGTERM to SIGKILL for an engine's processes at shutdown.
KILL_GRACE_S = 5


def children():
    """The pids of this process's children (empty when psutil is missing)."""
    try:
        import psutil

        return [c.pid for c in psutil.Process().children()]
    except Exception:
        return []


def exited(pids, names, engine):
    """Why ``engine`` (its name, for the message) can no longer serve, when one of
    ``pids`` (its processes, ``names`` their roles by pid) has exited; None while all
    run."""
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
            return (f"{engine}'s {names.get(pid, 'child')} process (pid {pid}, {title}) exited while the "
                    "engine was serving; its traceback, if it wrote one, is in engine.log")
    return None


def reap_new_children(before):
    """Ends and reaps every child of this process not in ``before`` (the engine's
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
