import Foundation
import Testing
@testable import VMM
import KVM

/// Runs the `kite` binary built next to the tests and checks that bad input gets exit
/// status 2 and exactly one line on stderr.
@Suite(.serialized) struct CLITests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    static var kite: String {
        let bin = root.appendingPathComponent(".build/debug/kite").path
        return bin
    }

    struct Result { var status: Int32; var stderr: String; var stdout: String }

    static func run(_ args: [String], env: [String: String] = [:]) throws -> Result {
        try #require(FileManager.default.isExecutableFile(atPath: kite), "build kite first: swift build")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: kite)
        p.arguments = args
        p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 }
        let err = Pipe(), out = Pipe()
        p.standardError = err
        p.standardOutput = out
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stderr: String(decoding: e, as: UTF8.self),
                      stdout: String(decoding: o, as: UTF8.self))
    }

    static func tempPath(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("kite-cli-\(getpid())-\(name)").path
    }

    static func temp(_ name: String, _ bytes: [UInt8]) throws -> String {
        let path = tempPath(name)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// Expects status 2 and one stderr line containing `text`.
    static func expectSetupError(_ args: [String], _ text: String, env: [String: String] = [:],
                                 sourceLocation: SourceLocation = #_sourceLocation) throws {
        let r = try run(args, env: env)
        #expect(r.status == 2, "status \(r.status): \(r.stderr)", sourceLocation: sourceLocation)
        let lines = r.stderr.split(separator: "\n", omittingEmptySubsequences: true)
        #expect(lines.count == 1, "stderr: \(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.stderr.contains(text), "stderr: \(r.stderr)", sourceLocation: sourceLocation)
    }

    @Test func helpDocumentsExitStatusesAndEscape() throws {
        let r = try Self.run(["run", "--help"])
        #expect(r.status == 0)
        for s in ["Exit status", "powered off", "rebooted", "crashed", "hung", "Ctrl-A x", "file=PATH", "--cpus", "--memory",
                  "--hang-timeout", "--report", "--api-socket", "--symbols", "TESTING ONLY: inject a fault",
                  "--test-devices", "FOR TEST KERNELS", "multiboot", "(V << 1) | 1"] {
            #expect(r.stdout.contains(s), "help lacks \(s)")
        }
    }

    /// kite alone, kite --help and kite help COMMAND: help on stdout, status 0.
    @Test func helpWithoutACommandListsTheCommands() throws {
        for args in [[], ["--help"], ["help"]] {
            let r = try Self.run(args)
            #expect(r.status == 0, "\(args): \(r.stderr)")
            for command in ["run", "inspect", "explain", "boot-test"] {
                #expect(r.stdout.contains("\n  \(command) "), "\(args) lacks \(command)")
            }
        }
        let viaHelp = try Self.run(["help", "run"]), viaFlag = try Self.run(["run", "--help"])
        #expect(viaHelp.status == 0 && viaHelp.stdout == viaFlag.stdout)
        #expect(viaFlag.stdout.split(separator: "\n").allSatisfy { $0.count <= 80 })
    }

    @Test func usageErrors() throws {
        let k = try Self.temp("k", makeBzImage())
        try Self.expectSetupError(["run"], "--kernel")
        try Self.expectSetupError(["run", "--kernel", k, "--cpus", "0"], "--cpus must be at least 1")
        try Self.expectSetupError(["run", "--kernel", k, "--cpus", "-3"], "cpus")
        try Self.expectSetupError(["run", "--kernel", k, "--memory", "lots"], "not a size")
        try Self.expectSetupError(["run", "--kernel", k, "--console", "tcp:1"], "--console")
        try Self.expectSetupError(["run", "--kernel", k, "--bogus"], "bogus")
        try Self.expectSetupError(["run", "--kernel", k, "--cpus", "1", "--cpus", "0"], "--cpus must be at least 1 (got 0)")
        try Self.expectSetupError(["run", "--kernel", k, "--cpus", "two"], "--cpus 'two' is not a whole number")
        try Self.expectSetupError(["run", "--kernel"], "missing value for '--kernel <path>'")
        try Self.expectSetupError(["start"], "unknown command 'start'")
    }

    @Test func bootTestArgumentProblems() throws {
        let k = try Self.temp("k", makeBzImage())
        try Self.expectSetupError(["boot-test"], "--kernel")
        try Self.expectSetupError(["boot-test", "--kernel", k, "--cpus", "1,0"], "'0' is not a vCPU count")
        try Self.expectSetupError(["boot-test", "--kernel", k, "--cpus", "2,2"], "2 is listed twice")
        try Self.expectSetupError(["boot-test", "--kernel", k, "--irqchip", "kernel,apic"], "'apic' is not kernel, split or userspace")
        try Self.expectSetupError(["boot-test", "--kernel", k, "--cpus", "300"], "needs --irqchip split")
        try Self.expectSetupError(["boot-test", "--kernel", k, "--repeat", "0"], "--repeat must be at least 1")
        try Self.expectSetupError(["boot-test", "--kernel", k, "--timeout", "10", "--hang-timeout", "10"], "--hang-timeout")
        try Self.expectSetupError(["boot-test", "--kernel", k, "--jobs", "0"], "--jobs must be at least 1")
        try Self.expectSetupError(["boot-test", "--kernel", k, "--cpus", "1,4", "--inject", "stall-vcpu=2@1s"],
                                  "vCPU 2 does not exist in a 1-vCPU run")
        try Self.expectSetupError(["boot-test", "--kernel", k, "--junit", "/nonexistent/dir/r.xml"], "--junit /nonexistent/dir/r.xml")
        try Self.expectSetupError(["boot-test", "--kernel", k, "--output", k], "is not a directory")
        try Self.expectSetupError(["boot-test", "--kernel", "/nonexistent/vmlinuz"], "--kernel /nonexistent/vmlinuz")
        let help = try Self.run(["boot-test", "--help"])
        #expect(help.status == 0)
        for s in ["--cpus", "--irqchip", "--repeat", "--timeout", "--junit", "--json", "--output", "--jobs",
                  "kite-init: PASS", "time to userspace", "0xc0000000", "Exit status: 0 when every run passed"] {
            #expect(help.stdout.contains(s), "help lacks \(s)")
        }
    }

    @Test func hangWatchdogOptionProblems() throws {
        let k = try Self.temp("k", makeBzImage())
        try Self.expectSetupError(["run", "--kernel", k, "--inject", "explode"], "unknown fault 'explode'")
        try Self.expectSetupError(["run", "--kernel", k, "--inject", "stall-vcpu=x@3s"], "stall-vcpu=N@SECONDSs")
        try Self.expectSetupError(["run", "--kernel", k, "--inject", "stall-vcpu=1@-3s"], "0 to 86400 seconds")
        try Self.expectSetupError(["run", "--kernel", k, "--cpus", "2", "--inject", "stall-vcpu=2@1s"],
                                  "there is no vCPU 2")
        try Self.expectSetupError(["run", "--kernel", k, "--symbols", "/nonexistent/System.map"], "--symbols /nonexistent")
        try Self.expectSetupError(["run", "--kernel", k, "--hang-timeout", "0"], "--hang-timeout")
        try Self.expectSetupError(["run", "--kernel", k, "--api-socket", "/nonexistent/dir/api.sock"], "--api-socket")
        // kite inspect without a VM behind the socket: one line, status 1.
        let r = try Self.run(["inspect", "/nonexistent/api.sock"])
        #expect(r.status == 1, "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1 && r.stderr.contains("cannot connect"), "\(r.stderr)")
    }

    @Test func kvmDeviceProblemsSayHowToFixThem() throws {
        let k = try Self.temp("k", makeBzImage())
        try Self.expectSetupError(["run", "--kernel", k], "modprobe", env: ["KITE_KVM_DEVICE": "/nonexistent/kvm"])
        let e = Machine.kvmSetupError(KVMError("open", errno: EACCES), path: "/dev/kvm")
        #expect(e.message.contains("kvm group"))
        // The line says what to fix; the cause keeps what happened.
        #expect((e.cause as? KVMError)?.errno == EACCES)
    }

    @Test func aSetupStepsErrorIsKeptAsTheCauseOfItsLine() throws {
        do {
            _ = try Machine.setup { () throws -> Int in throw KVMError("KVM_CREATE_VM", errno: ENOMEM) }
            Issue.record("no error")
        } catch let e as SetupError {
            #expect(e.message.contains("KVM_CREATE_VM"))
            #expect((e.cause as? KVMError)?.errno == ENOMEM)
        }
        // A SetupError passes through unchanged.
        let inner = SetupError("--memory 1 MiB is too small")
        #expect(throws: inner) { _ = try Machine.setup { () throws -> Int in throw inner } }
    }

    @Test func kernelProblems() throws {
        try Self.expectSetupError(["run", "--kernel", "/nonexistent/bzImage"], "cannot read /nonexistent/bzImage")
        let notKernel = try Self.temp("text", Array(repeating: 0x41, count: 9000))
        try Self.expectSetupError(["run", "--kernel", notKernel], "not a kernel Kite can boot")
        var truncated = makeBzImage()
        truncated.removeLast(0x8000)
        try Self.expectSetupError(["run", "--kernel", Self.temp("trunc", truncated)], "truncated")
        var corrupt = makeBzImage()
        corrupt[0x1FE] = 0x12
        try Self.expectSetupError(["run", "--kernel", Self.temp("corrupt", corrupt)], "boot flag")
        try Self.expectSetupError(["run", "--kernel", Self.temp("tiny", [0x7F, 0x45])], "too small")
    }

    @Test func resourceProblems() throws {
        let k = try Self.temp("k", makeBzImage())
        try Self.expectSetupError(["run", "--kernel", k, "--cpus", "255"], "more than --irqchip kernel allows (at most 254")
        try Self.expectSetupError(["run", "--kernel", k, "--cpus", "255", "--irqchip", "userspace"],
                                  "more than --irqchip userspace allows")
        try Self.expectSetupError(["run", "--kernel", k, "--cpus", "1025", "--irqchip", "split"],
                                  "more than --irqchip split allows (at most 1024)")
        // Within the mode's limit, the host KVM's own limit still applies.
        let hostLimit = try KVMSystem().maxVCPUs
        if hostLimit < 1024 {
            try Self.expectSetupError(["run", "--kernel", k, "--cpus", "\(hostLimit + 1)", "--irqchip", "split"],
                                      "more than this host's KVM allows (at most \(hostLimit))")
        }
        try Self.expectSetupError(["run", "--kernel", k, "--memory", "8M"], "too small")
        // The synthetic kernel needs 48 MiB (16 MiB load address + 32 MiB init_size).
        try Self.expectSetupError(["run", "--kernel", k, "--memory", "40M"], "too small for this kernel")
        try Self.expectSetupError(["run", "--kernel", k, "--memory", "64T"], "more than the host")
        let bigInitrd = try Self.temp("initrd", [UInt8](repeating: 0, count: 40 << 20))
        try Self.expectSetupError(["run", "--kernel", k, "--initrd", bigInitrd, "--memory", "64M"], "initrd is 40 MiB")
        try Self.expectSetupError(["run", "--kernel", k, "--cmdline", String(repeating: "x", count: 2048)],
                                  "command line is 2048 bytes")
        try Self.expectSetupError(["run", "--kernel", k, "--console", "file=/nonexistent/dir/log"], "console file")
    }

    // MARK: kite explain

    static let lockupLog = """
    [  100.000000] watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [insmod:200]
    [  100.000002] RIP: 0010:smp_call_function_many_cond+0x11b/0x3c0
    [  100.000004] Call Trace:
    [  100.000006]  kick_all_cpus_sync+0x1a/0x20

    """

    @Test func explainExitStatusSaysWhatTheLogsHold() throws {
        let quiet = try Self.temp("explain-quiet.log", Array("[    0.000000] Linux version 6.1.0\n".utf8))
        let warning = try Self.temp("explain-warning.log", Array("WARNING: CPU: 1 PID: 2 at kernel/x.c:1 f+0x1/0x2\n".utf8))
        let crash = try Self.temp("explain-crash.log", Array("Kernel panic - not syncing: Fatal exception\n".utf8))
        let hang = try Self.temp("explain-hang.log", Array(Self.lockupLog.utf8))
        defer { for p in [quiet, warning, crash, hang] { unlink(p) } }
        #expect(try Self.run(["explain", quiet]).status == 0)
        #expect(try Self.run(["explain", warning]).status == 0)
        #expect(try Self.run(["explain", crash]).status == 4)
        // The worst of several files decides.
        let both = try Self.run(["explain", crash, hang])
        #expect(both.status == 5)
        #expect(both.stdout.contains("\(crash): 1 report") && both.stdout.contains("\(hang): 1 report"))
        #expect(both.stdout.contains("kick_all_cpus_sync"))
    }

    @Test func explainPrintsOneJSONObjectPerFile() throws {
        let hang = try Self.temp("explain-json.log", Array(Self.lockupLog.utf8))
        defer { unlink(hang) }
        let r = try Self.run(["explain", "--json", hang, hang])
        #expect(r.status == 5)
        let lines = r.stdout.split(separator: "\n")
        #expect(lines.count == 2)
        for line in lines {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            #expect(object["file"] as? String == hang)
            #expect((object["reports"] as? [Any])?.count == 1)
        }
    }

    @Test func explainReadsStandardInput() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.kite)
        p.arguments = ["explain"]
        let input = Pipe(), output = Pipe()
        p.standardInput = input
        p.standardOutput = output
        try p.run()
        input.fileHandleForWriting.write(Data(Self.lockupLog.utf8))
        try input.fileHandleForWriting.close()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 5)
        #expect(text.hasPrefix("(standard input): 1 report in 4 lines: 1 soft lockup"))
    }

    @Test func explainInputProblemsAreOneLine() throws {
        let missing = Self.tempPath("explain-missing.log")
        let r = try Self.run(["explain", missing])
        #expect(r.status == 1)
        #expect(r.stderr == "kite explain: cannot open \(missing): No such file or directory\n")
        let directory = try Self.run(["explain", "/tmp"])
        #expect(directory.status == 1 && directory.stderr == "kite explain: /tmp is a directory\n")
        let badMap = try Self.temp("explain-bad.map", Array("not a map\n".utf8))
        defer { unlink(badMap) }
        let symbols = try Self.run(["explain", "--symbols", badMap, missing])
        #expect(symbols.status == 1)
        #expect(symbols.stderr.split(separator: "\n").count == 1 && symbols.stderr.hasPrefix("kite explain: \(badMap):"))
    }
}
