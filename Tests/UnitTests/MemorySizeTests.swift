import Testing
@testable import VMM

@Suite struct MemorySizeTests {
    @Test(arguments: [
        ("512M", UInt64(512) << 20), ("2G", UInt64(2) << 30), ("768", UInt64(768) << 20),
        ("1024K", UInt64(1) << 20), ("512MiB", UInt64(512) << 20), ("1g", UInt64(1) << 30),
        ("4GB", UInt64(4) << 30), (" 64M ", UInt64(64) << 20),
    ])
    func parsesSizes(text: String, bytes: UInt64) {
        #expect(MemorySize.parse(text) == bytes)
    }

    @Test(arguments: ["", "M", "12Q", "-1G", "0", "0M", "1.5G", "abc", "99999999999999999999G", "1 G", "G1"])
    func rejectsNonSizes(text: String) {
        #expect(MemorySize.parse(text) == nil)
    }

    @Test func consoleOption() {
        #expect(MachineConfig.parseConsole("stdio") == .stdio)
        #expect(MachineConfig.parseConsole("file=/tmp/x") == .file("/tmp/x"))
        #expect(MachineConfig.parseConsole("file=") == nil)
        #expect(MachineConfig.parseConsole("tcp:1") == nil)
    }

    @Test func exitStatusesAreDistinct() {
        let all: [MachineExit] = [.powerOff, .reboot, .crash(vcpu: 0, reason: "", report: ""), .hang(seconds: 1, summary: ""),
                                  .stopped(signal: 0), .stopped(signal: 2), .stopped(signal: 15), .vmmError("")]
        let statuses = all.map(\.status)
        #expect(Set(statuses).count == all.count)
        #expect(MachineExit.powerOff.status == 0)
        #expect(!statuses.contains(ExitStatus.usage))
        #expect(MachineExit.stopped(signal: 15).status == 143)
    }
}
