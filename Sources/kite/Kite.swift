import ArgumentParser
import Logging
import Sandbox
import VMM
import VirtioDevices
#if canImport(Glibc)
import Glibc
#endif

struct Kite: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kite",
        abstract: "A micro virtual machine monitor for SMP Linux guests on KVM.",
        subcommands: [Run.self, Inspect.self, Explain.self, BootTestCommand.self]
    )
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Boot a Linux kernel (or a multiboot test kernel) in a new virtual machine.",
        discussion: """
        The kernel is a bzImage (Linux x86 boot protocol, 64-bit entry), an uncompressed ELF vmlinux with a PVH entry note, or a multiboot (version 1) kernel such as kvm-unit-tests' .flat files (ELF32, or with the header's address fields); the format is detected. The guest's first serial port (ttyS0, 0x3f8, IRQ 4) is the console: add console=ttyS0 to --cmdline. A multiboot kernel gets "KERNEL ARGS" as its command line, --initrd as its one module, and QEMU's fw_cfg (ports 0x510-0x511: CPU count, RAM size) is there for it to read.

        Console: with --console stdio (the default) the guest's console is on stdout and stdin is its input; when stdin is a terminal it is put in raw mode and Ctrl-A x quits (Ctrl-A Ctrl-A sends a Ctrl-A). --console file=PATH writes the console to PATH and reads no input. --console virtio puts the console on a virtio-console (use console=hvc0), with stdin as its input.

        Devices: virtio-mmio devices (--disk, --net, --rng, --console virtio) are described in the ACPI DSDT; the guest needs the virtio_mmio driver and the device's driver.

        Hangs: Kite reads the guest's console for its lockup, RCU stall, hung task and panic reports; on one it prints a hang report on stderr: every vCPU's registers, local APIC, pending events and thread state, the guest's report, and a diagnosis naming the stuck vCPU. SIGUSR1 prints a report on demand, as does `kite inspect PATH` with --api-socket PATH.

        \(ExitStatus.helpText)
        """
    )

    @Option(help: ArgumentHelp("Kernel image: bzImage, ELF vmlinux (PVH) or multiboot.", valueName: "path"))
    var kernel: String

    @Option(help: ArgumentHelp("Initial ramdisk loaded for the kernel (a multiboot kernel's module).", valueName: "path"))
    var initrd: String?

    @Option(help: ArgumentHelp("Kernel command line (default: console=ttyS0; none for a multiboot kernel).",
                               valueName: "string"))
    var cmdline: String?

    @Option(help: ArgumentHelp("Number of vCPUs (1 to the host KVM's limit: at most 254, or 1024 with --irqchip split).",
                               valueName: "n"))
    var cpus: Int = 1

    @Option(help: ArgumentHelp("Guest RAM: 512M, 2G, or a plain number of MiB.", valueName: "size"))
    var memory: String = "512M"

    @Option(help: ArgumentHelp("Where the console goes: stdio (ttyS0), file=PATH (ttyS0, no input), "
                               + "or virtio (a virtio-console, hvc0: use console=hvc0; ttyS0 output still shown).",
                               valueName: "stdio|file=PATH|virtio"))
    var console: String = "stdio"

    @Option(help: ArgumentHelp("Add a virtio-blk disk backed by a raw image (repeatable; vda, vdb, ...). "
                               + "The image is locked so two VMs cannot write it.",
                               valueName: "path=FILE[,readonly=on][,serial=ID]"))
    var disk: [String] = []

    @Option(help: ArgumentHelp("Add a virtio-net interface on a TAP device Kite creates or attaches to "
                               + "(repeatable; eth0, eth1, ...). Needs CAP_NET_ADMIN.",
                               valueName: "tap=NAME[,mac=AA:BB:CC:DD:EE:FF]"))
    var net: [String] = []

    @Option(help: ArgumentHelp("Add a virtio-vsock device: the guest's CID, and the Unix socket host "
                               + "programs connect to (write CONNECT <port>\\n); guest connections to "
                               + "host port P go to the socket PATH_P.", valueName: "cid=N,socket=PATH"))
    var vsock: String?

    @Flag(help: "Add a virtio-rng device (entropy from the host's getrandom; the guest's /dev/hwrng).")
    var rng = false

    @Option(name: .customLong("hang-timeout"),
            help: ArgumentHelp("Stop with exit status 5 when the guest has printed nothing but hang reports for this "
                               + "many seconds and the hang watchdog finds it stuck (an idle guest is not hung; a quiet "
                               + "guest that is not stuck is described once on stderr and keeps running).",
                               valueName: "seconds"))
    var hangTimeout: Int?

    @Option(help: ArgumentHelp("Also write every hang report as JSON to this file (replaced each time).",
                               valueName: "path"))
    var report: String?

    @Option(name: .customLong("api-socket"),
            help: ArgumentHelp("Open a control socket here; `kite inspect PATH` prints a hang report of the running VM.",
                               valueName: "path"))
    var apiSocket: String?

    @Option(help: ArgumentHelp("The guest kernel's System.map (or an ELF vmlinux with symbols), to name the "
                               + "functions vCPUs are in. Default: System.map-<release> next to the kernel or in /boot, "
                               + "else the kernel's own kallsyms read from guest memory.",
                               valueName: "path"))
    var symbols: String?

    @Flag(name: .customLong("boot-timing"),
          help: ArgumentHelp("Print on stderr when the guest ran its first instruction, wrote its first console byte "
                             + "and reached the init marker (the guest writes 123 to the boot timer at guest address 0xc0000000, e.g. `devmem 0xc0000000 8 123`), "
                             + "in ms since kite started."))
    var bootTiming = false

    @Flag(name: .customLong("test-devices"),
          help: ArgumentHelp("FOR TEST KERNELS (kvm-unit-tests): add QEMU's isa-debug-exit at port 0xf4 (a write of V "
                             + "ends kite with status (V << 1) | 1, overriding the statuses below) and pc-testdev "
                             + "(ports 0xe0-0xeb, interrupt lines at 0x2000-0x2017, 64 KiB at 0xff000000)."))
    var testDevices = false

    @Option(help: ArgumentHelp("Interrupt controllers: kernel (KVM's local APICs, IOAPIC, PIC and PIT), split "
                               + "(KVM's local APICs; Kite's IOAPIC, its interrupts sent as MSIs, and PICs) or userspace "
                               + "(Kite's local APICs, xAPIC only, IOAPIC, PICs and APIC timers). split and userspace "
                               + "have no PIT: the guest needs kvmclock and the APIC's TSC-deadline timer, as Linux uses them.",
                               valueName: "kernel|split|userspace"))
    var irqchip = "kernel"

    @Option(help: ArgumentHelp("Confine every Kite thread (vCPU, devices, watchdog, console, main) to its own system-call "
                               + "allow-list from before the guest's first instruction: on (the default; a call outside "
                               + "the list stops the guest with one line naming the thread and the call, exit status 1), "
                               + "log (allowed, but the host kernel logs it: dmesg | grep type=1326) or off.",
                               valueName: "on|log|off"))
    var seccomp = "on"

    @Option(help: ArgumentHelp("TESTING ONLY: inject a fault. stall-vcpu=N@Ts stops running vCPU N T seconds after "
                               + "start, to reproduce a lost wake-up; seccomp-violation=THREAD (main, vcpu, devices, "
                               + "watchdog, apic-timer, console) makes that thread call getppid, outside its allow-list "
                               + "(repeatable).", valueName: "fault"))
    var inject: [String] = []

    func validate() throws {
        guard cpus >= 1 else { throw ValidationError("--cpus must be at least 1 (got \(cpus))") }
        guard MemorySize.parse(memory) != nil else {
            throw ValidationError("--memory '\(memory)' is not a size: use 512M, 2G or a number of MiB")
        }
        guard MachineConfig.parseConsole(console) != nil else {
            throw ValidationError("--console '\(console)' is not stdio, file=PATH or virtio")
        }
        for d in disk {
            do { _ = try BlockDeviceConfig.parse(d) } catch { throw ValidationError("--disk: \(error)") }
        }
        for n in net {
            do { _ = try NetworkDeviceConfig.parse(n) } catch { throw ValidationError("--net: \(error)") }
        }
        if let vsock {
            do { _ = try VsockDeviceConfig.parse(vsock) } catch { throw ValidationError("--vsock: \(error)") }
        }
        guard SeccompMode(rawValue: seccomp) != nil else {
            throw ValidationError("--seccomp '\(seccomp)' is not on, log or off")
        }
        guard InterruptControllerMode(rawValue: irqchip) != nil else {
            throw ValidationError("--irqchip '\(irqchip)' is not kernel, split or userspace")
        }
        if let h = hangTimeout, h <= 0 { throw ValidationError("--hang-timeout must be a positive number of seconds") }
        for fault in inject {
            do { _ = try FaultInjection.parse(fault) } catch { throw ValidationError("--inject: \(error)") }
        }
        if let symbols, access(symbols, R_OK) != 0 {
            throw ValidationError("--symbols \(symbols): \(String(cString: strerror(errno)))")
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

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a hang report of a running VM: every vCPU's state, its local APIC, the guest's "
            + "console reports and a diagnosis.",
        discussion: "PATH is the control socket of a `kite run --api-socket PATH`. Taking the snapshot briefly "
            + "kicks every vCPU out of the guest."
    )

    @Argument(help: ArgumentHelp("The VM's control socket (kite run --api-socket).", valueName: "path"))
    var socket: String

    @Flag(help: "Print the report as JSON.")
    var json = false

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

/// Usage errors exit with status 2 and one line (ArgumentParser's default is 64 plus usage).
@main
enum Main {
    static func main() {
        // Runtime notices (e.g. a guest probing an unknown port) go to stderr, one line each.
        LoggingSystem.bootstrap { _ in KiteLogHandler() }
        do {
            var command = try Kite.parseAsRoot()
            try command.run()
        } catch let code as ExitCode {
            exit(code.rawValue)
        } catch {
            let status = Kite.exitCode(for: error)
            if status == .success {
                Kite.exit(withError: error)   // --help, --version
            }
            printError("kite: " + Kite.message(for: error))
            exit(ExitStatus.usage)
        }
    }
}
