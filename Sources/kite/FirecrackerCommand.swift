import FirecrackerAPI
import HostCalls
import Sandbox
import Logging
import VMM
import VirtioDevices
#if canImport(Glibc)
import Glibc
#endif

/// `kite firecracker ARGS`, and `kite` started through a link named `firecracker`: Kite with
/// Firecracker's command line, API and config file (Docs/Firecracker-API.md).
///
/// Threads: the API server serves on its own thread (`kite-api`), confined to its seccomp
/// list from its start, as Firecracker's API thread is. The main thread builds the machine
/// when InstanceStart asks (or at once with `--config-file`), answers the API thread, and
/// runs the machine as `kite run` does; the API goes on serving while the guest runs. The
/// process ends when the machine does.
enum FirecrackerCommand {
    static func main(_ arguments: [String]) -> Never {
        let line: FirecrackerCommandLine
        do { line = try FirecrackerCommandLine.parse(arguments) } catch {
            printError("kite firecracker: \(error)")
            exit(FirecrackerCommandLine.argumentErrorStatus)
        }
        if line.showVersion { print(FirecrackerCommandLine.versionText, terminator: ""); exit(0) }
        if line.showHelp { print(FirecrackerCommandLine.helpText, terminator: ""); exit(0) }
        do { try line.checkLevel() } catch {
            printError("kite firecracker: \(error)")
            exit(FirecrackerCommandLine.badConfigurationStatus)
        }
        if let path = line.logPath {
            do { try KiteLog.redirect(to: path) } catch {
                printError("kite firecracker: --log-path: \(error)")
                exit(ExitStatus.vmmError)
            }
        }
        let host: FirecrackerHost
        do { host = try FirecrackerHost(commandLine: line) } catch {
            printError("kite firecracker: \(error)")
            exit(ExitStatus.vmmError)
        }
        let vmm = FirecrackerVMM(instanceID: line.instanceID, backend: host)
        var server: APIServer?
        if !line.noAPI {
            do {
                let s = try APIServer(path: line.apiSocket, maxBodyBytes: line.maxPayloadBytes) { vmm.respond(to: $0) }
                server = s
                // The hang report's control socket, when its path fits a socket address.
                let control = line.apiSocket + ".kite"
                if control.utf8.count <= VsockDeviceConfig.maxSocketPathLength { host.controlSocketPath = control }
                let started = startKiteThread(name: "kite-api", seccomp: host.seccomp?.program(for: .api)) {
                    // SIGTERM, SIGINT and SIGUSR1 are for the main thread's signalfd once the
                    // guest runs (before, their default action ends Kite, as in Firecracker).
                    var blocked = sigset_t()
                    sigemptyset(&blocked)
                    for sig in [SIGINT, SIGTERM, SIGUSR1] { sigaddset(&blocked, sig) }
                    pthread_sigmask(SIG_BLOCK, &blocked, nil)
                    ForbiddenCallInjection.fireIfArmed(.api)
                    s.serve()
                }
                if case .failure(let e) = started { throw SchemaError("cannot start the API thread: \(e)") }
            } catch {
                printError("kite firecracker: \(error)")
                exit(ExitStatus.vmmError)
            }
        }
        if let path = line.configFile {
            var failure: String?
            do { try vmm.applyConfigFile(try readConfigFile(path)) } catch { failure = error.description }
            if failure == nil { failure = vmm.start() }
            if let failure {
                printError("kite firecracker: --config-file \(path): \(failure)")
                server?.stop()
                exit(ExitStatus.vmmError)   // Firecracker's GenericError
            }
        }
        let outcome = host.runWhenStarted()
        server?.stop()
        switch outcome {
        case .powerOff, .reboot: exit(0)   // Firecracker ends with 0 when the guest stops either way
        case .crash(let vcpu, let reason, let report): printError("kite: the guest crashed on vCPU \(vcpu): \(reason)\n\(report)")
        case .hang(let seconds, let summary): printError("kite: the guest hung (no progress for \(seconds) s): \(summary)")
        case .stopped(let signal): printError(signal == 0 ? "kite: stopped from the console" : "kite: stopped by signal \(signal)")
        case .vmmError(let message): printError("kite: \(message)")
        case .debugExit: break
        }
        exit(outcome.status)
    }

