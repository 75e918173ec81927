import CHost
import GuestInit
import HostCalls
import VMM
#if canImport(Glibc)
import Glibc
#endif

/// What `kite boot-test` runs: every configuration as a child `kite run`.
public struct BootTestPlan: Sendable {
    public var kernel: String
    /// The user's initramfs; nil = Kite's built-in one (`BuiltInInit`).
    public var initrd: String?
    public var configurations: [BootConfiguration]
    public var memory: String
    public var cmdline: String
    public var timeoutSeconds: Int
    public var hangTimeoutSeconds: Int
    public var injections: [String]
    public var jobs: Int
    public var outputDirectory: String
    /// The kite binary the children run: this very program (/proc/self/exe) unless a test says otherwise.
    public var kiteExecutable = "/proc/self/exe"
    /// SIGTERM first; SIGKILL if kite has not exited this long after it (kite stops its
    /// vCPU threads in order on SIGTERM, and gives up on one stuck in KVM_RUN after 10 s).
    public var killGraceSeconds = 15

    public init(kernel: String, initrd: String?, configurations: [BootConfiguration], memory: String, cmdline: String,
                timeoutSeconds: Int, hangTimeoutSeconds: Int, injections: [String], jobs: Int, outputDirectory: String) {
        self.kernel = kernel
        self.initrd = initrd
        self.configurations = configurations
        self.memory = memory
        self.cmdline = cmdline
        self.timeoutSeconds = timeoutSeconds
        self.hangTimeoutSeconds = hangTimeoutSeconds
        self.injections = injections
        self.jobs = jobs
        self.outputDirectory = outputDirectory
    }

    func path(_ c: BootConfiguration, _ suffix: String) -> String { outputDirectory + "/" + c.name + "." + suffix }

    /// The built-in initramfs for `cpus` vCPUs (its init expects that many online).
    func builtInInitramfsPath(cpus: Int) -> String { outputDirectory + "/initramfs-cpus\(cpus).cpio" }

    /// The child's argument vector (argv[0] = "kite").
    public func arguments(for c: BootConfiguration) -> [String] {
        var args = ["kite", "run", "--kernel", kernel, "--initrd", initrd ?? builtInInitramfsPath(cpus: c.cpus),
                    "--cmdline", cmdline, "--cpus", String(c.cpus), "--memory", memory,
                    "--irqchip", c.irqchip.rawValue, "--console", "file=" + path(c, "console.log"),
                    "--hang-timeout", String(hangTimeoutSeconds), "--report", path(c, "report.json"), "--boot-timing"]
        for fault in injections { args += ["--inject", fault] }
        return args
    }
}

public enum BootTestError: Error, CustomStringConvertible {
    case setup(String)
    public var description: String {
        switch self { case .setup(let s): s }
    }
}

/// Runs a plan: at most `jobs` children at a time; waits for them on their pidfds and on a
/// signalfd for SIGINT/SIGTERM, with poll's timeout set to the next deadline (no polling
/// loop: every wait ends on an exit, a signal or a deadline).
public final class BootTestRunner {
    public let plan: BootTestPlan
    /// Called as each run finishes (on the calling thread), e.g. for a progress line.
    public var onFinish: (RunRecord, _ done: Int, _ total: Int) -> Void = { _, _, _ in }
    /// The signal that interrupted the matrix, if one did.
    public private(set) var interruptedBy: Int32?

    private struct Running {
        let configuration: BootConfiguration
        let pid: pid_t
        let pidfd: Int32
        let started: UInt64
        var terminatedAt: UInt64?
        var timedOut = false
        var interrupted = false
    }

    public init(plan: BootTestPlan) { self.plan = plan }

    /// Writes the built-in initramfs for every CPU count the plan boots (when it has no --initrd).
    public func prepare() throws {
        guard plan.initrd == nil else { return }
        for cpus in Set(plan.configurations.map(\.cpus)).sorted() {
            try writeFile(plan.builtInInitramfsPath(cpus: cpus), BuiltInInit.initramfs(expectedCPUs: cpus))
        }
    }

