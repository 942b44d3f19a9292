"""What a confined child hit, as the rule it broke and a message for the job's author.

`describe_exception` runs in the child on an exception from job code; `describe_exit`
runs on the node for a child that died without answering. Both return `(rule, message)`:
`rule` is one of the names below, or None when the job simply failed (a plain
exception, an exit). The caller adds the file and line from the traceback.

The sandbox refuses with plain errnos (seccomp: EPERM, Landlock: EACCES), so the error
alone does not say what was refused; the traceback does: the innermost standard-library
module (socket, subprocess, threading, ...) or, when job code called a builtin itself,
the name of the call on the failing line.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import socket
import sysconfig
from collections.abc import Mapping
from types import TracebackType

__all__ = [
    "RULE_CPU",
    "RULE_FILES",
    "RULE_MEMORY",
    "RULE_MERGE_OUTPUT",
    "RULE_NETWORK",
    "RULE_PROCESSES",
    "RULE_RECURSION",
    "RULE_SANDBOX",
    "RULE_SECCOMP",
    "RULE_STACK",
    "RULE_THREADS",
    "RULE_WALL",
    "describe_exception",
    "describe_exit",
]

RULE_NETWORK = "network"
RULE_PROCESSES = "processes"
RULE_THREADS = "threads"
RULE_FILES = "files"
RULE_MEMORY = "memory"
RULE_RECURSION = "recursion"
RULE_STACK = "recursion/stack"
RULE_MERGE_OUTPUT = "merge output"
RULE_CPU = "cpu time"
RULE_WALL = "wall time"
RULE_SECCOMP = "seccomp"
RULE_SANDBOX = "sandbox"  # refused by the sandbox, but we cannot tell which rule

Limits = Mapping[str, object]  # the job's [limits] table, docs/jobs.md, "job.toml"

_STDLIB = os.path.realpath(sysconfig.get_paths()["stdlib"]) + os.sep
# The runtime's own frames (its stand-in for os.system, say) are never the job's line.
_SANDBOX = os.path.dirname(os.path.realpath(__file__)) + os.sep

# Standard-library modules (by dotted prefix) whose use means one rule; with a pattern,
# only the functions it matches (os.makedirs is about files, os.spawnv about processes).
_MODULE_RULES: tuple[tuple[str, str, re.Pattern[str] | None], ...] = tuple(
    (module, rule, re.compile(functions) if functions else None)
    for module, rule, functions in (
        ("threading", RULE_THREADS, ""),
        ("concurrent.futures.thread", RULE_THREADS, ""),
        ("subprocess", RULE_PROCESSES, ""),
        ("multiprocessing", RULE_PROCESSES, ""),
        ("concurrent.futures.process", RULE_PROCESSES, ""),
        ("pty", RULE_PROCESSES, ""),
        ("os", RULE_PROCESSES, r"spawn|exec|popen|fork"),
        ("shutil", "metadata", r"copymode|copystat|copyxattr|chown"),
        ("tarfile", "metadata", r"chmod|chown|utime"),
        ("socket", RULE_NETWORK, ""),
        ("ssl", RULE_NETWORK, ""),
        ("http", RULE_NETWORK, ""),
        ("urllib", RULE_NETWORK, ""),
        ("ftplib", RULE_NETWORK, ""),
        ("smtplib", RULE_NETWORK, ""),
        ("poplib", RULE_NETWORK, ""),
        ("imaplib", RULE_NETWORK, ""),
        ("xmlrpc", RULE_NETWORK, ""),
        ("asyncio", RULE_NETWORK, ""),
        ("socketserver", RULE_NETWORK, ""),
    )
)


# The call on the job's own line, when it called a builtin that raised directly.
_CALL_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(socket|socketpair|create_connection|create_server|fromfd)\s*\("),
     RULE_NETWORK),
    (re.compile(r"\b(kill|killpg|pidfd_open|pidfd_send_signal|ptrace|process_vm_\w+)\s*\("),
     "signal"),
    (re.compile(r"\b(fork|forkpty|vfork|clone3?|exec\w*|spawn\w*|posix_spawnp?|system|popen)"
                r"\s*\("), RULE_PROCESSES),
    (re.compile(r"\b(start_new_thread|start_new)\s*\("), RULE_THREADS),
    (re.compile(r"\b(chroot|mount|umount2?|unshare|setns|pivot_root)\s*\("), "view"),
    (re.compile(r"\b(l?chmod|fchmod|l?chown|fchown|l?setxattr|fsetxattr|l?removexattr|"
                r"fremovexattr)\s*\("), "metadata"),
    # fcntl(fd, F_SETOWN, pid) makes the kernel signal pid on I/O: a signal all the same.
    (re.compile(r"\bF_SETOWN(_EX)?\b|\bF_SETSIG\b"), "signal"),
    (re.compile(r"\b(shm(get|at|ctl|dt)|msg(get|snd|rcv|ctl)|sem(get|op|timedop|ctl)|"
                r"mq_\w+)\s*\("), "ipc"),
    (re.compile(r"\b(l?utimes?|utimensat|futimesat|futimens)\s*\("), "times"),
    (re.compile(r"\btruncate\s*\("), "truncate"),
)

# ctypes straight to the kernel: `libc.syscall(SYS_socket, ...)` reads as `socket(...)`.
_RAW_SYSCALL = re.compile(r"\bsyscall\s*\(\s*(?:SYS_|__NR_)(\w+)\s*,?")
#: When the job raised the errno itself (ctypes code: `if libc.ptrace(...) != 0: raise
#: OSError(ctypes.get_errno(), ...)`), the call is on one of the lines just before.
_LOOK_BACK = 3

# Calls on the failing line that write rather than read.
_WRITES = re.compile(
    r"\b(write_text|write_bytes|touch|mkdir|makedirs|rename|replace|remove|unlink|rmdir|"
    r"symlink|link|truncate|copy\w*|move|mkfifo|mknod|chmod|utime)\s*\("
    # open(path, "w") or mode="a+": the mode, not the letters of the path
    r"|open\s*\([^,)]*,\s*['\"][^'\"]*[wax+]|mode\s*=\s*['\"][^'\"]*[wax+]"
    r"|O_(WRONLY|RDWR|CREAT|TRUNC|APPEND)"
)

_MESSAGES = {
    RULE_NETWORK: "tried to open a network socket: jobs have no network access",
    RULE_PROCESSES: "tried to start a new process (fork, exec or subprocess): jobs may not "
                    "start processes",
    "signal": "tried to signal or inspect another process: jobs may signal only themselves",
    RULE_THREADS: "tried to start more threads than {threads}",
    "view": "tried to chroot, mount or enter a namespace: jobs may not change how they see "
            "the system",
    "metadata": "tried to change a file's permissions, owner or extended attributes: jobs "
                "may not (shutil.copyfile copies a file's data without them)",
    "ipc": "tried to use System V shared memory, message queues or semaphores: jobs share "
           "no memory with other processes",
    "times": "tried to set a file's access or modification time: jobs may not (a file they "
             "write gets the current time)",
    "truncate": "tried to truncate a file by its path: jobs may shorten only a file they "
                "opened for writing (f.truncate())",
}
_MERGE_OUTPUT = "wrote more output than "
# Keys of _MESSAGES that are messages, not rules: the rule they report under.
_RULE_OF = {"signal": RULE_PROCESSES, "view": RULE_SANDBOX, "metadata": RULE_FILES,
            "ipc": RULE_PROCESSES, "times": RULE_FILES, "truncate": RULE_FILES}


def _value(limits: Limits | None, key: str) -> object:
    return None if limits is None else limits.get(key)


def _over(limits: Limits | None, key: str, unit: str = "") -> str:
    """"this job's limit of 256 MB (limits.memory_mb)", or without the number if unknown."""
    value = _value(limits, key)
    amount = "" if value is None else f" of {value}{unit}"
    return f"this job's limit{amount} (limits.{key})"


def _per_fragment(limits: Limits | None, key: str, what: str, verb: str) -> str:
    """The CPU or wall time message: names the amount twice when it is known."""
    value = _value(limits, key)
    if value is None:
        return f"{verb} more {what} for one fragment than this job's limit (limits.{key})"
    return (f"{verb} more than {value} s of {what} for one fragment; this job's limit is "
            f"{value} s (limits.{key})")


def _frames(tb: TracebackType | None) -> list[tuple[str, str, str]]:
    """(filename, function name, line text) of each frame, innermost last."""
    frames = []
    while tb is not None:
        code = tb.tb_frame.f_code
        line = _source_line(code.co_filename, tb.tb_lineno)
        frames.append((code.co_filename, code.co_name, line))
        tb = tb.tb_next
    return frames


def _job_lines(tb: TracebackType | None) -> list[str]:
    """The innermost line outside the sandbox package, and, when that line raises, the
    few lines before it (where a ctypes caller made the call it reports)."""
    last: tuple[str, int] | None = None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not os.path.realpath(filename).startswith(_SANDBOX):
            last = (filename, tb.tb_lineno)
        tb = tb.tb_next
    if last is None:
        return []
    filename, lineno = last
    lines = [_source_line(filename, lineno)]
    if lines[0].startswith("raise"):
        lines += [_source_line(filename, n) for n in range(lineno - 1, lineno - 1 - _LOOK_BACK, -1)
                  if n > 0]
    return [_RAW_SYSCALL.sub(r"\1(", line) for line in lines]


def _source_line(filename: str, lineno: int) -> str:
    import linecache  # imported here: only failures pay for it

    return linecache.getline(filename, lineno).strip()


def _stdlib_module(filename: str) -> str | None:
    path = os.path.realpath(filename)
    if not path.startswith(_STDLIB) or "site-packages" in path:
        return None
    rel = path[len(_STDLIB):]
    rel = rel[:-3] if rel.endswith(".py") else rel
    return rel.replace(os.sep, ".").removesuffix(".__init__")


def _rule_from_traceback(exc: BaseException) -> str | None:
    frames = _frames(exc.__traceback__)
    for filename, function, _line in reversed(frames):
        module = _stdlib_module(filename)
        if module is None:
            continue
        for prefix, rule, functions in _MODULE_RULES:
            if module != prefix and not module.startswith(prefix + "."):
                continue
            if functions is None or functions.search(function):
                return rule
    for line in _job_lines(exc.__traceback__):
        for pattern, rule in _CALL_RULES:
            if pattern.search(line):
                return rule
    return None


def _file_message(exc: OSError) -> tuple[str, str]:
    frames = _frames(exc.__traceback__)
    # The failing lines, and the standard library functions on the way (pathlib's
    # write_text, shutil's copy), say read or write; the job's own names say nothing.
    lines = " ".join(line for _f, _fn, line in frames[-2:]) + " ".join(
        f" {function}(" for filename, function, _l in frames[-3:] if _stdlib_module(filename))
    path = exc.filename
    path = os.fsdecode(path) if isinstance(path, bytes) else str(path)
    # Landlock answers EACCES for a file it would not let us create; a file missing
    # from a folder we may read gives ENOENT. Either way, one that is not there was
    # being written. (stat is not something Landlock refuses.)
    if _WRITES.search(lines) or not os.path.lexists(path):
        return RULE_FILES, (f"tried to write {path}: jobs may write only in their results "
                            "folder, and only while merging")
    return RULE_FILES, f"tried to read {path}: jobs may read only their own folder"


def describe_exception(
    exc: BaseException, *, limits: Limits | None = None
) -> tuple[str | None, str]:
    """(rule, message) for an exception raised by job code in a confined child.

    `limits` is the job's [limits] table (docs/jobs.md, "job.toml"), used to name the limit that was
    hit; the rule is None for an ordinary error of the job's own.
    """
    if isinstance(exc, MemoryError):
        return RULE_MEMORY, "ran out of memory: needed more than " + _over(
            limits, "memory_mb", " MB")
    if isinstance(exc, RecursionError):
        return RULE_RECURSION, "recursed deeper than " + _over(
            limits, "recursion_depth", " calls")
    threads = _over(limits, "threads")
    if isinstance(exc, RuntimeError) and "can't start new thread" in str(exc):
        return RULE_THREADS, _MESSAGES[RULE_THREADS].format(threads=threads)
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return RULE_MERGE_OUTPUT, _MERGE_OUTPUT + _over(limits, "merge_output_mb", " MB")
    if isinstance(exc, socket.gaierror):
        # A name lookup needs the network (DNS) or files outside the job (/etc/hosts):
        # both are closed, and a job should hear why rather than see a resolver error.
        return RULE_NETWORK, _MESSAGES[RULE_NETWORK].format(threads=threads)
    if isinstance(exc, OSError) and exc.errno in (errno.EPERM, errno.EACCES):
        rule = _rule_from_traceback(exc)
        if rule is not None:
            message = _MESSAGES[rule].format(threads=threads)
            return _RULE_OF.get(rule, rule), message
        if exc.filename is not None and exc.errno == errno.EACCES:
            # Landlock refuses files with EACCES (seccomp, which never sees paths, with
            # EPERM); an EPERM on a path is the job's own business (chmod, utime...).
            return _file_message(exc)
        if exc.filename is not None:
            return None, f"{type(exc).__name__}: {exc}"
        return RULE_SANDBOX, (f"the sandbox refused an operation ({exc.strerror}): jobs may "
                              "not use the network, other processes or files outside their "
                              "folder")
    text = str(exc)
    return None, f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def describe_exit(
    returncode: int,
    *,
    limits: Limits | None = None,
    wall_timeout: bool = False,
    cpu_seconds_used: float | None = None,
) -> tuple[str | None, str]:
    """(rule, message) for a child that ended without answering.

    `returncode` is as in `subprocess`: negative for a signal. `wall_timeout` says the
    node itself killed the child at the wall-time limit; `cpu_seconds_used` (from the
    child's rusage) tells a CPU-limit SIGKILL from another one.
    """
    cpu_message = _per_fragment(limits, "cpu_seconds", "CPU time", "used")
    if wall_timeout:
        return RULE_WALL, _per_fragment(limits, "wall_seconds", "wall time", "ran")
    if returncode >= 0:
        return None, f"the job's process exited with status {returncode} before answering"
    sig = -returncode
    if sig == signal.SIGXCPU:
        return RULE_CPU, cpu_message
    if sig == signal.SIGKILL:
        limit = _value(limits, "cpu_seconds")
        if (cpu_seconds_used is not None and isinstance(limit, int | float)
                and cpu_seconds_used >= limit):
            return RULE_CPU, cpu_message
        return None, ("the job's process was killed (SIGKILL), most likely by the system "
                      f"for using too much memory; see {_over(limits, 'memory_mb', ' MB')}")
    if sig == signal.SIGSYS:
        return RULE_SECCOMP, ("made a system call the sandbox forbids outright (another "
                              "architecture's syscall table) and was killed")
    if sig == signal.SIGSEGV:
        return RULE_STACK, ("crashed (segmentation fault), most likely by recursing deeper "
                            "than the stack allows; keep within "
                            f"{_over(limits, 'recursion_depth', ' calls')}")
    if sig == signal.SIGXFSZ:
        return RULE_MERGE_OUTPUT, _MERGE_OUTPUT + _over(limits, "merge_output_mb", " MB")
    if sig == signal.SIGABRT:
        return None, ("the job's process aborted (SIGABRT): a C extension or Python itself "
                      "gave up, often for lack of memory")
    return None, f"the job's process was killed by {_signal_name(sig)}"
