import BootMatrix
import Foundation
import GuestInit
import Testing
import VMM

struct BootMatrixArgumentTests {
    @Test func cpuAndIrqchipLists() throws {
        #expect(try BootTestArguments.cpuList("1,2,4,16") == [1, 2, 4, 16])
        #expect(try BootTestArguments.irqchipList("kernel,split,userspace") == [.kernel, .split, .userspace])
        for bad in ["", "0", "1,,2", "x", "1025", "2,2", "-1"] {
            #expect(throws: SetupError.self, "\(bad)") { try BootTestArguments.cpuList(bad) }
        }
        #expect(throws: SetupError.self) { try BootTestArguments.irqchipList("kernel,apic") }
        #expect(throws: SetupError.self) { try BootTestArguments.check(cpus: [1, 288], irqchips: [.split, .kernel]) }
        try BootTestArguments.check(cpus: [1, 288], irqchips: [.split])
        #expect(BootTestArguments.defaultJobs(hostCPUs: 16, cpus: [1, 4]) == 4)
        #expect(BootTestArguments.defaultJobs(hostCPUs: 2, cpus: [16]) == 1)
    }

    @Test func matrixNamesEveryRun() {
        let m = BootConfiguration.matrix(cpus: [1, 4], irqchips: [.kernel, .split], repeatCount: 2)
        #expect(m.map(\.name) == ["cpus1-kernel-run1", "cpus1-kernel-run2", "cpus1-split-run1", "cpus1-split-run2",
                                  "cpus4-kernel-run1", "cpus4-kernel-run2", "cpus4-split-run1", "cpus4-split-run2"])
        #expect(BootConfiguration.matrix(cpus: [2], irqchips: [.userspace], repeatCount: 1).map(\.name) == ["cpus2-userspace"])
    }
}

struct ClassifierTests {
    static let timing = "kite: boot timing (ms since kite started): first guest instruction 3.2, first console byte 40.1, init marker 812.4\n"

    static func classify(_ exit: ChildExit, console: String = "", log: String = "", report: String? = nil,
                         timedOut: Bool = false, builtIn: Bool = true) -> (BootResult, String?) {
        Classifier.classify(RunEvidence(exit: exit, timedOut: timedOut, timeoutSeconds: 120, console: console,
                                        kiteLog: log, reportJSON: report, builtInInit: builtIn))
    }

    @Test func passAndInitFailure() {
        let console = "[    0.0] Linux version 6.1\r\nkite-init: Linux 6.1.0-57-cloud-amd64\r\nkite-init: PASS: 4 of 4 CPUs online\r\n"
        #expect(Self.classify(.exited(0), console: console, log: Self.timing) == (.passed, nil))
        let failed = Self.classify(.exited(0), console: "kite-init: FAIL: 3 of 4 CPUs online\n")
        #expect(failed == (.failed, "kite-init: FAIL: 3 of 4 CPUs online"))
        // without the init's line a power-off is no pass
        #expect(Self.classify(.exited(0), console: "random\n").0 == .failedToBoot)
        // with the user's own initramfs, the power-off is the pass
        #expect(Self.classify(.exited(0), console: "random\n", builtIn: false) == (.passed, nil))
        // a hang report on the way spoils a power-off
        let spoiled = Self.classify(.exited(0), console: "kite-init: PASS: 1 of 1 CPUs online\n",
                                    report: #"{"trigger":"x","summary":"vCPU 0 spins in foo","hang":false}"#)
        #expect(spoiled.0 == .failed && spoiled.1!.contains("vCPU 0 spins in foo"))
    }

    @Test func hangTakesTheReportsSummary() {
        let report = #"{"trigger":"no progress on the console for 30 s","summary":"vCPUs 0, 1 and 3 spin in stop_machine_yield waiting for CPU 2; vCPU 2 has vector 0xfb pending but its thread has not entered the guest for 31 s: Kite starved it (held by --inject stall-vcpu) \"q\" \u00e9","hang":true}"#
        let (result, diagnosis) = Self.classify(.exited(5), report: report)
        #expect(result == .hung)
        #expect(diagnosis == "vCPUs 0, 1 and 3 spin in stop_machine_yield waiting for CPU 2; vCPU 2 has vector 0xfb pending but its thread has not entered the guest for 31 s: Kite starved it (held by --inject stall-vcpu) \"q\" é")
        // no report file: kite's own line
        let fromLog = Self.classify(.exited(5), log: "kite: the guest hung (no progress for 30 s): vCPU 2 is starved\n")
        #expect(fromLog == (.hung, "vCPU 2 is starved"))
    }

    @Test func otherEndings() {
        #expect(Self.classify(.exited(4), log: "kite: the guest crashed on vCPU 0: triple fault\nrip=0x0\n")
                == (.crashed, "kite: the guest crashed on vCPU 0: triple fault"))
        let panic = Self.classify(.exited(3), console: "Kernel panic - not syncing: VFS: Unable to mount root fs\n")
        #expect(panic == (.failedToBoot, "the guest rebooted: Kernel panic - not syncing: VFS: Unable to mount root fs"))
        let setup = Self.classify(.exited(2), log: "kite: /dev/kvm: Permission denied\n")
        #expect(setup == (.failedToBoot, "kite could not start the guest: kite: /dev/kvm: Permission denied"))
        #expect(Self.classify(.exited(1), log: "kite: seccomp: thread x made system call y\n").0 == .kiteError)
        #expect(Self.classify(.signaled(9)).0 == .kiteError)
        let timedOut = Self.classify(.signaled(15), console: "[ 3.0] smpboot: x\n", timedOut: true)
        #expect(timedOut == (.timedOut, "no exit within 120 s; the console's last line: [ 3.0] smpboot: x"))
    }