    /// A config file is small; a bigger one (or a FIFO that never ends) is refused.
    static let maxConfigFileBytes = 1 << 20

    static func readConfigFile(_ path: String) throws(SchemaError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw SchemaError(String(cString: strerror(errno))) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = retryingInterrupted { read(fd, &buffer, buffer.count) }
            if n < 0 { throw SchemaError(String(cString: strerror(errno))) }
            if n == 0 { return bytes }
            bytes += buffer[..<n]
            if bytes.count > maxConfigFileBytes { throw SchemaError("larger than \(maxConfigFileBytes >> 10) KiB") }
        }
    }
}

/// The VMM behind the API: builds Kite's machine from Firecracker's resources on the main
/// thread and runs it there; answers the requests that act on the running machine.
///
/// InstanceStart from the API thread: under `handOver` the resources are posted and
/// `startEvent` (an eventfd) signalled; the main thread, blocked in poll on it and on
/// `violationEvent`, builds the machine and posts the answer, for which the API thread
/// waits on `handOver`. A call outside the API thread's seccomp list before the machine
/// exists signals `violationEvent`, and Kite ends with the line that names it (once the
/// machine is built, its own stop takes over).
final class FirecrackerHost: FirecrackerBackend, @unchecked Sendable {
    let commandLine: FirecrackerCommandLine
    /// Every thread's seccomp programs (nil with --no-seccomp).
    let seccomp: SeccompFilters?
    /// `kite inspect`'s control socket, next to the API socket; the hang-report endpoint asks it.
    var controlSocketPath: String?   // set before the API serves, read-only after
    private let startEvent: EventFD
    private let violationEvent: EventFD
    /// Fault injection (testing only: KITE_INJECT, as `kite run --inject`; Firecracker's
    /// command line has no such flag).
    private let injections: [FaultInjection]
    private let handOver = ConditionLock()
    // Guarded by handOver:
    private var requested: (number: Int, resources: VMResources)?
    private var answered: (number: Int, failure: String?) = (0, nil)
    private var requests = 0
    private var machine: Machine?
    private var runtime: MachineRuntime?
    /// The metrics file, opened once and kept open, as Firecracker keeps it: a FIFO's lines
    /// wait in it for a reader that comes later (closing the only descriptor would drop them).
    private var metricsFD: Int32?

    init(commandLine: FirecrackerCommandLine) throws {
        self.commandLine = commandLine
        seccomp = SeccompFilters.compiled(commandLine.noSeccomp ? .off : .on)
        startEvent = try EventFD()
        violationEvent = try EventFD()
        injections = try getenv("KITE_INJECT").map {
            try String(cString: $0).split(separator: " ").map { try FaultInjection.parse(String($0)) }
        } ?? []
        for case .seccompViolation(let role) in injections { ForbiddenCallInjection.arm(role) }
        if seccomp != nil { try SeccompViolation.catchViolations(wakeFD: violationEvent.fd) }
    }

    /// The thread that made the host (the main thread), which builds and runs the machine.
    private let mainThread = pthread_self()
    private var onMainThread: Bool { pthread_equal(pthread_self(), mainThread) != 0 }

    /// On the main thread: builds the machine when asked (answering the API thread), then
    /// runs it to its end.
    func runWhenStarted() -> MachineExit {
        while true {
            if let machine = handOver.withLock({ self.machine }) { return machine.run(input: TerminalInput()) }
            var fds = [pollfd(fd: startEvent.fd, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: violationEvent.fd, events: Int16(POLLIN), revents: 0)]
            guard poll(&fds, 2, -1) > 0 else { continue }
            if fds[1].revents != 0 {
                return .vmmError(SeccompViolation.first?.sentence ?? "seccomp: a call outside the API thread's list")
            }
            startEvent.drain()
            guard let (number, resources) = handOver.withLock({ requested }) else { continue }
            let failure = build(resources)
            handOver.withLock {
                requested = nil
                answered = (number, failure)
                handOver.broadcast()
            }
        }
    }

    func start(_ resources: VMResources) -> String? {
        if onMainThread { return build(resources) }   // --config-file
        return handOver.withLock {
            requests += 1
            let number = requests
            requested = (number, resources)
            startEvent.signal()
            while answered.number != number { handOver.wait() }
            return answered.failure
        }
    }

