// CSandbox: the C half of Kite's sandbox. It installs the per-thread programs (compiled
// from the allow-lists at build time, see CSeccompCompiler) on a thread, catches violations
// (SIGSYS) and drops capabilities. Signal handlers and the variadic prctl() cannot be
// written in Swift.
#ifndef CSANDBOX_H
#define CSANDBOX_H

#include <stdint.h>

/// Installs the SIGSYS handler that records a violation of a filter whose default action
/// is SCMP_ACT_TRAP: the first violation's system call and thread are kept for
/// `csandbox_violation`, `wake_fd` (an eventfd) is written so the main loop can stop the
/// machine, and the call fails with EPERM in the thread that made it. 0 or -errno.
int csandbox_install_violation_handler(int wake_fd);

/// Names the calling thread for violation reports (15 bytes kept). Call before `csandbox_apply`.
void csandbox_set_thread_label(const char *name);

/// Sets PR_SET_NO_NEW_PRIVS and installs `instructions` BPF instructions at `program` as
/// the calling thread's seccomp filter (no TSYNC: every thread installs its own). 0 or -errno.
int csandbox_apply(const void *program, unsigned long instructions);

/// The first violation: its system call number (-1 if none yet), the label of the thread
/// that made it (into `label`, at least 16 bytes) and how many violations there were in all.
long csandbox_violation(char *label, unsigned long *count);

/// Empties the calling thread's effective, permitted and inheritable capability sets and
/// its ambient set (threads created afterwards inherit the empty sets). 0 or -errno.
int csandbox_drop_capabilities(void);

/// Calls getppid(2) directly: the system call no thread's allow-list has, for the tests'
/// `--inject seccomp-violation=...`.
long csandbox_forbidden_call(void);

#endif
