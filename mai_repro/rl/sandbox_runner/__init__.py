"""Scripts that run inside the sandbox (standard library only, never imported by the library).

``init.py`` is process 1 of the sandbox's PID namespace: it makes the file system read-only
except the working copy, drops to the episode's user and limits, and starts ``harness.py``,
which calls the function under test on the hidden inputs and reports the values (never a
verdict) on file descriptor 3. See :mod:`mai_repro.rl.sandbox`.
"""