    @Test func initMarkerTime() {
        #expect(Classifier.initMarkerMilliseconds("noise\n" + Self.timing) == 812.4)
        #expect(Classifier.initMarkerMilliseconds("kite: boot timing (ms since kite started): first guest instruction 3.2, first console byte 40.1, init marker not reached\n") == nil)
        #expect(Classifier.initMarkerMilliseconds("") == nil)
    }
}

struct BootTestOutputTests {
    static func summary() -> BootTestSummary {
        let dir = "/tmp/out"
        func record(_ c: BootConfiguration, _ r: BootResult, _ d: String?, _ ms: Double?) -> RunRecord {
            RunRecord(configuration: c, result: r, diagnosis: d, exit: .exited(r == .passed ? 0 : 5), seconds: 2.25,
                      userspaceMilliseconds: ms, consolePath: "\(dir)/\(c.name).console.log",
                      reportPath: "\(dir)/\(c.name).report.json", kiteLogPath: "\(dir)/\(c.name).kite.log",
                      reportWritten: r != .passed)
        }
        return BootTestSummary(kernel: "/k/vmlinuz-6.1", initrd: nil, outputDirectory: dir, records: [
            record(BootConfiguration(cpus: 1, irqchip: .kernel), .passed, nil, 812.4),
            record(BootConfiguration(cpus: 4, irqchip: .split), .hung, "vCPU 2 <starved> & \"held\"\u{1}", nil),
        ], seconds: 5.5, timestamp: "2026-12-06T10:11:12", hostname: "h")
    }

    @Test func tableShowsRowsAndWhereFailuresLeftTheirFiles() {
        let t = BootTestOutput.table(Self.summary())
        let lines = t.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines[0].hasPrefix("configuration") && lines[0].contains("result") && lines[0].contains("userspace"))
        #expect(lines[1].hasPrefix("cpus1-kernel") && lines[1].contains("passed") && lines[1].contains("812 ms"))
        #expect(lines[2].hasPrefix("cpus4-split") && lines[2].contains("hung"))
        #expect(t.contains("cpus4-split: hung: vCPU 2 <starved>"))
        #expect(t.contains("  report:  /tmp/out/cpus4-split.report.json"))
        #expect(t.contains("  console: /tmp/out/cpus4-split.console.log"))
        #expect(t.hasSuffix("1 of 2 passed (5.5 s); results in /tmp/out\n"))
    }

    @Test func jsonParses() throws {
        let text = BootTestOutput.json(Self.summary())
        let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect(object["passed"] as? Int == 1 && object["total"] as? Int == 2 && object["all_passed"] as? Bool == false)
        let runs = try #require(object["runs"] as? [[String: Any]])
        #expect(runs[0]["result"] as? String == "passed" && runs[0]["userspace_ms"] as? Double == 812.4)
        #expect(runs[0]["report"] is NSNull && runs[1]["exit_status"] as? Int == 5)
        #expect(runs[1]["diagnosis"] as? String == "vCPU 2 <starved> & \"held\"\u{1}")
    }

    /// The JUnit file, read by Python's XML parser with the checks CI readers make
    /// (testbed/check_junit.py: xml.etree and junitparser).
    @Test func junitValidates() throws {
        let xml = BootTestOutput.junit(Self.summary())
        #expect(xml.contains(#"<failure message="hung: vCPU 2 &lt;starved&gt; &amp; &quot;held&quot;"#))
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kite-junit-\(getpid()).xml").path
        try xml.write(toFile: path, atomically: true, encoding: .utf8)
        let python = try #require(["/usr/bin/python3", "/usr/local/bin/python3"].first(where: FileManager.default.isExecutableFile),
                                  "python3: scripts/install-deps")
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("testbed/check_junit.py").path
        let r = try GuestInitTests.run(python, [script, path, "--tests", "2", "--failures", "1"])
        #expect(r.status == 0, "\(r.output)")
        #expect(r.output.hasPrefix("junit ok: 2 testcases, 1 failures"), "\(r.output)")
    }
}

