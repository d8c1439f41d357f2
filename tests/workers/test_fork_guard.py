"""A work horse must never be forked while the worker's reaper thread is inside SQLAlchemy: the
child would inherit a lock held by a thread it does not have, and hang on its first query (seen in
CI as webhook deliveries that never applied)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent("""
    import os, sys, threading, time
    sys.argv.append("--fork")                            # the forking worker (the pool does not fork)
    from workers import __main__ as worker

    worker._hold_reaper_across_forks()
    worker._reaper_pass.acquire()                        # the reaper is in the middle of a pass
    threading.Timer(0.5, worker._reaper_pass.release).start()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:                                         # the horse may run the reaper's code itself
        os._exit(0 if worker._reaper_pass.acquire(timeout=1) else 3)
    waited = time.monotonic() - started
    _, status = os.waitpid(pid, 0)
    print(f"{waited:.3f} {os.waitstatus_to_exitcode(status)}")
    assert worker._reaper_pass.acquire(timeout=1), "the parent's reaper is locked out after the fork"
""")


def test_a_fork_waits_for_the_reapers_pass_and_leaves_the_lock_free_on_both_sides():
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    waited, child_exit = done.stdout.split()
    assert float(waited) >= 0.45, "the fork did not wait for the reaper's pass"
    assert child_exit == "0", "the forked child inherited a held reaper lock"
