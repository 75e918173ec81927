import CKVM
import Foundation
import Testing
import Sandbox
import SeccompAllowLists
import SeccompCompiler
@testable import VMM
#if canImport(Glibc)
import Glibc
#endif

/// Kite's threads under seccomp: each kind has its own allow-list, installed before the
/// guest runs; a call outside it stops the machine with one line naming thread and call.
@Suite(.serialized) struct SandboxTests {
    /// getppid's number on x86-64, the call every `--inject seccomp-violation` makes.
    static let getppidNumber = 110

    @Test func everyThreadKindsListCompiles() throws {
        let filters = try #require(SeccompFilters.compiled(.on))
        for role in ThreadRole.allCases {
            #expect(filters.program(for: role).instructionCount > 10, "\(role)")
        }
        #expect(SeccompFilters.compiled(.off) == nil)
        // The lists differ where the threads differ: only vCPUs may run the guest.
        let vcpu = ThreadAllowLists.rules(for: .vcpu), main = ThreadAllowLists.rules(for: .main)
        #expect(vcpu.contains { $0.name == "ioctl" && $0.arguments.contains(UInt64(CKVM_RUN)) })
        #expect(!main.contains { $0.name == "ioctl" && $0.arguments.contains(UInt64(CKVM_RUN)) })
        #expect(!ThreadAllowLists.rules(for: .devices).contains { $0.name == "openat" })
    }

    /// The programs built into Kite (by the SeccompBPF plugin) are what libseccomp makes of
    /// the lists in this source tree, for both modes, and they differ only in the default action.
    @Test func builtInProgramsAreTheListsCompiled() throws {
        for (mode, action) in [(SeccompMode.on, SeccompCompiler.DefaultAction.trap), (.log, .log)] {
            let filters = try #require(SeccompFilters.compiled(mode))
            let fresh = try SeccompCompiler.compileAll(action)
            for role in ThreadRole.allCases {
                #expect(filters.program(for: role).instructions == fresh[role], "\(mode) \(role)")
            }
        }
        let on = try #require(SeccompFilters.compiled(.on)), log = try #require(SeccompFilters.compiled(.log))
        // SECCOMP_RET_TRAP (0x00030000) against SECCOMP_RET_LOG (0x7ffc0000) in the default's return.
        #expect(on.program(for: .vcpu).instructions.contains(0x0003_0000_0000_0006))
        #expect(log.program(for: .vcpu).instructions.contains(0x7ffc_0000_0000_0006))
        #expect(!log.program(for: .vcpu).instructions.contains(0x0003_0000_0000_0006))
    }

