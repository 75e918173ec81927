import Foundation
import Testing
@testable import Diagnosis

/// The expectations of Fixtures/explain/expected.json: per real public log (SOURCES.md names
/// where each comes from), its reports in order, as a person read them.
private struct ExpectedFixtures: Decodable {
    struct Fixture: Decodable {
        var formats: [String]
        var reports: [Report]
    }

    struct Report: Decodable {
        var kind: String
        var cpu: Int?
        var stalled: [Int]?
        var detectedBy: Int?
        var task: String?
        var pid: Int?
        var rip: String?
        var frames: [String]
    }

    var fixtures: [String: Fixture]
}

private func explainDirectory() throws -> URL {
    try #require(Bundle.module.url(forResource: "explain", withExtension: nil, subdirectory: "Fixtures"))
}

private func expectations() throws -> ExpectedFixtures {
    let data = try Data(contentsOf: try explainDirectory().appendingPathComponent("expected.json"))
    return try JSONDecoder().decode(ExpectedFixtures.self, from: data)
}

private func fixtureNames() -> [String] {
    (try? expectations().fixtures.keys.sorted()) ?? []
}

@Suite("kite explain: real logs")
struct LogExplainerFixtureTests {
    @Test(arguments: fixtureNames())
    func readsEveryReportOfARealLog(_ name: String) throws {
        let expected = try #require(try expectations().fixtures[name])
        let log = try String(contentsOf: try explainDirectory().appendingPathComponent(name), encoding: .utf8)
        // An idle CPU's one-line answer to an NMI is a report of Kite's; the person did not count it.
        let reports = LogExplainer.explain(log).reports.filter { !$0.event.headline.contains("skipped: idling at") }
        #expect(reports.map(\.event.kind.rawValue) == expected.reports.map(\.kind), "\(name): kinds")
        for (index, (got, want)) in zip(reports, expected.reports).enumerated() where got.event.kind.rawValue == want.kind {
            let e = got.event
            let label = "\(name) report \(index + 1) (\(want.kind), line \(got.line))"
            if let cpu = want.cpu { #expect(e.cpu == cpu || got.cpus == [cpu], "\(label): cpu") }
            if let stalled = want.stalled { #expect(e.stalledCPUs == stalled, "\(label): stalled CPUs") }
            if let detector = want.detectedBy { #expect(e.detectedBy == detector, "\(label): detected by") }
            if let task = want.task { #expect(e.task == task, "\(label): task") }
            if let pid = want.pid { #expect(e.pid == pid, "\(label): pid") }
            if let rip = want.rip { #expect(e.rip?.function == rip, "\(label): rip") }
            // The frames a person names first are the first frames Kite names past the machinery.
            let names = got.keyFrames.map(\.function).filter { $0 != e.rip?.function || want.rip == nil }
            let named = (e.rip.map { [$0.function] } ?? []) + got.keyFrames.map(\.function) + e.frames.map(\.function)
            if let first = want.frames.first {
                #expect(named.contains(first), "\(label): \(first) not among \(names)")
            }
        }
    }

    /// Together the fixtures cover every format `kite explain` promises to read (each tag
    /// names a format as expected.json's "formats" lists spell it).
    @Test func fixturesCoverEveryFormat() throws {
        let formats = try expectations().fixtures.values.flatMap(\.formats)
        let required = [
            "x86-64", "arm64", "timestamps", "no timestamps", "CONFIG_PRINTK_CALLER [    T", "CONFIG_PRINTK_CALLER [    C",
            "syslog-with", "syslog-without", "rsyslog-#012", "rsyslog-#011", "journalctl", "dmesg-T", "dmesg -T",
            "decode_stacktrace.sh", "syzbot decoded frames", "<TASK>", "<IRQ>", "? frames", "sysrq-l",
            "interleaved line by line", "csd-non-responsive", "hung task", "panic", "oops", "WARNING", "wrapped",
        ]
        for tag in required {
            #expect(formats.contains { $0.contains(tag) }, "no fixture covers \(tag)")
        }
    }

    /// The seeds stay fixtures: the second one is also the set's "<NMI>" section (an NMI
    /// backtrace of a CPU that polls the ICR with interrupts off).
    @Test func secondSeedReadAsItsReportersDid() throws {
        let url = try #require(Bundle.module.url(forResource: "seed-qemu-srso-icr.txt", withExtension: nil, subdirectory: "Fixtures"))
        let explanation = LogExplainer.explain(try String(contentsOf: url, encoding: .utf8))
        #expect(explanation.reports.map(\.event.kind) == [.rcuStall, .nmiBacktrace])
        let backtrace = explanation.reports[1]
        #expect(backtrace.event.cpu == 0 && backtrace.event.detectedBy == 1 && backtrace.event.interruptsEnabled == false)
        #expect(backtrace.keyFrames.first?.function == "default_send_IPI_allbutself")
        #expect(explanation.reports[0].diagnosis == "The RCU grace period waits for CPU 0 (147019 jiffies); CPU 0's NMI backtrace "
                + "shows it in default_send_IPI_allbutself with interrupts off, itself waiting for other CPUs in native_stop_other_cpus")
    }

    @Test func firstSeedReadAsItsReporterDid() throws {
        let url = try #require(Bundle.module.url(forResource: "seed-libkrun-gic.txt", withExtension: nil, subdirectory: "Fixtures"))
        let explanation = LogExplainer.explain(try String(contentsOf: url, encoding: .utf8))
        #expect(explanation.reports.map(\.event.kind) == [.softLockup, .rcuExpeditedStall])
        // Two runs pasted one after the other: the stall (at 263 s) is of another boot than the lockup (at 476 s).
        #expect(explanation.reports.map(\.boot) == [0, 1])
        #expect(explanation.reports[0].ipiWait == "smp_call_function_many_cond" && explanation.reports[0].waitsFor.isEmpty)
        #expect(explanation.reports[1].diagnosis?.hasSuffix("shows it idle in cpuidle_idle_call: the IPI did not wake it (not delivered, or not taken)") == true)
    }
}