    /// Runs every configuration; the records come back in the plan's order.
    public func run() throws -> [RunRecord] {
        // SIGINT/SIGTERM reach this process through a signalfd; the children get them unblocked.
        var termination = sigset_t()
        sigemptyset(&termination)
        sigaddset(&termination, SIGINT)
        sigaddset(&termination, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &termination, nil)
        let signalFD = host_termination_signalfd()
        guard signalFD >= 0 else { throw BootTestError.setup("boot-test: signalfd: \(errorText(-signalFD))") }
        defer { close(signalFD) }

        var pending = Array(plan.configurations.enumerated())
        var running: [Running] = []
        var records = [RunRecord?](repeating: nil, count: plan.configurations.count)
        var done = 0
        let total = plan.configurations.count
        let nanos: (Int) -> UInt64 = { UInt64($0) * 1_000_000_000 }

        func finish(_ index: Int, _ record: RunRecord) {
            records[index] = record
            done += 1
            onFinish(record, done, total)
        }

        while !pending.isEmpty || !running.isEmpty {
            while interruptedBy == nil, running.count < plan.jobs, !pending.isEmpty {
                let (index, c) = pending.removeFirst()
                do {
                    running.append(try start(c))
                } catch {
                    finish(index, notStarted(c, result: .kiteError, "could not start kite: \(error)"))
                }
            }
            if interruptedBy != nil {
                for (index, c) in pending { finish(index, notStarted(c, result: .notRun, "boot-test was interrupted (signal \(interruptedBy!))")) }
                pending = []
            }
            if running.isEmpty { continue }

            // Sleep until a child exits, a signal comes, or the next deadline.
            let now = monotonicNanoseconds()
            let next = running.map { r in
                r.terminatedAt.map { $0 + nanos(plan.killGraceSeconds) } ?? r.started + nanos(plan.timeoutSeconds)
            }.min()!
            let timeout = next <= now ? 0 : Int32(min((next - now + 999_999) / 1_000_000, UInt64(Int32.max)))
            var fds = [pollfd(fd: signalFD, events: Int16(POLLIN), revents: 0)]
                + running.map { pollfd(fd: $0.pidfd, events: Int16(POLLIN), revents: 0) }
            _ = retryingInterrupted { poll(&fds, nfds_t(fds.count), timeout) }

            if fds[0].revents & Int16(POLLIN) != 0 {
                let signal = host_read_signalfd(signalFD)
                if signal > 0 && interruptedBy == nil {
                    interruptedBy = signal
                    for i in running.indices where running[i].terminatedAt == nil {
                        kill(running[i].pid, SIGTERM)
                        running[i].terminatedAt = monotonicNanoseconds()
                        running[i].interrupted = true
                    }
                }
            }
            // Deadlines: SIGTERM at --timeout, SIGKILL after the grace period.
            let later = monotonicNanoseconds()
            for i in running.indices {
                if let t = running[i].terminatedAt {
                    if later >= t + nanos(plan.killGraceSeconds) { kill(running[i].pid, SIGKILL) }
                } else if later >= running[i].started + nanos(plan.timeoutSeconds) {
                    kill(running[i].pid, SIGTERM)
                    running[i].terminatedAt = later
                    running[i].timedOut = true
                }
            }
            // Exits: a readable pidfd means the child is a zombie; reap it.
            var still: [Running] = []
            for (i, r) in running.enumerated() {
                guard fds[i + 1].revents != 0 else { still.append(r); continue }
                var status: Int32 = 0
                let reaped = retryingInterrupted { waitpid(r.pid, &status, 0) }
                close(r.pidfd)
                let elapsed = Double(monotonicNanoseconds() - r.started) / 1e9
                let exit: ChildExit = reaped == r.pid && (status & 0x7f) == 0
                    ? .exited((status >> 8) & 0xff) : .signaled(status & 0x7f)
                let index = plan.configurations.firstIndex(of: r.configuration)!
                finish(index, collect(r, exit: exit, seconds: elapsed))
            }
            running = still
        }
        return records.map { $0! }
    }

