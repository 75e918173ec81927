import Foundation
import GuestInit
import Testing

/// The built-in init: its encoder (checked against the SDM's encodings, as objdump prints
/// them), its ELF headers, its cpio archive, and the program itself run on the host.
struct GuestInitTests {
    static func bytes(_ build: (inout X86Assembler) -> Void) -> [UInt8] {
        var a = X86Assembler()
        build(&a)
        return a.finish()
    }

    static func hex(_ s: String) -> [UInt8] {
        var out: [UInt8] = []
        var i = s.startIndex
        while i < s.endIndex {
            let j = s.index(i, offsetBy: 2)
            out.append(UInt8(s[i..<j], radix: 16)!)
            i = j
        }
        return out
    }

    @Test func encodingsMatchTheManual() {
        typealias A = X86Assembler
        let cases: [(String, (inout A) -> Void)] = [
            ("b801000000", { $0.mov(.rax, 1) }),                       // mov eax, 1
            ("41ba01000000", { $0.mov(.r10, 1) }),                     // mov r10d, 1
            ("48b80000000001000000", { $0.mov(.rax, 0x1_0000_0000) }), // movabs rax, 0x100000000
            ("4989c0", { $0.mov(.r8, .rax) }),                         // mov r8, rax
            ("4c89c7", { $0.mov(.rdi, .r8) }),                         // mov rdi, r8
            ("4881f800f0ffff", { $0.cmp(.rax, -4096) }),               // cmp rax, -4096
            ("48f7f1", { $0.div(.rcx) }),                              // div rcx
            ("0fb64600", { $0.loadByte(.rax, base: .rsi) }),           // movzx eax, byte [rsi+0]
            ("885700", { $0.storeByte(.rdx, base: .rdi) }),            // mov [rdi+0], dl
            ("c640007b", { $0.storeByte(123, base: .rax) }),           // mov byte [rax+0], 123
            ("48c1e801", { $0.shr(.rax, 1) }),                         // shr rax, 1
            ("0f05", { $0.syscall() }),
            ("4801d3", { $0.add(.rbx, .rdx) }),                        // add rbx, rdx
            ("4829f2", { $0.sub(.rdx, .rsi) }),                        // sub rdx, rsi
            ("4885c0", { $0.test(.rax, .rax) }),
            ("4831db", { $0.xor(.rbx, .rbx) }),
            ("4881e201000000", { $0.and(.rdx, 1) }),
            ("4881c630000000", { $0.add(.rsi, 0x30) }),
            ("c3", { $0.ret() }),
        ]
        for (expected, build) in cases {
            #expect(Self.bytes(build) == Self.hex(expected), "expected \(expected)")
        }
    }

    @Test func labelsResolveForwardAndBackward() {
        let code = Self.bytes { a in
            let back = a.label(), forward = a.label()
            a.bind(back)
            a.jump(if: .notEqual, to: forward)   // 0: 0f 85 rel32 -> 11
            a.jump(to: back)                     // 6: e9 rel32 -> 0
            a.bind(forward)                      // 11
            a.call(back)                         // 11: e8 rel32 -> 0
        }
        #expect(code == Self.hex("0f8505000000" + "e9f5ffffff" + "e8f0ffffff"))
    }

    static func le<T: FixedWidthInteger>(_ b: [UInt8], _ at: Int, _: T.Type) -> T {
        (0..<MemoryLayout<T>.size).reduce(T(0)) { $0 | T(b[at + $1]) << (8 * $1) }
    }

