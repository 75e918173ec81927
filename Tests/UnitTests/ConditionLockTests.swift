import HostCalls
import Foundation
import Testing
@testable import VMM

/// The blocking half of the wake-up protocol (Docs/WakeupProtocol.md) on real threads.
@Suite struct ConditionLockTests {
    @Test func aTimedWaitEndsOnceItsDeadlinePasses() {
        let lock = ConditionLock()
        let start = monotonicNanoseconds()
        let deadline = start + 30_000_000
        let timedOut = lock.withLock { () -> Bool in
            while lock.wait(untilNanoseconds: deadline) {}  // spurious wake-ups loop
            return true
        }
        #expect(timedOut)
        #expect(monotonicNanoseconds() >= deadline)
        // A deadline already past returns at once, without blocking.
        #expect(lock.withLock { lock.wait(untilNanoseconds: start) } == false)
    }

    /// Two threads hand a token back and forth 20,000 times, each waiting for its turn with
    /// the protocol's rules (check and block under the lock; post under the lock, then
    /// wake). A lost wake-up would leave a waiter blocked until its 10 s deadline, which the
    /// test counts; random short busy spins vary the interleavings.
    @Test func postsOnAnotherThreadAreNeverLost() {
        final class Shared: @unchecked Sendable {
            let lock = ConditionLock()
            var turn = 0          // guarded by lock
            var lostWakeups = 0   // guarded by lock
        }
        let shared = Shared()
        let rounds = 20_000
        let done = DispatchSemaphore(value: 0)
        for me in 0..<2 {
            Thread.detachNewThread {
                var rng = SystemRandomNumberGenerator()
                for round in 0..<rounds {
                    let deadline = monotonicNanoseconds() + 10_000_000_000
                    shared.lock.withLock {
                        while shared.turn % 2 != me {
                            if !shared.lock.wait(untilNanoseconds: deadline) {
                                shared.lostWakeups += 1
                                break
                            }
                        }
                    }
                    for _ in 0..<Int.random(in: 0..<50, using: &rng) { _ = round.hashValue }
                    shared.lock.withLock {
                        shared.turn += 1
                        shared.lock.broadcast()
                    }
                }
                done.signal()
            }
        }
        done.wait()
        done.wait()
        shared.lock.withLock {
            #expect(shared.lostWakeups == 0)
            #expect(shared.turn == 2 * rounds)
        }
    }
}
