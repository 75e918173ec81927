import Sandbox
import VirtioDevices

/// Everything `kite run` needs to build a machine, already parsed.
public struct MachineConfig: Sendable {
    public enum Console: Equatable, Sendable {
        /// The serial port (ttyS0) on stdout/stdin.
        case stdio
        /// The serial port into a file; no input.
        case file(String)
        /// A virtio-console (hvc0) on stdout/stdin; serial output goes to stdout too.
        case virtio
    }

    public var kernelPath: String
    public var initrdPath: String?
    /// The kernel command line; nil = the kernel format's default (`console=ttyS0` for
    /// Linux, nothing for a multiboot kernel).
    public var commandLine: String?
    public var cpus: Int
    public var memoryBytes: UInt64
    public var console: Console
    /// Seconds without progress before a stuck guest counts as hung; nil = never.
    public var hangTimeout: Int? {
        get { watchdog.hangTimeout }
        set { watchdog.hangTimeout = newValue }
    }
    /// The hang watchdog: timeout, report file, control socket, symbols, fault injection.
    public var watchdog = HangWatchdogSettings()
    /// virtio-blk disks, in order (the guest sees vda, vdb, ...).
    public var disks: [BlockDeviceConfig] = []
    /// virtio-net interfaces on TAP devices, in order (eth0, eth1, ...).
    public var networks: [NetworkDeviceConfig] = []
    /// A virtio-vsock device with its host side on Unix sockets.
    public var vsock: VsockDeviceConfig?
    /// A virtio-rng device fed by the host's getrandom.
    public var entropyDevice = false
    /// Print when the guest reached its first instruction, first console byte and the
    /// boot timer's init marker (`--boot-timing`).
    public var bootTiming = false
    /// QEMU's devices for test kernels: isa-debug-exit at port 0xf4 and pc-testdev
    /// (`--test-devices`).
    public var testDevices = false
    /// Whose interrupt controllers the guest gets (`--irqchip`).
    public var irqchip: InterruptControllerMode = .kernel
    /// Each Kite thread's seccomp allow-list (`--seccomp`): on (the default), log or off.
    public var seccomp: SeccompMode = .on
    /// vCPU threads are named this and their index: `kite-vcpu0`, or Firecracker's `fc_vcpu 0`
    /// under `kite firecracker` (Kata Containers finds vCPU threads by that name to place
    /// them in cgroups).
    public var vcpuThreadNamePrefix = "kite-vcpu"
    /// An i8042 keyboard (IRQ 1, in the DSDT) that can be sent Ctrl+Alt+Delete
    /// (`MachineRuntime.pressCtrlAltDel`); without it the i8042 only resets.
    public var keyboard = false
    /// When the command line says `acpi=off`, announce the virtio-mmio devices on it too
    /// (`virtio_mmio.device=4K@ADDRESS:IRQ`), as Firecracker does; the CPUs are in the MP table.
    public var legacyDeviceDiscovery = false
    /// The KVM device; KITE_KVM_DEVICE overrides it (for tests of the error path).
    public var kvmPath: String = "/dev/kvm"

    public init(kernelPath: String, initrdPath: String? = nil, commandLine: String? = nil,
                cpus: Int = 1, memoryBytes: UInt64 = 512 << 20, console: Console = .stdio, hangTimeout: Int? = nil) {
        self.kernelPath = kernelPath
        self.initrdPath = initrdPath
        self.commandLine = commandLine
        self.cpus = cpus
        self.memoryBytes = memoryBytes
        self.console = console
        self.hangTimeout = hangTimeout
    }

    /// Parses `--console`: `stdio`, `file=PATH` or `virtio`.
    public static func parseConsole(_ text: String) -> Console? {
        if text == "stdio" || text == "stdout" { return .stdio }
        if text == "virtio" { return .virtio }
        if text.hasPrefix("file="), text.count > 5 { return .file(String(text.dropFirst(5))) }
        return nil
    }
}

/// A setup error: the guest never started. Exit status 2, one line on stderr: `message`,
/// which says what to fix. `cause` keeps the error it explains (a KVMError with its errno,
/// a BootError, a block device's error...) for code that needs more than the line.
public struct SetupError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public let cause: (any Error)?
    public init(_ message: String, cause: (any Error)? = nil) {
        self.message = message
        self.cause = cause
    }
    public var description: String { message }
    /// Two setup errors are the same when they say the same thing.
    public static func == (a: SetupError, b: SetupError) -> Bool { a.message == b.message }
}

/// `--irqchip`: where the guest's interrupt controllers live.
public enum InterruptControllerMode: String, Sendable, CaseIterable {
    /// KVM's local APICs, IOAPIC, PIC and PIT.
    case kernel
    /// KVM's local APICs; Kite's IOAPIC (interrupts sent as MSIs) and 8259 PICs; no PIT.
    case split
    /// Kite's local APICs (xAPIC), IOAPIC, 8259 PICs and APIC timers; KVM none; no PIT.
    case userspace
}
