import CommandLineParsing
import FirecrackerAPI
import Logging
import Sandbox
import VMM
import VirtioDevices
#if canImport(Glibc)
import Glibc
#endif

/// kite's commands, declared for the parser (CommandLineParsing), which also renders their help.
let kiteCommands = CommandLineParser(
    program: "kite",
    abstract: "A micro virtual machine monitor for SMP Linux guests on KVM.",
    commands: [Run.spec, Inspect.spec, Explain.spec, BootTestCommand.spec, firecrackerSpec]
)

/// `kite firecracker` reads its own arguments (Firecracker's); this spec is for `kite --help`.
let firecrackerSpec = CommandSpec(
    name: "firecracker",
    abstract: "Run with Firecracker's command line, API socket and config file (for Kata Containers and "
        + "firecracker-containerd); also when started as `firecracker`. See kite firecracker --help.",
    // Not FirecrackerCommandLine.helpText: `kite run` would touch that code and text at start.
    discussion: "Takes Firecracker's own arguments (--api-sock, --config-file, --no-api, --id, ...): kite firecracker --help lists them. Docs/Firecracker-API.md has the API, what works and what does not, and how to point Kata Containers and firecracker-containerd at Kite.",
    options: []
)

/// A command's exit status, thrown to end it.
struct ExitCode: Error {
    let rawValue: Int32
    init(_ rawValue: Int32) { self.rawValue = rawValue }
}

