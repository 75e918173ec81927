import CommandLineParsing
import Diagnosis
import HostCalls
import VMM
#if canImport(Glibc)
import Glibc
#endif

struct Explain {
    static let spec = CommandSpec(
        name: "explain",
        abstract: "Read kernel logs from any system and explain the hang and crash reports in them.",
        discussion: """
        Reads console logs as they come from QEMU, Firecracker, Cloud Hypervisor, libkrun, syzbot, a CI job or \
        a bug report: a serial capture, dmesg (also -T and -x), syslog (rsyslog's #012-folded lines too) or \
        journalctl output, with or without printk time stamps and caller ids, x86-64 or arm64, raw or decoded \
        (decode_stacktrace.sh, syzbot). For every soft or hard lockup, RCU stall, hung task, CSD-lock timeout, \
        NMI backtrace, panic, oops, BUG and WARNING it prints the CPUs it is about and the one that reported \
        it, how long, the task, the first frames that are not the reporting machinery, whether the CPU waits \
        for an IPI or cross-CPU call, and a diagnosis where the log supports one: which CPU waits for which, \
        and what the NMI backtraces show of the CPUs waited for (idle, waiting themselves, looping with \
        interrupts off, or never answering).

        Exit status: 0 when the logs hold no hang or crash report (WARNINGs and NMI backtraces alone are not \
        one), 4 when they hold a crash report (panic, oops, BUG) but no hang report, 5 when they hold a hang \
        report (lockup, RCU stall, hung task, CSD-lock timeout), 1 when a file cannot be read, 2 on a usage error.
        """,
        options: [
            .flag("json", help: "Print one JSON object per file, each on its own line."),
            .single("symbols", "path",
                    help: "The kernel's System.map (or an ELF vmlinux with symbols), to name bare addresses "
                        + "(0xffffffff8104a1b2) that a kernel without kallsyms prints; relocated by the "
                        + "log's \"Kernel Offset:\" line when it has one."),
        ],
        arguments: [ArgumentSpec("file", help: "Log files; standard input when none is given, or for -.",
                                 repeated: true, required: false)]
    )

    let files: [String]
    let json: Bool
    let symbols: String?

    init(_ options: ParsedOptions) {
        files = options.arguments
        json = options.flag("json")
        symbols = options.value("symbols")
    }

    func run() throws {
        var table: KernelSymbols?
        if let symbols {
            do {
                table = try KernelSymbols(contentsOf: symbols)
            } catch {
                printError("kite explain: \(symbols): \(error)")
                throw ExitCode(ExitStatus.vmmError)
            }
        }
        var worst: Int32 = ExitStatus.powerOff
        var unreadable = false
        for name in files.isEmpty ? ["-"] : files {
            var explainer = LogExplainer(symbols: table,
                                         kaslrOffset: table.flatMap { Self.kaslrOffset(inFile: name, symbols: $0) } ?? 0)
            do {
                try Self.read(name) { explainer.feed($0) }
            } catch {
                printError("kite explain: \(error)")
                unreadable = true
                continue
            }
            let explanation = explainer.finish()
            let shownName = name == "-" ? "(standard input)" : name
            print(json ? explanation.json(name: shownName) : explanation.text(name: shownName),
                  terminator: json ? "\n" : "")
            if !json, files.count > 1 { print() }
            worst = max(worst, Self.status(of: explanation))
        }
        if unreadable { throw ExitCode(ExitStatus.vmmError) }
        if worst != ExitStatus.powerOff { throw ExitCode(worst) }
    }

    static func status(of explanation: LogExplanation) -> Int32 {
        if explanation.hasHangReport { return ExitStatus.hang }
        if explanation.hasCrashReport { return ExitStatus.crash }
        return ExitStatus.powerOff
    }

    struct ReadError: Error, CustomStringConvertible {
        var description: String
    }

    /// Feeds a file (or standard input, for "-") to `consume` in 64 KiB pieces.
    static func read(_ name: String, _ consume: (UnsafeRawBufferPointer) -> Void) throws {
        let fd = name == "-" ? STDIN_FILENO : retryingInterrupted { open(name, O_RDONLY | O_CLOEXEC) }
        guard fd >= 0 else { throw ReadError(description: "cannot open \(name): \(String(cString: strerror(errno)))") }
        defer { if fd != STDIN_FILENO { close(fd) } }
        var statBuffer = stat()
        if fstat(fd, &statBuffer) == 0, statBuffer.st_mode & S_IFMT == S_IFDIR {
            throw ReadError(description: "\(name) is a directory")
        }
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = buffer.withUnsafeMutableBytes { raw in
                retryingInterrupted { Glibc.read(fd, raw.baseAddress, raw.count) }
            }
            if count < 0 { throw ReadError(description: "cannot read \(name): \(String(cString: strerror(errno)))") }
            if count == 0 { return }
            buffer.withUnsafeBytes { consume(UnsafeRawBufferPointer(rebasing: $0[..<count])) }
        }
    }

    /// The KASLR offset of a "Kernel Offset:" line anywhere in a regular file (it comes at the
    /// end of a panic, after the addresses it relocates). Nil for standard input or a pipe:
    /// those are read once, and the offset applies from the line on.
    static func kaslrOffset(inFile name: String, symbols: KernelSymbols) -> UInt64? {
        guard name != "-" else { return nil }
        var found: UInt64?
        var scanner = LineScanner()
        try? read(name) { chunk in
            scanner.feed(chunk) { line in
                if found == nil, line.contains("Kernel Offset: ") { found = KernelSymbols.kaslrOffset(fromConsoleLine: line) }
            }
        }
        return found
    }

    /// Splits bytes into lines of at most 64 KiB, for the pre-scan.
    struct LineScanner {
        var pending: [UInt8] = []
        mutating func feed(_ bytes: UnsafeRawBufferPointer, _ line: (String) -> Void) {
            for byte in bytes {
                if byte == 0x0A {
                    line(String(decoding: pending, as: UTF8.self))
                    pending.removeAll(keepingCapacity: true)
                } else if pending.count < 64 * 1024 {
                    pending.append(byte)
                }
            }
        }
    }
}
