#if canImport(Glibc)
import HostCalls
import Glibc
#endif

/// A mutex with one condition variable: the blocking half of the vCPU wake-up protocol
/// (Docs/WakeupProtocol.md). A waiter checks its condition and blocks in one step under the
/// lock, so a post made under the same lock can never fall between the two; every wait
/// re-checks its condition when it returns (wake-ups may be spurious, and waits may time
/// out). Timeouts are on CLOCK_MONOTONIC, the clock of `monotonicNanoseconds()`.
public final class ConditionLock: @unchecked Sendable {
    // Sound: allocated once here, never moved (pthread objects must not be), freed in deinit.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    public init() {
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    public func withLock<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// With the lock held (inside `withLock`): releases it and blocks until woken or until
    /// `deadline` (monotonic ns; nil: no deadline) has passed, then holds it again. Returns
    /// false once the deadline has passed. Callers loop on their own condition.
    @discardableResult
    public func wait(untilNanoseconds deadline: UInt64? = nil) -> Bool {
        guard let deadline else {
            pthread_cond_wait(condition, mutex)
            return true
        }
        if monotonicNanoseconds() >= deadline { return false }
        var at = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
        return pthread_cond_timedwait(condition, mutex, &at) != ETIMEDOUT
    }

    /// Wakes every waiter (each re-checks its own condition). Call with the lock held.
    public func broadcast() {
        pthread_cond_broadcast(condition)
    }
}
