"""Process 1 of the sandbox (run as root inside fresh mount, network and PID namespaces).

argv: work_dir uid result_fd python harness cpu_s memory_mb file_mb nproc [isolate]
Makes every mount read-only except a bind mount of the working copy, then forks the harness
as ``uid`` with resource limits and an empty environment, waits for it, and exits with its
status (128 + signal when it was killed). When this process exits the kernel kills every
process left in the namespace, so nothing the sandboxed code started outlives the episode.
"""

import ctypes
import os
import resource
import sys

MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18


def _mount(libc, src, target, flags):
    if libc.mount(src.encode() if src else None, target.encode(), None, flags, None) != 0:
        raise OSError(ctypes.get_errno(), f"mount {target}: {os.strerror(ctypes.get_errno())}")


def read_only_except(work):
    libc = ctypes.CDLL(None, use_errno=True)
    _mount(libc, None, "/", MS_REC | MS_PRIVATE)
    _mount(libc, work, work, MS_BIND)  # its own mount, so it can stay writable
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point != work:
                points.append(point)
    for point in points:
        try:
            _mount(libc, None, point, MS_REMOUNT | MS_BIND | MS_RDONLY)
        except OSError:
            pass  # e.g. a mount hidden below another one; the check below catches what counts
    probe = os.path.join(os.path.dirname(work), ".probe")
    try:
        open(probe, "w").close()
        os.unlink(probe)
        raise SystemExit("sandbox init: the directory above the working copy is writable")
    except OSError:
        pass


def _owned(pid):
    try:
        return os.stat(f"/proc/{pid}").st_uid == os.getuid()
    except OSError:
        return False


def main():
    work, uid, result_fd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    python, harness = sys.argv[4], sys.argv[5]
    cpu_s, memory_mb, file_mb, nproc = (int(x) for x in sys.argv[6:10])
    isolate = len(sys.argv) > 10 and sys.argv[10] == "1"
    if isolate:
        read_only_except(work)
    if os.getuid() != 0:  # RLIMIT_NPROC counts every process of the user: leave room for them
        nproc += sum(1 for d in os.listdir("/proc") if d.isdigit() and _owned(d))
    pid = os.fork()
    if pid == 0:
        try:
            if result_fd != 3:  # the harness writes its values to descriptor 3
                os.dup2(result_fd, 3)
                os.close(result_fd)
            if os.getuid() == 0:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            for what, value in ((resource.RLIMIT_CPU, cpu_s),
                                (resource.RLIMIT_AS, memory_mb << 20),
                                (resource.RLIMIT_FSIZE, file_mb << 20),
                                (resource.RLIMIT_NPROC, nproc),
                                (resource.RLIMIT_CORE, 0)):
                hard = value + 1 if what == resource.RLIMIT_CPU else value
                resource.setrlimit(what, (value, hard))
            os.chdir(work)
            os.execve(python, [python, "-I", "-S", "-B", harness, work], {})
        finally:
            os._exit(127)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status))


if __name__ == "__main__":
    main()
