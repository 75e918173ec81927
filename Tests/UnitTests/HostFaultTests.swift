import Foundation
import Testing
@testable import VMM
#if canImport(Glibc)
import Glibc
#endif

/// Faults of the host around a running guest: what the guest sees, and that Kite goes on
/// and ends in order. (Disk and network faults need a Linux guest: testbed/boot_tests.py.)
@Suite(.serialized) struct HostFaultTests {
    /// Prints `count` bytes ('x') on the UART, then powers off.
    static func printMany(_ count: UInt32) -> [UInt8] {
        [0xB9] + withUnsafeBytes(of: count.littleEndian, Array.init)     // mov ecx, count
            + [0x66, 0xBA, 0xF8, 0x03, 0xB0, 0x78]                        // mov dx, 0x3f8; mov al, 'x'
            + [0xEE, 0xFF, 0xC9, 0x75, 0xFB]                              // out dx, al; dec ecx; jnz out
            + MachineRunTests.powerOff
    }

    /// Runs kite with `stdout` as its standard output; returns status, stderr, seconds taken.
    static func run(_ code: [UInt8], name: String, stdout: FileHandle?) throws -> (Int32, String, Double) {
        let kernel = try CLITests.temp("entry-\(name)", makeBzImage(entryCode: code))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CLITests.kite)
        p.arguments = ["run", "--kernel", kernel, "--memory", "64M"]
        let err = Pipe()
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        if let stdout { p.standardOutput = stdout }
        let start = Date()
        try p.run()
        // A Kite that never ends fails the test rather than hanging it.
        let pid = p.processIdentifier
        DispatchQueue.global().asyncAfter(deadline: .now() + 60) { kill(pid, SIGKILL) }
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return (p.terminationStatus, stderr, Date().timeIntervalSince(start))
    }

    @Test func aConsolePipeNobodyReadsNeitherStallsTheGuestNorKite() throws {
        // 256 KiB of output into a pipe that holds 64 KiB and is never read: the guest runs
        // to its power-off, and Kite ends (after its console thread gives up) saying what
        // it could not write.
        let pipe = Pipe()
        let (status, stderr, seconds) = try Self.run(Self.printMany(256 << 10), name: "console-full",
                                                     stdout: pipe.fileHandleForWriting)
        #expect(status == 0 && seconds < 60, "\(stderr)")
        let line = stderr.split(separator: "\n").first { $0.contains("console output were dropped") }
        #expect(line != nil, "\(stderr)")
        // What did reach the pipe is the guest's output, from its start.
        let got = try #require(try pipe.fileHandleForReading.read(upToCount: 4096))
        #expect(got.count > 0 && got.allSatisfy { $0 == UInt8(ascii: "x") })
        if let line, let dropped = Int(line.split(separator: " ")[1]) {
            #expect(dropped > 0 && dropped <= 256 << 10, "\(line)")
        }
    }

    @Test func aClosedStdoutDropsTheOutputButTheGuestRunsOn() throws {
        let pipe = Pipe()
        try pipe.fileHandleForReading.close()   // writes get EPIPE (Kite ignores SIGPIPE)
        let (status, stderr, _) = try Self.run(Self.printMany(4096), name: "console-closed", stdout: pipe.fileHandleForWriting)
        #expect(status == 0, "\(stderr)")
        #expect(stderr.contains("4096 bytes of the guest's console output were dropped"), "\(stderr)")
    }

    @Test func aReportDirectoryThatIsGoneCostsTheReportNotTheDiagnosis() throws {
        let dir = CLITests.tempPath("gone-dir")
        try? FileManager.default.removeItem(atPath: dir)
        let (r, _) = try MachineRunTests.boot(MachineRunTests.print("booting\n") + MachineRunTests.spin,
                                              ["--hang-timeout", "1", "--report", "\(dir)/report.json"], name: "report-gone")
        #expect(r.status == ExitStatus.hang, "\(r.stderr)")
        #expect(r.stderr.contains("kite: the guest hung"), "\(r.stderr)")
        #expect(r.stderr.contains("cannot write the report to \(dir)/report.json"), "\(r.stderr)")
    }
}
