#if canImport(Glibc)
import Glibc
#endif

// Kite's one way to retry a system call that a signal interrupted (EINTR). Kite's threads
// get signals on purpose (the vCPU kick, SIGUSR1, SIGINT/SIGTERM), so any blocking call
// may return EINTR; the call is then simply made again. Where an interrupted call must not
// be repeated (KVM_RUN, whose EINTR is the kick itself), the caller handles it.

/// Makes `call` (a libc call: -1 and errno on failure) until it does not fail with EINTR.
@inlinable
public func retryingInterrupted<T: SignedInteger>(_ call: () -> T) -> T {
    while true {
        let result = call()
        if result == -1 && errno == EINTR { continue }
        return result
    }
}

/// Makes `call` (a CHost call: -errno on failure) until it does not fail with EINTR.
@inlinable
public func retryingHostCall<T: SignedInteger>(_ call: () -> T) -> T {
    while true {
        let result = call()
        if result == -T(EINTR) { continue }
        return result
    }
}
