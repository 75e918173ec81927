import CHost
import CKVM
import Diagnosis
import GuestMemory
import HostCalls
import Sandbox
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What the hang watchdog does, from `kite run`'s options.
public struct HangWatchdogSettings: Sendable {
    /// Seconds without progress (see `ConsoleMonitor`) after which a stuck guest counts as
    /// hung and the machine stops with `.hang`; nil = report only, never stop.
    public var hangTimeout: Int?
    /// Where every report is also written as JSON (replaced each time).
    public var reportPath: String?
    /// The control socket for `kite inspect`.
    public var apiSocketPath: String?
    /// A System.map or ELF vmlinux with symbols; nil = look for one next to the kernel, else
    /// read the kernel's own symbol table (kallsyms) from guest memory.
    public var symbolsPath: String?
    /// Faults to inject (testing only).
    public var injections: [FaultInjection] = []

    public init() {}
}

/// The hang watchdog: its own thread, waking twice a second. It
/// - reports as soon as the guest prints a hang report (soft lockup, RCU stall, hung task,
///   panic): a snapshot of every vCPU, the console's evidence, and a diagnosis;
/// - with a hang timeout, stops the machine when the guest has made no progress for that
///   long and the snapshot shows it stuck (a spinning waiter, a starved or halted vCPU
///   something waits for, ...); an idle guest is not hung;
/// - answers `kite inspect` on the control socket and SIGUSR1 with a report;
/// - carries out `--inject` faults at their times.
final class HangWatchdog: @unchecked Sendable {
    private let threads: [VCPUThread]
    /// The interrupt controllers' mode, for the reports.
    private let interruptMode: String
    private let monitor: ConsoleMonitor
    private let control: MachineControl
    private let settings: HangWatchdogSettings
    private let kernelPath: String
    private let stopEvent: EventFD
    private var thread: pthread_t?
    private var listener: Int32 = -1
    private var signalFD: Int32 = -1
    private var symbols: SymbolSource

    // Watchdog-thread state.
    private var startedAt: UInt64 = 0
    private var pendingInjections: [FaultInjection]
    /// Hang reports the guest printed, with the time Kite saw them.
    private var recentEvents: [(seen: UInt64, event: KernelEvent)] = []
    private var lastAutomaticReport: UInt64?
    private var lastSilentCheck: UInt64 = 0
    /// Whether the current stretch without progress has had its report although the guest
    /// was not judged hung (one per stretch: a quiet guest is told about once, not every 5 s).
    private var quietStretchReported = false

    static let tickMilliseconds: Int32 = 500
    /// Console reports that start an automatic report.
    static let triggerKinds: Set<KernelEvent.Kind> = [.softLockup, .hardLockup, .rcuStall, .rcuExpeditedStall,
                                                      .rcuKthreadStarved, .hungTask, .panic]
    /// At most one automatic report per this many seconds (a stuck guest repeats itself).
    static let automaticReportInterval: Double = 60
    /// While the guest makes no progress, how often the snapshot is taken again.
    static let silentCheckInterval: Double = 5
    /// A vCPU thread out of the guest this long is starved: a healthy exit is handled in
    /// microseconds to milliseconds, and the diagnosis runs only when the guest looks stuck.
    static let starvedAfterSeconds: Double = 1
    /// How long to wait for every vCPU thread to answer a snapshot request.
    static let answerTimeoutMilliseconds = 1000
    /// Samples per diagnosis, and the pause between them.
    static let samples = 3
    static let samplePauseMilliseconds = 200

    init(threads: [VCPUThread], interruptMode: String, monitor: ConsoleMonitor, control: MachineControl,
         settings: HangWatchdogSettings, kernelPath: String, memory: GuestMemory? = nil) throws {
        self.threads = threads
        self.interruptMode = interruptMode
        self.monitor = monitor
        self.control = control
        self.settings = settings
        self.kernelPath = kernelPath
        self.stopEvent = try EventFD()
        self.pendingInjections = settings.injections
        self.symbols = SymbolSource(path: settings.symbolsPath, kernelPath: kernelPath, memory: memory)
        if let path = settings.apiSocketPath { listener = try APISocket.listen(path: path) }
    }

    deinit { closeListener() }

    private func closeListener() {
        guard listener >= 0 else { return }
        close(listener)
        listener = -1
        if let path = settings.apiSocketPath { unlink(path) }
    }