struct Run {
    static let spec = CommandSpec(
        name: "run",
        abstract: "Boot a Linux kernel (or a multiboot test kernel) in a new virtual machine.",
        discussion: """
        The kernel is a bzImage (Linux x86 boot protocol, 64-bit entry), an uncompressed ELF vmlinux with a PVH entry note, or a multiboot (version 1) kernel such as kvm-unit-tests' .flat files (ELF32, or with the header's address fields); the format is detected. The guest's first serial port (ttyS0, 0x3f8, IRQ 4) is the console: add console=ttyS0 to --cmdline. A multiboot kernel gets "KERNEL ARGS" as its command line, --initrd as its one module, and QEMU's fw_cfg (ports 0x510-0x511: CPU count, RAM size) is there for it to read.

        Console: with --console stdio (the default) the guest's console is on stdout and stdin is its input; when stdin is a terminal it is put in raw mode and Ctrl-A x quits (Ctrl-A Ctrl-A sends a Ctrl-A). --console file=PATH writes the console to PATH and reads no input. --console virtio puts the console on a virtio-console (use console=hvc0), with stdin as its input.

        Devices: virtio-mmio devices (--disk, --net, --rng, --console virtio) are described in the ACPI DSDT; the guest needs the virtio_mmio driver and the device's driver.

        Hangs: Kite reads the guest's console for its lockup, RCU stall, hung task and panic reports; on one it prints a hang report on stderr: every vCPU's registers, local APIC, pending events and thread state, the guest's report, and a diagnosis naming the stuck vCPU. SIGUSR1 prints a report on demand, as does `kite inspect PATH` with --api-socket PATH.

        \(ExitStatus.helpText)
        """,
        options: [
            .single("kernel", "path", help: "Kernel image: bzImage, ELF vmlinux (PVH) or multiboot.", required: true),
            .single("initrd", "path", help: "Initial ramdisk loaded for the kernel (a multiboot kernel's module)."),
            .single("cmdline", "string", help: "Kernel command line (default: console=ttyS0; none for a multiboot kernel)."),
            .single("cpus", "n", help: "Number of vCPUs (1 to the host KVM's limit: at most 254, or 1024 with --irqchip split).",
                    default: "1"),
            .single("memory", "size", help: "Guest RAM: 512M, 2G, or a plain number of MiB.", default: "512M"),
            .single("console", "stdio|file=PATH|virtio",
                    help: "Where the console goes: stdio (ttyS0), file=PATH (ttyS0, no input), "
                        + "or virtio (a virtio-console, hvc0: use console=hvc0; ttyS0 output still shown).", default: "stdio"),
            .repeated("disk", "path=FILE[,readonly=on][,serial=ID]",
                      help: "Add a virtio-blk disk backed by a raw image (repeatable; vda, vdb, ...). "
                          + "The image is locked so two VMs cannot write it."),
            .repeated("net", "tap=NAME[,mac=AA:BB:CC:DD:EE:FF]",
                      help: "Add a virtio-net interface on a TAP device Kite creates or attaches to "
                          + "(repeatable; eth0, eth1, ...). Needs CAP_NET_ADMIN."),
            .single("vsock", "cid=N,socket=PATH",
                    help: "Add a virtio-vsock device: the guest's CID, and the Unix socket host "
                        + "programs connect to (write CONNECT <port>\\n); guest connections to "
                        + "host port P go to the socket PATH_P."),
            .flag("rng", help: "Add a virtio-rng device (entropy from the host's getrandom; the guest's /dev/hwrng)."),
            .single("hang-timeout", "seconds",
                    help: "Stop with exit status 5 when the guest has printed nothing but hang reports for this "
                        + "many seconds and the hang watchdog finds it stuck (an idle guest is not hung; a quiet "
                        + "guest that is not stuck is described once on stderr and keeps running)."),
            .single("report", "path", help: "Also write every hang report as JSON to this file (replaced each time)."),
            .single("api-socket", "path",
                    help: "Open a control socket here; `kite inspect PATH` prints a hang report of the running VM."),
            .single("symbols", "path",
                    help: "The guest kernel's System.map (or an ELF vmlinux with symbols), to name the "
                        + "functions vCPUs are in. Default: System.map-<release> next to the kernel or in /boot, "
                        + "else the kernel's own kallsyms read from guest memory."),
            .flag("boot-timing",
                  help: "Print on stderr when the guest ran its first instruction, wrote its first console byte "
                      + "and reached the init marker (the guest writes 123 to the boot timer at guest address 0xc0000000, e.g. `devmem 0xc0000000 8 123`), "
                      + "in ms since kite started."),
            .flag("test-devices",
                  help: "FOR TEST KERNELS (kvm-unit-tests): add QEMU's isa-debug-exit at port 0xf4 (a write of V "
                      + "ends kite with status (V << 1) | 1, overriding the statuses below) and pc-testdev "
                      + "(ports 0xe0-0xeb, interrupt lines at 0x2000-0x2017, 64 KiB at 0xff000000)."),
            .single("irqchip", "kernel|split|userspace",
                    help: "Interrupt controllers: kernel (KVM's local APICs, IOAPIC, PIC and PIT), split "
                        + "(KVM's local APICs; Kite's IOAPIC, its interrupts sent as MSIs, and PICs) or userspace "
                        + "(Kite's local APICs, xAPIC only, IOAPIC, PICs and APIC timers). split and userspace "
                        + "have no PIT: the guest needs kvmclock and the APIC's TSC-deadline timer, as Linux uses them.",
                    default: "kernel"),
            .single("seccomp", "on|log|off",
                    help: "Confine every Kite thread (vCPU, devices, watchdog, console, main) to its own system-call "
                        + "allow-list from before the guest's first instruction: on (the default; a call outside "
                        + "the list stops the guest with one line naming the thread and the call, exit status 1), "
                        + "log (allowed, but the host kernel logs it: dmesg | grep type=1326) or off.",
                    default: "on"),
            .repeated("inject", "fault",
                      help: "TESTING ONLY: inject a fault. stall-vcpu=N@Ts stops running vCPU N T seconds after "
                          + "start, to reproduce a lost wake-up; seccomp-violation=THREAD (main, vcpu, devices, "
                          + "watchdog, apic-timer, console) makes that thread call getppid, outside its allow-list "
                          + "(repeatable)."),
        ]
    )

