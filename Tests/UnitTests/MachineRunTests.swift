import Foundation
import Testing
@testable import VMM

/// `kite run` end to end on the host's /dev/kvm: synthetic bzImages whose 64-bit entry code
/// talks to Kite's devices, checking each way a guest can end and the console path.
@Suite(.serialized) struct MachineRunTests {
    /// x86-64 machine code: `mov dx, port; mov al, value; out dx, al`.
    static func out(_ port: UInt16, _ value: UInt8) -> [UInt8] {
        [0x66, 0xBA, UInt8(port & 0xFF), UInt8(port >> 8), 0xB0, value, 0xEE]
    }
    static let spin: [UInt8] = [0xEB, 0xFE]                          // jmp .
    static let powerOff = out(0x600, (5 << 2) | 0x20) + spin          // ACPI SLP_TYP=5 | SLP_EN
    static let keyboardReset = out(0x64, 0xFE) + spin                 // i8042 pulse reset
    static let acpiReset = out(0x602, 0x01) + spin                    // FADT RESET_REG
    static func print(_ text: String) -> [UInt8] { text.utf8.flatMap { out(0x3F8, $0) } }

    static func boot(_ code: [UInt8], _ extra: [String] = [], name: String) throws -> (CLITests.Result, String) {
        let (r, bytes) = try bootBytes(code, extra, name: name)
        return (r, String(decoding: bytes, as: UTF8.self))
    }

    static func bootBytes(_ code: [UInt8], _ extra: [String] = [], name: String) throws -> (CLITests.Result, [UInt8]) {
        let kernel = try CLITests.temp("entry-\(name)", makeBzImage(entryCode: code))
        let console = FileManager.default.temporaryDirectory.appendingPathComponent("kite-console-\(getpid())-\(name)").path
        let r = try CLITests.run(["run", "--kernel", kernel, "--memory", "64M", "--console", "file=\(console)"] + extra)
        let bytes = (try? Data(contentsOf: URL(fileURLWithPath: console))).map { [UInt8]($0) } ?? []
        return (r, bytes)
    }

    @Test func guestPowerOffExitsZeroAfterItsConsoleOutput() throws {
        let (r, console) = try Self.boot(Self.print("hello from the guest\n") + Self.powerOff, name: "poweroff")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(console == "hello from the guest\n")
    }

    @Test func powerOffWorksWithManyVCPUsWaitingForSIPI() throws {
        let (r, _) = try Self.boot(Self.powerOff, ["--cpus", "8"], name: "poweroff8")
        #expect(r.status == 0, "\(r.stderr)")
    }

    @Test func keyboardControllerResetIsAReboot() throws {
        let (r, _) = try Self.boot(Self.keyboardReset, name: "kbdreset")
        #expect(r.status == ExitStatus.reboot, "\(r.stderr)")
        #expect(r.stderr.contains("rebooted"))
    }

    @Test func acpiResetRegisterIsAReboot() throws {
        let (r, _) = try Self.boot(Self.acpiReset, name: "acpireset")
        #expect(r.status == ExitStatus.reboot, "\(r.stderr)")
    }

    @Test func jumpToTheResetVectorIsAReboot() throws {
        // What Linux's BOOT_BIOS reboot does, minus the trip back to real mode: the reset
        // vector's code runs (here in long mode, where its bytes mean the same) and resets.
        let code: [UInt8] = [0x48, 0xB8] + withUnsafeBytes(of: UInt64(0xFFFF0).littleEndian, Array.init)
            + [0xFF, 0xE0]                                             // mov rax, 0xFFFF0; jmp rax
        let (r, _) = try Self.boot(code, name: "resetvector")
        #expect(r.status == ExitStatus.reboot, "\(r.stderr)")
    }

    @Test func unknownPortsReadAllOnesAndAreLoggedOnce() throws {
        // in al, 0x99 twice; then send al to the console and power off.
        let code: [UInt8] = [0xE4, 0x99, 0xE4, 0x99, 0x66, 0xBA, 0xF8, 0x03, 0xEE] + Self.powerOff
        let (r, console) = try Self.bootBytes(code, name: "unknown")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(console == [0xFF])
        #expect(r.stderr.components(separatedBy: "unknown address 0x99").count == 2)   // exactly once
    }

