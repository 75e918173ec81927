#if canImport(Glibc)
import HostCalls
import Glibc
#endif

/// CLOCK_MONOTONIC in nanoseconds: the clock of every deadline and duration in Kite.
public func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