    let kernel: String
    let initrd: String?
    let cmdline: String?
    let cpus: Int
    let memory: String
    let console: String
    let disk: [String]
    let net: [String]
    let vsock: String?
    let rng: Bool
    let hangTimeout: Int?
    let report: String?
    let apiSocket: String?
    let symbols: String?
    let bootTiming: Bool
    let testDevices: Bool
    let irqchip: String
    let seccomp: String
    let inject: [String]

    init(_ options: ParsedOptions) throws {
        kernel = options.value("kernel") ?? ""
        initrd = options.value("initrd")
        cmdline = options.value("cmdline")
        cpus = try options.int("cpus", default: 1)
        memory = options.value("memory") ?? "512M"
        console = options.value("console") ?? "stdio"
        disk = options.values("disk")
        net = options.values("net")
        vsock = options.value("vsock")
        rng = options.flag("rng")
        hangTimeout = try options.int("hang-timeout")
        report = options.value("report")
        apiSocket = options.value("api-socket")
        symbols = options.value("symbols")
        bootTiming = options.flag("boot-timing")
        testDevices = options.flag("test-devices")
        irqchip = options.value("irqchip") ?? "kernel"
        seccomp = options.value("seccomp") ?? "on"
        inject = options.values("inject")
        try validate()
    }

    func validate() throws {
        guard cpus >= 1 else { throw UsageError("--cpus must be at least 1 (got \(cpus))") }
        guard MemorySize.parse(memory) != nil else {
            throw UsageError("--memory '\(memory)' is not a size: use 512M, 2G or a number of MiB")
        }
        guard MachineConfig.parseConsole(console) != nil else {
            throw UsageError("--console '\(console)' is not stdio, file=PATH or virtio")
        }
        for d in disk {
            do { _ = try BlockDeviceConfig.parse(d) } catch { throw UsageError("--disk: \(error)") }
        }
        for n in net {
            do { _ = try NetworkDeviceConfig.parse(n) } catch { throw UsageError("--net: \(error)") }
        }
        if let vsock {
            do { _ = try VsockDeviceConfig.parse(vsock) } catch { throw UsageError("--vsock: \(error)") }
        }
        guard SeccompMode(rawValue: seccomp) != nil else {
            throw UsageError("--seccomp '\(seccomp)' is not on, log or off")
        }
        guard InterruptControllerMode(rawValue: irqchip) != nil else {
            throw UsageError("--irqchip '\(irqchip)' is not kernel, split or userspace")
        }
        if let h = hangTimeout, h <= 0 { throw UsageError("--hang-timeout must be a positive number of seconds") }
        for fault in inject {
            do { _ = try FaultInjection.parse(fault) } catch { throw UsageError("--inject: \(error)") }
        }
        if let symbols, access(symbols, R_OK) != 0 {
            throw UsageError("--symbols \(symbols): \(String(cString: strerror(errno)))")
        }
    }