    private func start(_ c: BootConfiguration) throws -> Running {
        for suffix in ["console.log", "report.json", "kite.log"] { unlink(plan.path(c, suffix)) }
        let pid = try spawn(plan.arguments(for: c), executable: plan.kiteExecutable, log: plan.path(c, "kite.log"))
        let started = monotonicNanoseconds()
        let pidfd = host_pidfd_open(pid)
        guard pidfd >= 0 else {
            kill(pid, SIGKILL)
            _ = retryingInterrupted { waitpid(pid, nil, 0) }
            throw BootTestError.setup("pidfd_open: \(errorText(-pidfd)) (boot-test needs Linux 5.3 or later)")
        }
        return Running(configuration: c, pid: pid, pidfd: pidfd, started: started)
    }

    private func notStarted(_ c: BootConfiguration, result: BootResult, _ why: String) -> RunRecord {
        RunRecord(configuration: c, result: result, diagnosis: why, exit: nil, seconds: 0, userspaceMilliseconds: nil,
                  consolePath: plan.path(c, "console.log"), reportPath: plan.path(c, "report.json"),
                  kiteLogPath: plan.path(c, "kite.log"), reportWritten: false)
    }

    private func collect(_ r: Running, exit: ChildExit, seconds: Double) -> RunRecord {
        let c = r.configuration
        let log = readText(plan.path(c, "kite.log")) ?? ""
        let report = readText(plan.path(c, "report.json"))
        var (result, diagnosis) = Classifier.classify(RunEvidence(
            exit: exit, timedOut: r.timedOut, timeoutSeconds: plan.timeoutSeconds,
            console: readText(plan.path(c, "console.log")) ?? "", kiteLog: log, reportJSON: report,
            builtInInit: plan.initrd == nil))
        if r.interrupted {
            (result, diagnosis) = (.notRun, "boot-test was interrupted (signal \(interruptedBy ?? 0)) while it ran")
        }
        return RunRecord(configuration: c, result: result, diagnosis: diagnosis, exit: exit, seconds: seconds,
                         userspaceMilliseconds: Classifier.initMarkerMilliseconds(log),
                         consolePath: plan.path(c, "console.log"), reportPath: plan.path(c, "report.json"),
                         kiteLogPath: plan.path(c, "kite.log"), reportWritten: report != nil)
    }
}

/// posix_spawn of `executable` with `arguments` (argv[0] first): stdin /dev/null, stdout
/// and stderr into `log`, SIGINT/SIGTERM unblocked and at their default action (the parent
/// blocks them for its signalfd; kite installs its own handling).
func spawn(_ arguments: [String], executable: String, log: String) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, log, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_adddup2(&actions, 2, 1)
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var mask = sigset_t(), defaults = sigset_t()
    sigemptyset(&mask)
    sigemptyset(&defaults)
    sigaddset(&defaults, SIGINT)
    sigaddset(&defaults, SIGTERM)
    posix_spawnattr_setsigmask(&attributes, &mask)
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    // strdup'd copies live until posix_spawn returns (the child has exec'd or failed by then),
    // and are freed once, here.
    let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
    defer { for p in argv { free(p) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
    guard rc == 0 else { throw BootTestError.setup("posix_spawn \(executable): \(errorText(rc))") }
    return pid
}

func errorText(_ code: Int32) -> String { String(cString: strerror(code)) }

/// The whole file as text (invalid UTF-8 repaired), or nil if it cannot be opened.
public func readText(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = retryingInterrupted { read(fd, &chunk, chunk.count) }
        if n <= 0 { break }
        bytes += chunk[0..<n]
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// Writes `bytes` to `path` (created or truncated, 0644).
public func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw BootTestError.setup("cannot write \(path): \(errorText(errno))") }
    defer { close(fd) }
    var offset = 0
    while offset < bytes.count {
        let n = bytes[offset...].withUnsafeBytes { b in retryingInterrupted { write(fd, b.baseAddress, b.count) } }
        guard n > 0 else { throw BootTestError.setup("cannot write \(path): \(errorText(errno))") }
        offset += n
    }
}

/// Now, UTC, as "2026-12-06T10:11:12" (JUnit's timestamp).
public func utcTimestamp() -> String {
    var t = time(nil), tm = tm()
    gmtime_r(&t, &tm)
    var buffer = [CChar](repeating: 0, count: 32)
    let n = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S", &tm)
    return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

public func hostName() -> String {
    var buffer = [CChar](repeating: 0, count: 256)
    guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
    return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