    @Test func aListNamingAnUnknownCallIsAnError() {
        #expect(throws: SeccompCompiler.CompileError.self) {
            _ = try SeccompCompiler.compile(rules: [.call("no_such_call")], defaultAction: .trap, role: "test")
        }
    }

    /// A violation is named from the table built with the programs, without libseccomp.
    @Test func violationsNameTheirSystemCall() {
        let names = SeccompCompiler.syscallNames()
        for number in [0, 1, 16, Self.getppidNumber, 231, 435] {
            #expect(SeccompViolation(thread: "t", syscall: number, count: 1).syscallName == names[number], "\(number)")
        }
        #expect(SeccompViolation(thread: "t", syscall: Self.getppidNumber, count: 1).syscallName == "getppid")
        #expect(SeccompViolation(thread: "t", syscall: 100_000, count: 1).syscallName == "#100000")
        #expect(SeccompViolation(thread: "t", syscall: -1, count: 1).syscallName == "#-1")
    }

    /// The mechanism in this process: a thread confined by the main thread's list calls
    /// getppid; the call fails with EPERM, is recorded with the thread's name, and the wake
    /// eventfd is written. (Process-wide state: the only test here that makes a violation.)
    @Test func aConfinedThreadsForbiddenCallFailsAndIsRecorded() throws {
        let filters = try #require(SeccompFilters.compiled(.on))
        let wake = try EventFD()
        try SeccompViolation.catchViolations(wakeFD: wake.fd)
        #expect(SeccompViolation.first == nil)
        let result = ResultBox()
        let thread = try startKiteThread(name: "kite-test", seccomp: filters.program(for: .main)) {
            let rc = makeForbiddenSystemCall()
            result.set(rc, errno)
        }.get()
        pthread_join(thread, nil)
        #expect(result.value == (-1, EPERM))
        let violation = try #require(SeccompViolation.first)
        #expect(violation.thread == "kite-test")
        #expect(violation.syscall == Self.getppidNumber)
        #expect(violation.syscallName == "getppid")
        var count: UInt64 = 0
        #expect(read(wake.fd, &count, 8) == 8 && count == 1)
        // This thread was never confined: the same call works here.
        #expect(makeForbiddenSystemCall() == Int(getppid()))
    }

    final class ResultBox: @unchecked Sendable {
        private let lock = NSLock()
        private var stored: (Int, Int32) = (0, 0)
        func set(_ rc: Int, _ err: Int32) { lock.withLock { stored = (rc, err) } }
        var value: (Int, Int32) { lock.withLock { stored } }
    }

    static func label(_ role: ThreadRole) -> String {
        switch role {
        case .main: "kite"
        case .vcpu: "kite-vcpu0"
        case .devices: "kite-devices"
        case .watchdog: "kite-watchdog"
        case .apicTimer: "kite-apic-timer"
        case .console: "kite-console"
        case .api: "kite-api"
        }
    }

    /// What each thread kind needs to exist: the device thread runs only with a virtio
    /// device, the APIC timer thread only in userspace mode.
    static func arguments(_ role: ThreadRole) -> [String] {
        switch role {
        case .devices: ["--rng"]
        case .apicTimer: ["--irqchip", "userspace"]
        default: []
        }
    }

    /// `kite run`'s threads (the API thread is `kite firecracker`'s: FirecrackerEndToEndTests).
    @Test(arguments: ThreadRole.allCases.filter { $0 != .api })
    func aCallOutsideAThreadsListStopsTheGuestNamingThreadAndCall(role: ThreadRole) throws {
        let (r, _) = try MachineRunTests.boot(MachineRunTests.print("up\n") + MachineRunTests.spin,
                                              Self.arguments(role) + ["--inject", "seccomp-violation=\(role.rawValue)"],
                                              name: "seccomp-\(role.rawValue)")
        #expect(r.status == ExitStatus.vmmError, "\(r.stderr)")
        let lines = r.stderr.split(separator: "\n").filter { $0.contains("seccomp") }
        #expect(lines == ["kite: seccomp: thread \(Self.label(role)) made system call getppid (\(Self.getppidNumber)), "
                          + "which its allow-list does not permit"], "\(r.stderr)")
        // The usual orderly stop: every vCPU thread left the guest and ended.
        #expect(!r.stderr.contains("did not stop"), "\(r.stderr)")
    }

    /// A vCPU thread's notice (here: a port nothing answers) is written without a local
    /// time stamp, so glibc never opens a time zone file under the vCPU's list (the testbed's
    /// L1 has no /etc/localtime, and glibc then tried to open it for every line).
    @Test func noticesFromAVCPUThreadStayInsideItsList() throws {
        let code: [UInt8] = [0xE4, 0x99] + MachineRunTests.powerOff        // in al, 0x99
        let kernel = try CLITests.temp("entry-notice", makeBzImage(entryCode: code))
        let r = try CLITests.run(["run", "--kernel", kernel, "--memory", "64M", "--console", "file=\(CLITests.tempPath("c-notice"))"],
                                 env: ["TZ": ":/nonexistent/zone"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.hasPrefix("kite: port I/O: guest read at unknown address 0x99"), "\(r.stderr)")
    }

    @Test(arguments: ["off", "log"])
    func withoutEnforcementTheSameCallIsAllowed(mode: String) throws {
        let (r, console) = try MachineRunTests.boot(MachineRunTests.print("ok\n") + MachineRunTests.powerOff,
                                                    ["--seccomp", mode, "--inject", "seccomp-violation=vcpu"],
                                                    name: "seccomp-\(mode)")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(console == "ok\n")
        #expect(!r.stderr.contains("seccomp"), "\(r.stderr)")
    }

    /// Every thread of a running kite: no capabilities, NO_NEW_PRIVS, and a seccomp filter.
    @Test func everyThreadOfARunningGuestIsConfined() throws {
        let kernel = try CLITests.temp("entry-confined", makeBzImage(entryCode: MachineRunTests.print("up\n") + MachineRunTests.spin))
        let console = CLITests.tempPath("console-confined")
        try? FileManager.default.removeItem(atPath: console)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CLITests.kite)
        p.arguments = ["run", "--kernel", kernel, "--memory", "64M", "--cpus", "2", "--rng", "--console", "file=\(console)"]
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer { kill(p.processIdentifier, SIGTERM); p.waitUntilExit() }
        for _ in 0..<100 where ((try? String(contentsOfFile: console, encoding: .utf8)) ?? "") != "up\n" {
            usleep(50_000)
        }
        let tasks = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(p.processIdentifier)/task")
        var names: [String] = []
        for task in tasks {
            let dir = "/proc/\(p.processIdentifier)/task/\(task)"
            let status = try String(contentsOfFile: "\(dir)/status", encoding: .utf8)
            let fields = Dictionary(status.split(separator: "\n").compactMap { line -> (String, String)? in
                guard let colon = line.firstIndex(of: ":") else { return nil }
                return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
            }, uniquingKeysWith: { a, _ in a })
            let name = fields["Name"] ?? "?"
            names.append(name)
            #expect(fields["Seccomp"] == "2", "\(name): \(fields["Seccomp"] ?? "-")")
            #expect(fields["NoNewPrivs"] == "1", "\(name)")
            #expect(fields["CapEff"] == "0000000000000000", "\(name): \(fields["CapEff"] ?? "-")")
            #expect(fields["CapPrm"] == "0000000000000000", "\(name)")
        }
        // Kite's own threads, all checked above with any worker the host's KVM runs in the
        // process (newer kernels' "kvm-nx-lpage-recovery").
        #expect(Set(names.filter { $0.hasPrefix("kite") }) == ["kite", "kite-vcpu0", "kite-vcpu1", "kite-devices", "kite-watchdog", "kite-console"],
                "\(names)")
    }
}