    func run() throws {
        var config = MachineConfig(kernelPath: kernel, initrdPath: initrd, commandLine: cmdline, cpus: cpus,
                                   memoryBytes: MemorySize.parse(memory)!, console: MachineConfig.parseConsole(console)!,
                                   hangTimeout: hangTimeout)
        config.entropyDevice = rng
        config.testDevices = testDevices
        config.irqchip = InterruptControllerMode(rawValue: irqchip)!
        config.seccomp = SeccompMode(rawValue: seccomp)!
        config.bootTiming = bootTiming
        config.disks = try disk.map { try BlockDeviceConfig.parse($0) }
        config.networks = try net.map { try NetworkDeviceConfig.parse($0) }
        config.vsock = try vsock.map { try VsockDeviceConfig.parse($0) }
        config.watchdog.reportPath = report
        config.watchdog.apiSocketPath = apiSocket
        config.watchdog.symbolsPath = symbols
        config.watchdog.injections = try inject.map { try FaultInjection.parse($0) }
        if let device = getenv("KITE_KVM_DEVICE") { config.kvmPath = String(cString: device) }
        let machine: Machine
        do {
            let logger = Logger(label: "kite")
            machine = try Machine.build(config, log: { message in logger.notice("\(message)") })
        } catch {
            printError("kite: \(error)")
            throw ExitCode(ExitStatus.usage)
        }
        let input = config.console == .stdio || config.console == .virtio ? TerminalInput() : nil
        let outcome = machine.run(input: input)
        switch outcome {
        case .powerOff: break
        case .reboot: printError("kite: the guest rebooted")
        case .crash(let vcpu, let reason, let report):
            printError("kite: the guest crashed on vCPU \(vcpu): \(reason)\n\(report)")
        case .hang(let seconds, let summary):
            printError("kite: the guest hung (no progress for \(seconds) s): \(summary)")
        case .stopped(let signal):
            printError(signal == 0 ? "kite: stopped from the console" : "kite: stopped by signal \(signal)")
        case .vmmError(let message): printError("kite: \(message)")
        case .debugExit: break   // the status is the test kernel's answer
        }
        throw ExitCode(outcome.status)
    }
}

struct Inspect {
    static let spec = CommandSpec(
        name: "inspect",
        abstract: "Print a hang report of a running VM: every vCPU's state, its local APIC, the guest's "
            + "console reports and a diagnosis.",
        discussion: "PATH is the control socket of a `kite run --api-socket PATH`. Taking the snapshot briefly "
            + "kicks every vCPU out of the guest.",
        options: [.flag("json", help: "Print the report as JSON.")],
        arguments: [ArgumentSpec("path", help: "The VM's control socket (kite run --api-socket).")]
    )

    let socket: String
    let json: Bool

    init(_ options: ParsedOptions) {
        socket = options.arguments[0]
        json = options.flag("json")
    }

    func run() throws {
        do {
            let answer = try APISocket.request(path: socket, command: json ? "inspect json" : "inspect")
            print(answer, terminator: answer.hasSuffix("\n") ? "" : "\n")
        } catch {
            printError("kite: \(error)")
            throw ExitCode(ExitStatus.vmmError)
        }
    }
}

func printError(_ message: String) {
    var line = message
    if !line.hasSuffix("\n") { line += "\n" }
    _ = line.withCString { write(STDERR_FILENO, $0, strlen($0)) }
}

/// Usage errors exit with status 2 and one line on stderr; --help prints on stdout, status 0.
@main
enum Main {
    static func main() {
        // Runtime notices (e.g. a guest probing an unknown port) go to stderr, one line each.
        LoggingSystem.bootstrap { _ in KiteLogHandler() }
        let arguments = CommandLine.arguments
        // Started through a link named `firecracker`, or as `kite firecracker`: Firecracker's
        // command line, which the parser below does not read.
        if let program = arguments.first, program.split(separator: "/").last == "firecracker" {
            FirecrackerCommand.main(Array(arguments.dropFirst()))
        }
        if arguments.count > 1 && arguments[1] == firecrackerSpec.name {
            FirecrackerCommand.main(Array(arguments.dropFirst(2)))
        }
        do {
            switch try kiteCommands.parse(Array(CommandLine.arguments.dropFirst())) {
            case .help(let text):
                print(text, terminator: "")
                exit(0)
            case .run(let name, let options):
                switch name {
                case Run.spec.name: try Run(options).run()
                case Inspect.spec.name: try Inspect(options).run()
                case Explain.spec.name: try Explain(options).run()
                case BootTestCommand.spec.name: try BootTestCommand(options).run()
                default: fatalError("command \(name) is declared but not dispatched")
                }
                exit(0)
            }
        } catch let code as ExitCode {
            exit(code.rawValue)
        } catch {
            printError("kite: \(error)")
            exit(ExitStatus.usage)
        }
    }
}