    /// Builds the machine (on the main thread); nil when built, or why not.
    private func build(_ resources: VMResources) -> String? {
        let config: MachineConfig
        do { config = try machineConfig(resources) } catch { return "\(error)" }
        let built: Machine
        do {
            let logger = Logger(label: "kite")
            built = try Machine.build(config, log: { message in logger.notice("\(message)") })
        } catch {
            return "\(error)"
        }
        handOver.withLock {
            machine = built
            runtime = built.runtime
            if let path = resources.metricsPath {
                // Read-write and non-blocking, as Firecracker opens it: a FIFO with no reader
                // yet neither blocks nor fails the open (write-only would fail with ENXIO).
                let fd = open(path, O_RDWR | O_NONBLOCK | O_APPEND | O_CLOEXEC)
                if fd >= 0 { metricsFD = fd }
            }
        }
        return nil
    }

    /// Firecracker's resources as Kite's machine.
    func machineConfig(_ r: VMResources) throws -> MachineConfig {
        guard let boot = r.bootSource else { throw SchemaError("Cannot start microvm without kernel configuration.") }
        var config = MachineConfig(kernelPath: boot.kernelImagePath, initrdPath: boot.initrdPath,
                                   commandLine: r.kernelCommandLine, cpus: r.machine.vcpuCount,
                                   memoryBytes: UInt64(r.machine.memSizeMiB) << 20, console: .stdio)
        config.disks = r.drives.map { BlockDeviceConfig(path: $0.pathOnHost, readOnly: $0.isReadOnly, serial: $0.driveID) }
        config.networks = r.networkInterfaces.map { NetworkDeviceConfig(tapName: $0.hostDevName, mac: $0.guestMAC.flatMap(MACAddress.init)) }
        config.vsock = r.vsock.map { VsockDeviceConfig(guestCID: $0.guestCID, socketPath: $0.udsPath) }
        config.entropyDevice = r.entropy
        config.seccomp = commandLine.noSeccomp ? .off : .on
        config.bootTiming = commandLine.bootTimer
        config.watchdog.apiSocketPath = controlSocketPath
        // Firecracker guests without ACPI (Kata passes acpi=off) find their devices on the
        // command line and their CPUs in the MP table.
        config.legacyDeviceDiscovery = true
        // Firecracker's clients stop a guest with SendCtrlAltDel: the i8042 has a keyboard.
        config.keyboard = true
        config.vcpuThreadNamePrefix = "fc_vcpu "   // Kata's GetThreadIDs looks for these
        if let path = r.logger?.logPath { try KiteLog.redirect(to: path) }
        config.watchdog.injections = injections
        return config
    }

    private var running: MachineRuntime? { handOver.withLock { runtime } }

    func pause() -> String? {
        guard let running else { return "the machine is not running" }
        return running.pause()
    }

    func resume() -> String? {
        guard let running else { return "the machine is not running" }
        return running.resume()
    }

    func sendCtrlAltDel() -> String? {
        guard let running else { return "the machine is not running" }
        return running.pressCtrlAltDel()   // "i8042 internal buffer full." while the guest has not read the last keys
    }

    func updateDrive(index: Int, path: String) -> String? {
        guard let running else { return "the machine is not running" }
        return running.replaceDisk(index, path: path)
    }

    func machineMetrics() -> [(group: String, counters: [(name: String, value: Int)])] {
        running?.metrics() ?? []
    }

    func writeMetrics(_ line: String) -> String? {
        guard let fd = handOver.withLock({ metricsFD }) else { return nil }
        // A reader that takes nothing (a full FIFO) loses the line rather than stalling the API.
        let n = line.withCString { write(fd, $0, strlen($0)) }
        if n < 0 && errno != EAGAIN { return "Metrics error: \(String(cString: strerror(errno)))" }
        return nil
    }

    func hangReport(json: Bool) -> Result<String, HangReportUnavailable> {
        guard let path = controlSocketPath else { return .failure(HangReportUnavailable("Kite's control socket is not open")) }
        do {
            return .success(try APISocket.request(path: path, command: json ? "inspect json" : "inspect"))
        } catch {
            return .failure(HangReportUnavailable("\(error)"))
        }
    }
}