    /// Starts the thread. SIGUSR1 must already be blocked in every thread.
    func start(seccomp: SeccompProgram? = nil) throws {
        signalFD = host_signalfd(SIGUSR1)
        startedAt = monotonicNanoseconds()
        switch startKiteThread(name: "kite-watchdog", seccomp: seccomp, { [self] in loop() }) {
        case .success(let t): thread = t
        case .failure(let e): throw SetupError("cannot start the hang watchdog thread: \(e)", cause: e)
        }
    }

    /// Stops the thread and waits for it (a report in progress finishes first).
    func stop() {
        stopEvent.signal()
        if let t = thread { pthread_join(t, nil); thread = nil }
        if signalFD >= 0 { close(signalFD); signalFD = -1 }
        closeListener()
    }

    private func loop() {
        ForbiddenCallInjection.fireIfArmed(.watchdog)
        while true {
            var fds = [pollfd(fd: stopEvent.fd, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: signalFD, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: listener, events: Int16(POLLIN), revents: 0)]
            _ = poll(&fds, nfds_t(fds.count), Self.tickMilliseconds)
            if fds[0].revents != 0 || control.isStopping { return }
            if fds[1].revents & Int16(POLLIN) != 0, host_read_signalfd(signalFD) == SIGUSR1 {
                publish(makeReport(trigger: "requested (SIGUSR1)"))
            }
            if fds[2].revents & Int16(POLLIN) != 0 {
                APISocket.serveOne(listener: listener) { request in answer(request) }
            }
            injectFaults()
            watchConsole()
            watchProgress()
        }
    }

    // MARK: The three watches

    private func injectFaults() {
        let elapsed = Double(monotonicNanoseconds() - startedAt) / 1e9
        pendingInjections.removeAll { fault in
            guard case .stallVCPU(let vcpu, let after) = fault, elapsed >= after else { return false }
            threads[vcpu].stallForTesting()
            log("kite: --inject: vCPU \(vcpu) is no longer run from \(format(elapsed)) s (fault injection, for testing)")
            return true
        }
    }

    private func watchConsole() {
        let now = monotonicNanoseconds()
        let fresh = monitor.takeEvents()
        recentEvents += fresh.map { (now, $0) }
        if recentEvents.count > 32 { recentEvents.removeFirst(recentEvents.count - 32) }
        guard let trigger = fresh.first(where: { Self.triggerKinds.contains($0.kind) }) else { return }
        if let last = lastAutomaticReport, Double(now - last) / 1e9 < Self.automaticReportInterval { return }
        lastAutomaticReport = now
        publish(makeReport(trigger: "the guest reported " + HangDiagnosis.describe(trigger)))
    }

    private func watchProgress() {
        guard let timeout = settings.hangTimeout else { return }
        let stalled = monitor.secondsWithoutProgress
        guard stalled >= Double(timeout) else {
            quietStretchReported = false
            return
        }
        let now = monotonicNanoseconds()
        guard Double(now - lastSilentCheck) / 1e9 >= Self.silentCheckInterval else { return }
        lastSilentCheck = now
        let report = makeReport(trigger: "no progress on the console for \(Int(stalled)) s")
        guard report.isHang else {
            // Not stuck by any rule, but silent past the timeout: say what the vCPUs are doing,
            // once per quiet stretch, so a silent guest never goes unexplained. Kite keeps running.
            if !quietStretchReported {
                quietStretchReported = true
                log(Self.quietNotice(report, seconds: Int(stalled)))
            }
            return
        }
        publish(report)
        control.stop(.hang(seconds: timeout, summary: HangDiagnosis.summary(report.findings)))
    }

    /// What Kite says of a guest that has made no progress for `seconds` but is not judged
    /// hung: one line for an idle guest, else the whole report (every vCPU's state) under a
    /// heading that says Kite goes on.
    static func quietNotice(_ report: HangReport, seconds: Int) -> String {
        let headline = "kite: no progress on the console for \(seconds) s, but the guest is not judged hung: "
            + report.summary + " (Kite keeps running; said once until the console moves again)"
        if report.findings.contains(where: { $0.rule == .allIdle }) { return headline }
        return headline + "\n" + report.text().split(separator: "\n", omittingEmptySubsequences: false)
            .dropFirst(2).joined(separator: "\n")
    }

    // MARK: Reports