    @Test func hangTimeoutEndsASilentGuestWithAReport() throws {
        let report = FileManager.default.temporaryDirectory.appendingPathComponent("kite-report-\(getpid())-spin.json").path
        try? FileManager.default.removeItem(atPath: report)
        let (r, _) = try Self.boot(Self.print("booting\n") + Self.spin,
                                   ["--hang-timeout", "1", "--cpus", "2", "--report", report], name: "hang")
        #expect(r.status == ExitStatus.hang, "\(r.stderr)")
        #expect(r.stderr.contains("kite: the guest hung"), "\(r.stderr)")
        // The snapshot: vCPU 0 spins in ring 0 with interrupts off; vCPU 1 was never started.
        let json = try #require(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: report))) as? [String: Any])
        #expect(json["hang"] as? Bool == true)
        let vcpus = try #require(json["vcpus"] as? [[String: Any]])
        #expect(vcpus.count == 2)
        #expect(vcpus.first?["mp_state"] as? String == "runnable")
        #expect(vcpus.first?["interrupts_enabled"] as? Bool == false)
        #expect(vcpus.last?["mp_state"] as? String == "waiting for INIT/SIPI")
        let findings = try #require(json["findings"] as? [[String: Any]])
        #expect(findings.contains { ($0["vcpus"] as? [Int])?.first == 0 }, "\(findings)")
    }

    /// A guest that prints without end (`.` forever), so only the stall can stop its progress.
    static let printForever: [UInt8] = {
        let body = out(0x3F8, UInt8(ascii: "."))
        return body + [0xEB, UInt8(bitPattern: Int8(-(body.count + 2)))]   // jmp back to the out
    }()

    @Test func injectedStallIsDiagnosedAsAStarvedVCPU() throws {
        let report = FileManager.default.temporaryDirectory.appendingPathComponent("kite-report-\(getpid())-stall.json").path
        try? FileManager.default.removeItem(atPath: report)
        let (r, console) = try Self.boot(Self.printForever, ["--hang-timeout", "2", "--inject", "stall-vcpu=0@1s",
                                                           "--report", report], name: "stall")
        #expect(r.status == ExitStatus.hang, "\(r.stderr)")
        #expect(console.hasPrefix("..."))
        #expect(r.stderr.contains("--inject: vCPU 0"), "\(r.stderr)")
        #expect(r.stderr.contains("vCPU 0") && r.stderr.contains("starved"), "\(r.stderr)")
        let json = try #require(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: report))) as? [String: Any])
        let vcpus = try #require(json["vcpus"] as? [[String: Any]])
        #expect(vcpus.first?["thread"] as? String == "held by --inject stall-vcpu")
        #expect(vcpus.first?["answered"] as? Bool == true)
        // The report says which interrupt controllers ran.
        #expect(json["interrupt_controller"] as? String == "kernel")
        #expect(r.stderr.contains("  interrupt controllers: kernel"), "\(r.stderr)")
        // The held thread is woken by the machine's stop (a post), not left behind.
        #expect(!r.stderr.contains("did not stop"), "\(r.stderr)")
        let findings = try #require(json["findings"] as? [[String: Any]])
        #expect(findings.first.map { ($0["sentence"] as? String ?? "").contains("starved") } == true, "\(findings)")
    }

