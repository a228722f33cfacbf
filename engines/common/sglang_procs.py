"""How the ``sglang`` adapter (engines/sglang.py) ends SGLang's processes.

``sglang.Engine`` starts its scheduler and detokenizer as child processes of the host
(and, through multiprocessing, a resource tracker). Its own ``Engine.shutdown()`` kills
**every** child of the host process (``kill_process_tree(os.getpid(),
include_parent=False)``), children the harness started included: ``shutdown`` here runs
it with that kill narrowed to SGLang's own processes; ``child_procs.reap_new_children``
then ends and reaps whatever the load left, so no zombie stays behind.

Loaded as the module ``sglang_procs`` after ``child_procs``; imports psutil and SGLang
only inside its functions.
"""

import atexit
import os

from child_procs import KILL_GRACE_S, kill, resource_tracker_pid


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
