// CHost: the host system calls Swift cannot make directly (variadic ioctl and prctl-style
// calls, packed structs such as epoll_event, signalfd records, sockaddr_un), each wrapped
// in a function that returns -errno on failure. Nothing here knows about KVM: that is
// CKVM's (<linux/kvm.h>).
#ifndef CHOST_H
#define CHOST_H

#include <pthread.h>
#include <stdint.h>

/// ioctl(fd, request, arg) with a pointer argument; returns the result, or -errno.
int host_ioctl_ptr(int fd, unsigned long request, void *arg);
/// ioctl(fd, request, value) with an integer argument; returns the result, or -errno.
int host_ioctl_val(int fd, unsigned long request, unsigned long value);

/// Installs a no-op handler for `signo` without SA_RESTART, so the signal interrupts a
/// blocking call in the thread it is sent to (KVM_RUN then returns -EINTR). Returns 0 or -errno.
int host_install_kick_handler(int signo);
/// pthread_kill wrapper; returns 0 or -errno.
int host_signal_thread(pthread_t thread, int signo);

/// CLOCK_MONOTONIC in ns when the process started: taken by a constructor that runs
/// before the Swift runtime and main (the zero of `kite run --boot-timing`).
unsigned long long host_process_start_ns(void);

/// Names the calling thread (shown by ps -L and in /proc); truncated to 15 bytes.
void host_set_thread_name(const char *name);
/// pthread_timedjoin_np with a relative timeout: 0 once the thread has ended (and is
/// joined), -ETIMEDOUT if it is still running after `milliseconds`, or another -errno.
int host_join_thread(pthread_t thread, int milliseconds);
/// eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); returns the fd or -errno.
int host_eventfd(void);
/// A non-blocking signalfd for SIGINT and SIGTERM (which the caller must block);
/// returns the fd or -errno.
int host_termination_signalfd(void);
/// Reads one signal from a signalfd; returns its number, 0 if none, or -errno.
int host_read_signalfd(int fd);
/// A non-blocking signalfd for one signal (which the caller blocks), or -errno.
int host_signalfd(int signo);

/// epoll_create1(EPOLL_CLOEXEC); the fd or -errno. (struct epoll_event is packed on x86-64,
/// which Swift cannot lay out reliably, so epoll is used only through these calls.)
int host_epoll_create(void);
/// Watches `fd` for `events` (HOST_EPOLL_IN | HOST_EPOLL_OUT; 0 = registered but quiet).
int host_epoll_watch_events(int epfd, int fd, uint64_t tag, uint32_t events);
/// Changes the events watched for `fd`. 0 or -errno.
int host_epoll_modify(int epfd, int fd, uint64_t tag, uint32_t events);
/// Waits for events (timeout in ms, -1 = forever); stores up to `max` tags and each event's
/// mask (HOST_EPOLL_*). The count or -errno.
int host_epoll_wait_events(int epfd, uint64_t *tags, uint32_t *events, int max, int timeout);
#define HOST_EPOLL_IN 0x001u
#define HOST_EPOLL_OUT 0x004u
#define HOST_EPOLL_ERR 0x008u
#define HOST_EPOLL_HUP 0x010u

/// A listening, non-blocking AF_UNIX stream socket at `path` (a stale socket file there is
/// removed first). The fd or -errno.
int host_unix_listen(const char *path);
/// The same, but a file already at `path` is an error (EADDRINUSE), as Firecracker's API socket.
int host_unix_listen_exclusive(const char *path);
/// A non-blocking connection to the AF_UNIX stream socket at `path`. The fd or -errno
/// (-EAGAIN when its backlog is full).
int host_unix_connect(const char *path);
/// accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC. The fd or -errno.
int host_accept(int fd);
/// send with MSG_NOSIGNAL (a closed peer is an error, not SIGPIPE). The count or -errno.
long host_send(int fd, const void *buffer, unsigned long length);

/// Stops watching `fd` (EPOLL_CTL_DEL). 0 or -errno.
int host_epoll_unwatch(int epfd, int fd);
/// Fills `buffer` from the kernel's CSPRNG (getrandom). The count or -errno.
long host_getrandom(void *buffer, unsigned long length);

/// pidfd_open(pid, 0): a file descriptor that polls readable once the process has exited
/// (Linux 5.3). The fd (close-on-exec) or -errno.
int host_pidfd_open(int pid);

#endif