    private func answer(_ request: String) -> String {
        switch request {
        case "inspect": return makeReport(trigger: "requested (kite inspect)").text()
        case "inspect json": return makeReport(trigger: "requested (kite inspect)").json() + "\n"
        default: return "error: unknown request '\(request.prefix(64))' (try: inspect, inspect json)\n"
        }
    }

    /// Prints a report on stderr and writes its JSON form to `--report`. (On the watchdog
    /// thread, or after `stop()`.)
    func publish(_ report: HangReport) {
        log(report.text())
        if let path = settings.reportPath { writeReport(report.json() + "\n", to: path) }
    }

    /// Samples every vCPU a few times, adds the console's evidence, and diagnoses.
    func makeReport(trigger: String) -> HangReport {
        var samples: [MachineSnapshot] = []
        var syscallEntry: UInt64?
        for i in 0..<Self.samples {
            if i > 0 { pause(milliseconds: Self.samplePauseMilliseconds) }
            let (snapshot, entry) = takeSnapshot()
            samples.append(snapshot)
            if syscallEntry == nil { syscallEntry = entry }
        }
        // Runtime minus table address: from MSR_LSTAR, which Linux points at
        // entry_SYSCALL_64. For a symbol file, the KASLR offset; for kallsyms read from the
        // running guest, whose addresses are runtime ones already, 0.
        let loaded = symbols.load(kernelRunning: syscallEntry != nil)
        var relocation: UInt64?
        if let loaded, let entry = syscallEntry {
            relocation = loaded.table.kaslrOffset(runtimeAddress: entry, of: "entry_SYSCALL_64")
        }
        if let table = loaded?.table {
            for s in samples.indices {
                for v in samples[s].vcpus.indices {
                    if let rip = samples[s].vcpus[v].registers?.rip, samples[s].vcpus[v].registers?.cpl == 0 {
                        samples[s].vcpus[v].ripSymbol = table.describe(runtime: rip, kaslrOffset: relocation ?? 0)
                    }
                }
            }
        }
        // The KASLR offset is reported only when it was measured against link-time addresses.
        let kaslr = loaded?.addressesAreRuntime == false ? relocation : nil
        // Every sample but the first re-entered the guest after the previous sample's kick;
        // how long a thread has really been inside KVM_RUN is what the first sample saw.
        if samples.count > 1 {
            let first = samples[0], elapsed = samples[samples.count - 1].uptimeSeconds - first.uptimeSeconds
            for v in samples[samples.count - 1].vcpus.indices where first.vcpus[v].thread == .inGuest
                && samples.allSatisfy({ $0.vcpus[v].thread == .inGuest }) {
                samples[samples.count - 1].vcpus[v].secondsSinceEntry = first.vcpus[v].secondsSinceEntry + elapsed
            }
        }
        let progressAt = monotonicNanoseconds() &- UInt64(monitor.secondsWithoutProgress * 1e9)
        let events = recentEvents.filter { $0.seen >= progressAt }.map(\.event)
        let evidence = HangEvidence(samples: samples, events: events, starvedAfterSeconds: Self.starvedAfterSeconds)
        let findings = HangDiagnosis.findings(evidence)
        return HangReport(trigger: trigger, snapshot: samples[samples.count - 1], events: events,
                          findings: findings, kaslrOffset: kaslr, symbolSource: loaded?.origin)
    }

    /// One snapshot of every vCPU: each thread is asked (and kicked out of the guest) and
    /// answers from its own thread (also after its loop ended, until released); one that
    /// does not answer in time is reported as such.
    private func takeSnapshot() -> (MachineSnapshot, UInt64?) {
        // How each thread was doing before the request's kick disturbed it.
        let now = monotonicNanoseconds()
        let before = threads.map { $0.threadReport(now: now) }
        let kernelExits = threads.map { $0.vcpu.kernelExitCount() }
        let tickets = threads.map { $0.requestSnapshot() }
        // One deadline for all: waiting for each in turn takes no longer than the slowest.
        let deadline = monotonicNanoseconds() + UInt64(Self.answerTimeoutMilliseconds) * 1_000_000
        let answers = threads.indices.map { threads[$0].awaitSnapshot(tickets[$0], untilNanoseconds: deadline) }
        var syscallEntry: UInt64?
        let vcpus = threads.indices.map { i -> VCPUSnapshot in
            let t = before[i]
            var v = VCPUSnapshot(id: threads[i].vcpu.id, thread: t.state, secondsSinceEntry: t.sinceEntry,
                                 secondsSinceExit: t.sinceExit, exitCount: t.exits, answered: answers[i] != nil)
            v.kernelExitCount = kernelExits[i]
            if let a = answers[i] {
                v.registers = a.registers
                v.mpState = a.mpState
                v.apic = a.apic
                v.events = a.events
                if syscallEntry == nil { syscallEntry = a.syscallEntry }
            }
            return v
        }
        let uptime = Double(now - startedAt) / 1e9
        return (MachineSnapshot(uptimeSeconds: uptime, consoleQuietSeconds: monitor.quietSeconds, vcpus: vcpus,
                                interruptController: interruptMode),
                syscallEntry)
    }


