import HostCalls
import Diagnosis
import Synchronization

/// Reads along as the guest prints: hands every line to the `ConsoleWatcher`, keeps the
/// kernel hang reports it completes, and remembers when the guest last made progress,
/// meaning it printed something that is not part of such a report (a guest stuck in a soft
/// lockup keeps printing reports, which is not progress). A partial line counts as progress
/// at once, and is taken back if, once complete, it turns out to belong to a report.
final class ConsoleMonitor: Sendable {
    private struct State {
        var watcher = ConsoleWatcher()
        var line: [UInt8] = []
        var completed: [KernelEvent] = []
        var lastOutput = monotonicNanoseconds()
        var lastProgress = monotonicNanoseconds()
        /// `lastProgress` as it was when the current line began.
        var progressBeforeLine = monotonicNanoseconds()
    }

    /// The most reports kept between two `takeEvents()` calls (the oldest are dropped).
    static let maxKeptEvents = 64
    static let maxLine = 4096

    private let state = Mutex<State>(State())

    /// Called with everything written to the console, from whichever thread wrote it.
    func observe(_ bytes: [UInt8]) {
        let now = monotonicNanoseconds()
        state.withLock { s in
            s.lastOutput = now
            for b in bytes {
                if s.line.isEmpty { s.progressBeforeLine = s.lastProgress }
                if b != UInt8(ascii: "\n") {
                    if s.line.count < Self.maxLine { s.line.append(b) }
                    if s.watcher.pending == nil { s.lastProgress = now }
                    continue
                }
                s.line.append(b)
                let events = s.watcher.feed(s.line)
                s.completed.append(contentsOf: events)
                if s.completed.count > Self.maxKeptEvents { s.completed.removeFirst(s.completed.count - Self.maxKeptEvents) }
                if s.watcher.pending != nil || Self.isTraceLine(s.line)
                    || ConsoleWatcher.isReportShaped(String(decoding: s.line, as: UTF8.self)) {
                    s.lastProgress = s.progressBeforeLine
                } else {
                    s.lastProgress = now
                }
                s.line.removeAll(keepingCapacity: true)
            }
        }
    }

    /// Lines that belong to the guest's hang reporting even when the watcher does not make
    /// them part of a report: closing lines of a trace ("</TASK>"), and the RCU and lockup
    /// watchdogs' own follow-up lines ("rcu: rcu_preempt kthread timer wakeup didn't
    /// happen ...", "rcu: \tPossible timer handling issue ...").
    static let reportMarkers = ["</TASK>", "</NMI>", "</IRQ>", "rcu: ", "watchdog: ", "NMI backtrace", "Sending NMI"]

    private static func isTraceLine(_ line: [UInt8]) -> Bool {
        let text = String(decoding: line, as: UTF8.self)
        return reportMarkers.contains { text.includes($0) }
    }

    /// The reports completed since the last call. A report still being printed is closed
    /// first if the console has been quiet for `closeAfterQuietSeconds`.
    func takeEvents(closeAfterQuietSeconds: Double = 1) -> [KernelEvent] {
        let now = monotonicNanoseconds()
        return state.withLock { s in
            if Self.seconds(from: s.lastOutput, to: now) >= closeAfterQuietSeconds && s.watcher.pending != nil {
                s.completed.append(contentsOf: s.watcher.flush())
            }
            defer { s.completed.removeAll() }
            return s.completed
        }
    }

    /// Seconds since the guest printed anything / since it last made progress.
    var quietSeconds: Double {
        let now = monotonicNanoseconds()
        return Self.seconds(from: state.withLock { $0.lastOutput }, to: now)
    }

    var secondsWithoutProgress: Double {
        let now = monotonicNanoseconds()
        return Self.seconds(from: state.withLock { $0.lastProgress }, to: now)
    }

    private static func seconds(from t: UInt64, to now: UInt64) -> Double {
        now > t ? Double(now - t) / 1e9 : 0
    }
}