    @Test func elfHeadersDescribeAStaticExecutable() {
        let elf = BuiltInInit.program(expectedCPUs: 4)
        #expect(Array(elf[0..<4]) == [0x7F, 0x45, 0x4C, 0x46])
        #expect(elf[4] == 2 && elf[5] == 1)                             // 64-bit, little-endian
        #expect(Self.le(elf, 16, UInt16.self) == 2)                     // ET_EXEC
        #expect(Self.le(elf, 18, UInt16.self) == 0x3E)                  // x86-64
        #expect(Self.le(elf, 24, UInt64.self) == ELFWriter.entryAddress)
        #expect(Self.le(elf, 56, UInt16.self) == 2)                     // two program headers
        // text: PT_LOAD R+X from offset 0; data: PT_LOAD R+W, page-aligned, bss after it
        let text = 64, data = 64 + 56
        #expect(Self.le(elf, text, UInt32.self) == 1 && Self.le(elf, text + 4, UInt32.self) == 5)
        #expect(Self.le(elf, text + 16, UInt64.self) == ELFWriter.textAddress)
        #expect(Self.le(elf, data, UInt32.self) == 1 && Self.le(elf, data + 4, UInt32.self) == 6)
        let dataOffset = Self.le(elf, data + 8, UInt64.self)
        #expect(dataOffset % 0x1000 == 0 && Self.le(elf, data + 16, UInt64.self) == ELFWriter.dataAddress)
        #expect(Self.le(elf, data + 32, UInt64.self) == UInt64(elf.count) - dataOffset)   // file size: to the end
        #expect(Self.le(elf, data + 40, UInt64.self) > Self.le(elf, data + 32, UInt64.self))  // bss
        let textEnd = Self.le(elf, text + 32, UInt64.self)
        #expect(textEnd <= dataOffset && ELFWriter.entryAddress < ELFWriter.textAddress + textEnd)
    }

    /// binutils (scripts/install-deps installs it) must agree: a valid ELF header and
    /// program headers, and code that disassembles.
    @Test func binutilsReadTheProgram() throws {
        try #require(FileManager.default.isExecutableFile(atPath: "/usr/bin/readelf")
                     && FileManager.default.isExecutableFile(atPath: "/usr/bin/objdump"), "binutils: scripts/install-deps")
        let path = try Self.writeExecutable(BuiltInInit.program(expectedCPUs: 2), name: "readelf")
        let headers = try Self.run("/usr/bin/readelf", ["-W", "-h", "-l", path])
        #expect(headers.status == 0, "\(headers.output)")
        #expect(headers.output.contains("EXEC (Executable file)"))
        #expect(headers.output.contains("Advanced Micro Devices X86-64"))
        #expect(headers.output.contains("Entry point address:               0x4000b0"))
        let loads = headers.output.split(separator: "\n").filter { $0.contains("LOAD") }
        #expect(loads.count == 2)
        #expect(loads.first?.contains("0x0000000000400000") == true && loads.first?.contains("R E") == true)
        #expect(loads.last?.contains("0x0000000000600000") == true && loads.last?.contains("RW ") == true)
        #expect(!headers.output.contains("INTERP"))
        #expect(!headers.output.lowercased().contains("warning"), "\(headers.output)")
        let code = try Self.run("/usr/bin/objdump", ["-D", "-b", "binary", "-mi386:x86-64", path])
        #expect(code.status == 0 && code.output.contains("syscall"))
    }

    @Test func cpioArchiveHoldsTheInitAndDeviceNodes() throws {
        let archive = BuiltInInit.initramfs(expectedCPUs: 3)
        let entries = try CPIOReader.entries(archive)
        #expect(entries.map(\.name) == ["dev", "dev/console", "dev/mem", "init", "TRAILER!!!"])
        #expect(entries[0].mode == 0o040755)
        #expect(entries[1].mode == 0o020600 && entries[1].rdev == (5, 1))
        #expect(entries[2].mode == 0o020600 && entries[2].rdev == (1, 1))
        #expect(entries[3].mode == 0o100755 && entries[3].data == BuiltInInit.program(expectedCPUs: 3))
        #expect(archive.count % 4 == 0)
        // GNU cpio (scripts/install-deps installs it) lists the same.
        try #require(FileManager.default.isExecutableFile(atPath: "/usr/bin/cpio"), "cpio: scripts/install-deps")
        let path = try Self.writeExecutable(archive, name: "cpio")
        let listing = try Self.run("/bin/sh", ["-c", "/usr/bin/cpio -itv --quiet < '\(path)'"])
        #expect(listing.status == 0, "\(listing.output)")
        let lines = listing.output.split(separator: "\n")
        #expect(lines.count == 4, "\(listing.output)")
        #expect(lines.contains { $0.hasPrefix("crw-------") && $0.contains("5,") && $0.hasSuffix("dev/console") })
        #expect(lines.contains { $0.hasPrefix("-rwxr-xr-x") && $0.hasSuffix(" init") })
    }

    /// The program itself, run on the host as an ordinary process (the test mode skips the
    /// boot timer, which needs /dev/mem, and exits instead of powering off).
    @Test func programRunsOnTheHost() throws {
        // This process's affinity mask (the program inherits it), from /proc: "Cpus_allowed:\tff,ffffffff".
        let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        let mask = try #require(status.split(separator: "\n").first { $0.hasPrefix("Cpus_allowed:") })
        let online = mask.dropFirst("Cpus_allowed:".count).filter(\.isHexDigit)
            .reduce(0) { $0 + Int(String($1), radix: 16)!.nonzeroBitCount }
        var uts = utsname()
        uname(&uts)
        let release = withUnsafeBytes(of: uts.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }

        let good = try Self.writeExecutable(BuiltInInit.program(expectedCPUs: online, ending: .exitForTesting), name: "good")
        let pass = try Self.run(good, [])
        #expect(pass.status == 0, "\(pass.output)")
        #expect(pass.output == "kite-init: Linux \(release)\nkite-init: PASS: \(online) of \(online) CPUs online\n")

        let bad = try Self.writeExecutable(BuiltInInit.program(expectedCPUs: online + 1, ending: .exitForTesting), name: "bad")
        let fail = try Self.run(bad, [])
        #expect(fail.status == 1, "\(fail.output)")
        #expect(fail.output.hasSuffix("kite-init: FAIL: \(online) of \(online + 1) CPUs online\n"))
    }

    // MARK: Helpers

    static func writeExecutable(_ bytes: [UInt8], name: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kite-guestinit-\(getpid())-\(name)").path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        chmod(path, 0o755)
        return path
    }

    static func run(_ executable: String, _ args: [String]) throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