/// The runner with a stand-in for kite (a shell script that acts out each ending), so the
/// process handling (spawn, pidfd waits, SIGTERM at the timeout, SIGKILL after the grace
/// period, parallel jobs) is tested without KVM.
struct BootTestRunnerTests {
    static let fakeKite = """
    #!/bin/sh
    while [ $# -gt 0 ]; do
        case "$1" in
            --console) console=${2#file=}; shift ;;
            --cpus) cpus=$2; shift ;;
            --report) report=$2; shift ;;
        esac
        shift
    done
    echo "kite: boot timing (ms since kite started): first guest instruction 1.0, first console byte 2.0, init marker 42.5" >&2
    case $cpus in
        1) echo "kite-init: PASS: 1 of 1 CPUs online" >"$console"; exit 0 ;;
        2) echo '{"summary":"vCPU 1 is starved","hang":true}' >"$report"
           echo "kite: the guest hung (no progress for 5 s): vCPU 1 is starved" >&2; exit 5 ;;
        3) echo "still booting" >"$console"; exec sleep 100 ;;
        4) trap '' TERM; echo "ignoring SIGTERM" >"$console"; exec sleep 100 ;;
    esac
    """

    @Test func runsInParallelAndStopsWhatOverruns() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kite-boottest-\(getpid())").path
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let fake = dir + "/fake-kite"
        try Self.fakeKite.write(toFile: fake, atomically: true, encoding: .utf8)
        chmod(fake, 0o755)
        var plan = BootTestPlan(kernel: "/nonexistent/vmlinuz", initrd: nil,
                                configurations: BootConfiguration.matrix(cpus: [1, 2, 3, 4], irqchips: [.kernel], repeatCount: 1),
                                memory: "512M", cmdline: "console=ttyS0", timeoutSeconds: 5, hangTimeoutSeconds: 1,
                                injections: ["stall-vcpu=0@1s"], jobs: 4, outputDirectory: dir)
        plan.kiteExecutable = fake
        plan.killGraceSeconds = 1
        #expect(plan.arguments(for: plan.configurations[1]).suffix(7) == [
            "--hang-timeout", "1", "--report", dir + "/cpus2-kernel.report.json", "--boot-timing", "--inject", "stall-vcpu=0@1s"])
        let runner = BootTestRunner(plan: plan)
        try runner.prepare()
        for n in 1...4 { #expect(FileManager.default.fileExists(atPath: dir + "/initramfs-cpus\(n).cpio")) }
        let start = Date()
        let records = try runner.run()
        let elapsed = Date().timeIntervalSince(start)
        #expect(records.map(\.result) == [.passed, .hung, .timedOut, .timedOut])
        #expect(records[0].userspaceMilliseconds == 42.5)
        #expect(records[1].diagnosis == "vCPU 1 is starved" && records[1].reportWritten)
        #expect(records[2].exit == .signaled(15))   // SIGTERM at the timeout
        #expect(records[2].diagnosis == "no exit within 5 s; the console's last line: still booting")
        #expect(records[3].exit == .signaled(9))    // SIGKILL after the grace period
        // All four at once: the timeout plus the grace period (6 s), not the sum of the runs
        // (at least 11 s). The timeout leaves a slow, loaded CI machine seconds to start the
        // stand-in shells and reach their `trap` before SIGTERM comes.
        #expect(elapsed >= 6 && elapsed < 11, "took \(elapsed) s")
        #expect(runner.interruptedBy == nil)
    }
}