    private func log(_ text: String) { printLine(text) }

    private func writeReport(_ text: String, to path: String) {
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { log("kite: cannot write the report to \(path): \(String(cString: strerror(errno)))"); return }
        writeAll(fd, Array(text.utf8))
        close(fd)
        if rename(temporary, path) != 0 { log("kite: cannot write the report to \(path): \(String(cString: strerror(errno)))") }
    }
}

/// The pause between two samples of a report (a signal may shorten it; a retry restarts it).
private func pause(milliseconds: Int) {
    _ = retryingInterrupted { poll(nil, 0, Int32(milliseconds)) }
}

private func format(_ seconds: Double) -> String {
    let tenths = Int((seconds * 10).rounded())
    return "\(tenths / 10).\(tenths % 10)"
}

/// The guest kernel's symbols, loaded when the first report needs them (a System.map costs
/// megabytes, and reading kallsyms scans guest RAM: a guest that never hangs pays neither).
/// From --symbols, else the first symbol file found for the kernel, else the kernel's own
/// symbol table (kallsyms) read from guest memory.
struct SymbolSource {
    struct Loaded {
        var table: KernelSymbols
        /// Where the names came from: the file's path, or "kallsyms in guest memory".
        var origin: String
        /// kallsyms from the running guest: runtime addresses (its relative base was
        /// relocated with the kernel), unlike a file's link-time ones.
        var addressesAreRuntime: Bool
    }

    static let kallsymsOrigin = "kallsyms in guest memory"

    let path: String?
    let kernelPath: String
    let memory: GuestMemory?
    private var fileTried = false
    private var kallsymsTried = false
    private var cached: Loaded?

    init(path: String?, kernelPath: String, memory: GuestMemory? = nil) {
        self.path = path
        self.kernelPath = kernelPath
        self.memory = memory
    }

    /// The symbols, loading them on first use. kallsyms is looked for once the guest
    /// kernel runs its own code (`kernelRunning`: it set MSR_LSTAR, so it is decompressed
    /// and relocated); before that a report goes without names and the next one tries again.
    mutating func load(kernelRunning: Bool) -> Loaded? {
        if let cached { return cached }
        if !fileTried {
            fileTried = true
            // --symbols, else the first candidate that holds symbols: Debian's image
            // package ships a one-line placeholder System.map (the real one is in -dbg).
            let candidates = path.map { [$0] } ?? KernelSymbolsDiscovery.candidatePaths(forKernel: kernelPath)
            for p in candidates {
                if let table = try? KernelSymbols(contentsOf: p), table.count > 0 {
                    cached = Loaded(table: table, origin: p, addressesAreRuntime: false)
                    return cached
                }
            }
        }
        if kernelRunning, !kallsymsTried, let memory {
            kallsymsTried = true
            if let table = Self.readKallsyms(memory) {
                cached = Loaded(table: table, origin: Self.kallsymsOrigin, addressesAreRuntime: true)
            }
        }
        return cached
    }

    /// The kernel's kallsyms tables, from the first RAM region that holds them. Plain memory
    /// reads (no system call; the seccomp allow-lists need nothing new).
    static func readKallsyms(_ memory: GuestMemory) -> KernelSymbols? {
        for region in memory.regions {
            // Sound: the buffer spans exactly one region's live mapping, which `memory` (held
            // here) keeps mapped; the guest may write it meanwhile, and the reader checks
            // every value it reads, so torn or changing bytes can only make it fail.
            guard let buffer = try? memory.hostBuffer(at: region.base, length: region.size) else { continue }
            if let table = try? KernelSymbols(kallsymsIn: UnsafeRawBufferPointer(buffer)) { return table }
        }
        return nil
    }
}
