import Synchronization
import Testing
@testable import VMM
#if canImport(Glibc)
import Glibc
#endif

/// The device thread: handlers run on it, eventfds are drained, watches can be added,
/// paused and removed from handlers, and stop() joins it.
@Suite struct DeviceEventLoopTests {
    final class Seen: Sendable { let calls = Mutex<[String]>([]) }

    /// Waits (bounded) until `seen` holds `count` calls.
    static func wait(_ seen: Seen, for count: Int) -> [String] {
        for _ in 0..<500 {
            let c = seen.calls.withLock { $0 }
            if c.count >= count { return c }
            usleep(2_000)
        }
        return seen.calls.withLock { $0 }
    }

    @Test func handlersRunOnTheDeviceThreadAndCanWatchMore() throws {
        let loop = try DeviceEventLoop()
        let seen = Seen()
        let a = try EventFD(), b = try EventFD()
        var bHandle = -1
        try loop.watch(a.fd) { [unowned loop] in
            seen.calls.withLock { $0.append("a") }
            // A handler adds a watch at run time, the way a new connection would.
            if bHandle < 0 {
                bHandle = (try? loop.watch(b.fd) { seen.calls.withLock { $0.append("b") } }) ?? -2
            }
        }
        // Two signals before the thread first waits, drained as one wake-up. (Signalled after
        // start(), the thread, already waiting, may wake for each: start() returns once it runs.)
        a.signal(); a.signal()
        try loop.start()
        #expect(Self.wait(seen, for: 1) == ["a"])
        b.signal()
        #expect(Self.wait(seen, for: 2) == ["a", "b"])
        loop.stop()
        #expect(bHandle >= 0)
    }

    @Test func unwatchedAndPausedFdsAreIgnored() throws {
        let loop = try DeviceEventLoop()
        let seen = Seen()
        let a = try EventFD(), b = try EventFD(), control = try EventFD()
        let aHandle = try loop.watch(a.fd) { seen.calls.withLock { $0.append("a") } }
        let bHandle = try loop.watch(b.fd) { seen.calls.withLock { $0.append("b") } }
        try loop.watch(control.fd) { [unowned loop] in
            loop.unwatch(aHandle)
            loop.setEnabled(bHandle, false)
            seen.calls.withLock { $0.append("control") }
        }
        try loop.start()
        control.signal()
        #expect(Self.wait(seen, for: 1) == ["control"])
        a.signal(); b.signal()
        usleep(100_000)
        #expect(seen.calls.withLock { $0 } == ["control"])
        loop.stop()
    }
}