/// A newc reader for the tests, written from the format's description (not from the writer).
enum CPIOReader {
    struct Entry { var name: String; var mode: UInt32; var rdev: (UInt32, UInt32); var data: [UInt8] }
    struct Malformed: Error { let why: String }

    static func entries(_ b: [UInt8]) throws -> [Entry] {
        var out: [Entry] = []
        var at = 0
        while true {
            guard at + 110 <= b.count, String(decoding: b[at..<(at + 6)], as: UTF8.self) == "070701" else {
                throw Malformed(why: "no newc header at \(at)")
            }
            func field(_ i: Int) throws -> UInt32 {
                let start = at + 6 + 8 * i
                guard let v = UInt32(String(decoding: b[start..<(start + 8)], as: UTF8.self), radix: 16) else {
                    throw Malformed(why: "field \(i) at \(at)")
                }
                return v
            }
            let mode = try field(1), size = Int(try field(6)), rdev = (try field(9), try field(10))
            let nameSize = Int(try field(11))
            let nameStart = at + 110
            guard b[nameStart + nameSize - 1] == 0 else { throw Malformed(why: "name not NUL-terminated") }
            let name = String(decoding: b[nameStart..<(nameStart + nameSize - 1)], as: UTF8.self)
            let dataStart = (nameStart + nameSize + 3) & ~3
            out.append(Entry(name: name, mode: mode, rdev: rdev, data: Array(b[dataStart..<(dataStart + size)])))
            at = (dataStart + size + 3) & ~3
            if name == "TRAILER!!!" { return out }
        }
    }
}