    @Test func inspectAndSIGUSR1ReportOnARunningGuest() throws {
        let kernel = try CLITests.temp("entry-inspect", makeBzImage(entryCode: Self.print("up\n") + Self.spin))
        let dir = FileManager.default.temporaryDirectory.path
        let console = "\(dir)/kite-console-\(getpid())-inspect", socket = "\(dir)/kite-api-\(getpid()).sock"
        try? FileManager.default.removeItem(atPath: console)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CLITests.kite)
        p.arguments = ["run", "--kernel", kernel, "--memory", "64M", "--cpus", "2", "--console", "file=\(console)",
                       "--api-socket", socket]
        let err = Pipe()
        p.standardError = err
        try p.run()
        for _ in 0..<100 where ((try? String(contentsOfFile: console, encoding: .utf8)) ?? "") != "up\n" {
            usleep(50_000)
        }
        let text = try CLITests.run(["inspect", socket])
        let json = try CLITests.run(["inspect", "--json", socket])
        kill(p.processIdentifier, SIGUSR1)
        usleep(1_500_000)   // the watchdog wakes twice a second; three samples take 0.4 s
        kill(p.processIdentifier, SIGTERM)
        p.waitUntilExit()
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(p.terminationStatus == 143, "\(stderr)")
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout.contains("requested (kite inspect)") && text.stdout.contains("vCPU 1"), "\(text.stdout)")
        let object = try #require(JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect((object["vcpus"] as? [[String: Any]])?.count == 2)
        #expect(stderr.contains("requested (SIGUSR1)"), "\(stderr)")
        #expect(!FileManager.default.fileExists(atPath: socket), "the socket file is removed at exit")
    }

    /// Runs `kite run` on `code` for `seconds`, then SIGTERM; returns the exit status and stderr.
    static func runFor(_ seconds: Double, _ code: [UInt8], _ extra: [String], name: String) throws -> (Int32, String) {
        let kernel = try CLITests.temp("entry-\(name)", makeBzImage(entryCode: code))
        let console = FileManager.default.temporaryDirectory.appendingPathComponent("kite-console-\(getpid())-\(name)").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CLITests.kite)
        p.arguments = ["run", "--kernel", kernel, "--memory", "64M", "--console", "file=\(console)"] + extra
        let err = Pipe()
        p.standardError = err
        try p.run()
        usleep(UInt32(seconds * 1_000_000))
        kill(p.processIdentifier, SIGTERM)
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return (p.terminationStatus, stderr)
    }

    @Test func silentGuestThatIsNotStuckIsDescribedOnceAndKeepsRunning() throws {
        // vCPU 0 loops with interrupts enabled (no rule calls that stuck: it could be working);
        // vCPU 1 was never started. Silent past --hang-timeout 1, for two checks 5 s apart.
        let (status, stderr) = try Self.runFor(7.5, Self.print("up\n") + [0xFB] + Self.spin,   // sti; jmp .
                                               ["--hang-timeout", "1", "--cpus", "2"], name: "quiet-running")
        #expect(status == 143, "\(stderr)")
        #expect(stderr.components(separatedBy: "but the guest is not judged hung").count == 2, "once: \(stderr)")
        #expect(stderr.contains("no vCPU looks stuck"), "\(stderr)")
        // What each vCPU was doing, as in a hang report.
        #expect(stderr.contains("vCPU 0: in the guest, runnable; RIP") && stderr.contains("(IF)"), "\(stderr)")
        #expect(stderr.contains("vCPU 1: in the guest, waiting for INIT/SIPI"), "\(stderr)")
        #expect(!stderr.contains("kite: the guest hung"), "\(stderr)")
    }

    @Test func silentIdleGuestGetsOneLine() throws {
        // hlt with interrupts off: every vCPU halted (or never started), nothing pending.
        let (status, stderr) = try Self.runFor(3, Self.print("up\n") + [0xF4] + Self.spin,     // hlt; jmp .
                                               ["--hang-timeout", "1", "--cpus", "2"], name: "quiet-idle")
        #expect(status == 143, "\(stderr)")
        let notices = stderr.split(separator: "\n").filter { $0.contains("but the guest is not judged hung") }
        #expect(notices.count == 1, "\(stderr)")
        #expect(notices.first?.contains("the guest is idle, not hung") == true, "\(stderr)")
        #expect(!stderr.contains("vCPU 0:"), "one line, no per-vCPU lines: \(stderr)")
    }

    @Test func sigtermStopsEveryVCPUAndExits143() throws {
        let kernel = try CLITests.temp("entry-spin", makeBzImage(entryCode: Self.print("up\n") + Self.spin))
        let console = FileManager.default.temporaryDirectory.appendingPathComponent("kite-console-\(getpid())-term").path
        try? FileManager.default.removeItem(atPath: console)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CLITests.kite)
        p.arguments = ["run", "--kernel", kernel, "--memory", "64M", "--cpus", "4", "--console", "file=\(console)"]
        let err = Pipe()
        p.standardError = err
        try p.run()
        // Wait (bounded) until the guest has printed, so the vCPU is running guest code.
        for _ in 0..<100 where ((try? String(contentsOfFile: console, encoding: .utf8)) ?? "") != "up\n" {
            usleep(50_000)
        }
        kill(p.processIdentifier, SIGTERM)
        p.waitUntilExit()
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(p.terminationReason == .exit)
        #expect(p.terminationStatus == 143, "\(stderr)")
        #expect(stderr.contains("stopped by signal 15"))
    }

    /// The milestones of `--boot-timing` from a line like "... first guest instruction 4.1, ...".
    static func bootTimings(_ stderr: String) -> [String: Double] {
        guard let line = stderr.split(separator: "\n").first(where: { $0.hasPrefix("kite: boot timing") }),
              let colon = line.range(of: "): ") else { return [:] }
        var out: [String: Double] = [:]
        for part in line[colon.upperBound...].components(separatedBy: ", ") {
            guard let space = part.lastIndex(of: " ") else { continue }
            out[String(part[..<space])] = Double(part[part.index(after: space)...])
        }
        return out
    }

    /// `mov eax, 0xC0000000; mov byte [rax], value`: a write to the boot timer.
    static func bootTimer(_ value: UInt8) -> [UInt8] { [0xB8, 0x00, 0x00, 0x00, 0xC0, 0xC6, 0x00, value] }

    @Test func bootTimingReportsEachMilestoneInOrder() throws {
        let marker = Self.bootTimer(123)
        let (r, console) = try Self.boot(Self.print("k") + marker + Self.powerOff, ["--boot-timing"], name: "boottiming")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(console == "k")
        let t = Self.bootTimings(r.stderr)
        let first = try #require(t["first guest instruction"], "\(r.stderr)")
        let byte = try #require(t["first console byte"], "\(r.stderr)")
        let initMarker = try #require(t["init marker"], "\(r.stderr)")
        #expect(first > 0 && first <= byte && byte <= initMarker, "\(r.stderr)")
        #expect(r.stderr.components(separatedBy: "kite: boot timing").count == 2)     // printed once
    }

    @Test func bootTimingSaysWhenTheMarkerNeverCame() throws {
        let (r, _) = try Self.boot(Self.bootTimer(7) + Self.powerOff, ["--boot-timing"], name: "boottiming-none")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("first console byte not reached, init marker not reached"), "\(r.stderr)")
        #expect(Self.bootTimings(r.stderr)["first guest instruction"] != nil, "\(r.stderr)")
        let (quiet, _) = try Self.boot(Self.bootTimer(123) + Self.powerOff, name: "boottiming-off")
        #expect(quiet.status == 0 && !quiet.stderr.contains("boot timing"), "\(quiet.stderr)")
        #expect(!quiet.stderr.contains("unknown address"), "\(quiet.stderr)")
    }

    @Test func crashReportsTheVCPUsRegisters() throws {
        // ud2 with the entry IDT (limit 0): the exception cannot be delivered.
        let (r, _) = try Self.boot([0x0F, 0x0B], ["--cpus", "2"], name: "crash")
        #expect(r.status == ExitStatus.crash, "\(r.stderr)")
        #expect(r.stderr.contains("crashed on vCPU 0"))
        #expect(r.stderr.contains("rip=0x0000000000100200"))
        // This host keeps a triple fault's registers, so they are not called the reset state.
        #expect(r.stderr.contains("triple fault"), "\(r.stderr)")
        #expect(!r.stderr.contains("reset state"), "\(r.stderr)")
        // The other vCPUs are snapshotted too: their state at the crash is evidence.
        #expect(r.stderr.contains("kite: hang report (the guest crashed on vCPU 0)"), "\(r.stderr)")
        #expect(r.stderr.contains("vCPU 1: stopped, waiting for INIT/SIPI"), "\(r.stderr)")
    }
}
