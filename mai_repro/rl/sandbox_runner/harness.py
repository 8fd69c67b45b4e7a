"""The test runner inside the sandbox: values out, never verdicts.

Reads ``{"function": name, "inputs": [[args...], ...], "monitor": bool}`` on stdin, imports
``solution`` from the working copy, calls the function on each input and writes one JSON line
per input, ``{"event": "value", "i": i, "value": ...}`` or ``{"event": "error", ...}``, to file
descriptor 3, then ``{"event": "done"}``. The expected values never enter the sandbox: the
grader outside compares. So a sandboxed ``sys.exit(0)``, a printed "5 passed" or a patched
runner can at most stop or garble the values, never produce right ones.

With ``monitor`` on, an audit hook (PEP 578; it cannot be removed once added) reports
forbidden calls as ``{"event": "violation", "reason": ...}`` lines: network, starting
processes, writing outside the working copy, reading ``.git``, native code.
"""

import json
import os
import sys

RESULT_FD = 3
WORK = os.path.realpath(sys.argv[1])
_write, _dumps, _exit = os.write, json.dumps, os._exit
_state = {"active": False, "busy": False, "stop": False, "seen": set()}


def emit(obj):
    _write(RESULT_FD, (_dumps(obj, default=repr) + "\n").encode())


SPAWN = ("os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec", "os.system",
         "subprocess.Popen", "pty.spawn")
NETWORK = ("socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo",
           "socket.gethostbyname")


def _inside(path, root):
    return path == root or path.startswith(root + os.sep)


def audit(event, args, emit=emit):  # defaults bind the originals: patching has no effect
    if not _state["active"] or _state["busy"]:
        return
    _state["busy"] = True
    try:
        reason = None
        if event in NETWORK:
            reason = f"network access ({event})"
        elif event in SPAWN:
            reason = f"process start ({event})"
        elif event == "ctypes.dlopen":
            reason = "native code (ctypes.dlopen)"
        elif event in ("os.listdir", "os.scandir") and isinstance(args[0], (str, bytes)):
            path = os.path.realpath(os.fsdecode(args[0]))
            if _inside(path, os.path.join(WORK, ".git")):
                reason = f"read of .git ({os.path.relpath(path, WORK)})"
        elif event == "open" and isinstance(args[0], (str, bytes)):
            path = os.path.realpath(os.fsdecode(args[0]))
            mode, flags = args[1] or "", args[2] or 0
            writes = any(c in str(mode) for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR)
            if _inside(path, os.path.join(WORK, ".git")):
                reason = f"read of .git ({os.path.relpath(path, WORK)})"
            elif writes and not _inside(path, WORK):
                where = os.path.relpath(path, WORK) if path.startswith("/tmp/") else path
                reason = f"write outside the working directory ({where})"
        kind = reason.split(" (")[0] if reason else None
        if reason and kind not in _state["seen"]:  # each kind once: the first is the evidence
            _state["seen"].add(kind)
            emit({"event": "violation", "reason": reason})
    finally:
        _state["busy"] = False


def run_case(fn, i, args, emit=emit):
    try:
        emit({"event": "value", "i": i, "value": fn(*args)})
    except MemoryError:
        _state["stop"] = True
        emit({"event": "violation", "reason": "memory limit reached (MemoryError)"})
    except SystemExit as e:
        _state["stop"] = True
        emit({"event": "violation", "reason": f"interpreter exit during a test (code {e.code})"})
    except OSError as e:
        if e.errno == 27:  # EFBIG: Python ignores SIGXFSZ, so the write fails instead
            _state["stop"] = True
            emit({"event": "violation", "reason": "file-size limit (EFBIG)"})
        else:
            emit({"event": "error", "i": i, "error": f"{type(e).__name__}: {e}"[:300]})
    except BaseException as e:  # a wrong solution: the case fails, nothing more
        emit({"event": "error", "i": i, "error": f"{type(e).__name__}: {e}"[:300]})


RUNNER = {"emit": emit, "run_case": run_case, "audit": audit}


def tampered():
    """Names of the runner's functions that the code under test replaced."""
    g = globals()
    return [n for n, f in RUNNER.items() if g.get(n) is not f] + \
        (["os.write"] if os.write is not _write else []) + \
        (["json.dumps"] if json.dumps is not _dumps else [])


def main(emit=emit, run_case=run_case, tampered=tampered):
    request = json.loads(sys.stdin.read())
    sys.stdin.close()
    if request.get("monitor"):
        sys.addaudithook(audit)
    sys.path.insert(0, WORK)
    _state["active"] = True
    fn = None
    try:
        import solution
        fn = getattr(solution, request["function"])
    except MemoryError:
        emit({"event": "violation", "reason": "memory limit reached (MemoryError)"})
    except SystemExit as e:
        emit({"event": "violation", "reason": f"interpreter exit at import (code {e.code})"})
    except BaseException as e:
        emit({"event": "error", "i": -1, "error": f"import: {type(e).__name__}: {e}"[:300]})
    for i, args in enumerate(request["inputs"]):
        if fn is None or _state["stop"]:  # after a violation the rest would only repeat it
            break
        run_case(fn, i, args)
    _state["active"] = False
    bad = tampered()
    if bad and request.get("monitor"):
        emit({"event": "violation", "reason": f"the runner was monkeypatched ({', '.join(bad)})"})
    emit({"event": "done"})
    sys.stdout.flush()
    _exit(0)


if __name__ == "__main__":
    main()
