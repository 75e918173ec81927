import HostCalls
import ACPI
import CHost
import CKVM
import Devices
import Diagnosis
import GuestMemory
import KVM
import Sandbox
import Virtio
import VirtioDevices
import X86Boot
#if canImport(Glibc)
import Glibc
#endif

/// A built virtual machine, ready to run. `Machine.build` is the boot recipe, top to bottom.
public final class Machine {
    /// Legacy I/O ports and interrupt lines of Kite's devices.
    public enum Ports {
        public static let com1: UInt64 = 0x3F8
        public static let com1IRQ: UInt32 = 4
        public static let i8042: UInt64 = 0x60
        public static let keyboardIRQ: UInt32 = 1
        /// The 8259 PICs and their ELCR (Kite's in `split` and `userspace` modes).
        public static let picMaster: UInt64 = 0x20
        public static let picSlave: UInt64 = 0xA0
        public static let edgeLevelControl: UInt64 = 0x4D0
        public static let postCode: UInt64 = 0x80
        public static let acpiPower: UInt64 = 0x600
        /// QEMU's fw_cfg: selector, then data.
        public static let firmwareConfig: UInt64 = 0x510
        /// `--test-devices`: isa-debug-exit, and pc-testdev's scratch register (two
        /// windows), flush-page port and 24 interrupt lines.
        public static let debugExit: UInt64 = 0xF4
        public static let testScratch: UInt64 = 0xE0
        public static let testFlushPage: UInt64 = 0xE4
        public static let testScratchBytes: UInt64 = 0xE8
        public static let testInterruptLines: UInt64 = 0x2000
    }
    /// pc-testdev's device memory (`--test-devices`): 64 KiB in the MMIO hole, above the
    /// local APIC and below KVM's private pages.
    public static let testDeviceMemoryAddress: UInt64 = 0xFF00_0000
    /// The boot timer (`BootTimer`), at the bottom of the 32-bit MMIO hole: init writes 123
    /// here (`devmem 0xc0000000 8 123`).
    public static let bootTimerAddress: UInt64 = GuestLayout.mmioHoleStart
    /// Linux's ceiling for xAPIC IDs, and so for `kernel` mode (KVM's IOAPIC sends 8-bit
    /// destinations) and `userspace` mode (Kite's APICs are xAPICs).
    public static let maxVCPUs = 254
    /// `split` mode: Kite's IOAPIC sends 15-bit destinations (KVM's MSI_EXT_DEST_ID) and KVM
    /// takes 32-bit APIC IDs (KVM_CAP_X2APIC_API), so the host KVM's limit applies, up to this.
    public static let maxSplitVCPUs = 1024

    /// The most vCPUs `mode` can give a guest, before the host KVM's own limit.
    public static func maxVCPUs(_ mode: InterruptControllerMode) -> Int {
        mode == .split ? maxSplitVCPUs : maxVCPUs
    }

    let config: MachineConfig
    let kvm: KVMSystem
    let vm: VirtualMachine
    let memory: GuestMemory
    let control: MachineControl
    let console: ConsoleOutput
    let serial: SerialPort
    let threads: [VCPUThread]
    let entry: BootEntry
    let deviceEvents: DeviceEventLoop
    /// The host side of the vsock device, if any (its socket is removed at the end).
    let vsockHost: UnixVsockHost?
    /// Where host console input goes: the UART, or the virtio console.
    let inputSink: ConsoleInputSink
    /// The eventfds KVM signals or reads for the virtio devices; they live as long as the VM.
    let eventFDs: [EventFD]
    /// Hang reports, `kite inspect`, fault injection.
    let watchdog: HangWatchdog
    /// Boot milestones, printed with `--boot-timing`.
    let timeline: BootTimeline
    /// The interrupt controllers (`--irqchip`).
    let interrupts: any InterruptController
    /// Each thread kind's compiled seccomp filter (nil with `--seccomp off`).
    let seccomp: SeccompFilters?
    /// The keyboard controller (Ctrl+Alt+Delete when `config.keyboard`).
    let i8042: I8042
    /// The virtio-blk disks with their transports, in the guest's order (for replacing a disk's file).
    let disks: [(device: BlockDevice, transport: VirtioMMIOTransport)]
    /// The virtio-net interfaces (their counters, for metrics).
    let networks: [NetworkDevice]

    private init(config: MachineConfig, kvm: KVMSystem, vm: VirtualMachine, memory: GuestMemory,
                 control: MachineControl, console: ConsoleOutput, serial: SerialPort,
                 threads: [VCPUThread], entry: BootEntry, deviceEvents: DeviceEventLoop, eventFDs: [EventFD],
                 inputSink: ConsoleInputSink, vsockHost: UnixVsockHost?, watchdog: HangWatchdog, timeline: BootTimeline,
                 interrupts: any InterruptController, seccomp: SeccompFilters?, i8042: I8042,
                 disks: [(device: BlockDevice, transport: VirtioMMIOTransport)], networks: [NetworkDevice]) {
        self.interrupts = interrupts
        self.i8042 = i8042
        self.disks = disks
        self.networks = networks
        self.seccomp = seccomp
        self.config = config; self.kvm = kvm; self.vm = vm; self.memory = memory
        self.control = control; self.console = console; self.serial = serial
        self.threads = threads; self.entry = entry
        self.deviceEvents = deviceEvents; self.eventFDs = eventFDs; self.inputSink = inputSink
        self.vsockHost = vsockHost
        self.watchdog = watchdog
        self.timeline = timeline
    }

    /// Builds the machine: every check that can fail before the guest starts happens here
    /// and throws `SetupError` with one line that says what to fix.
    public static func build(_ config: MachineConfig, log: @escaping @Sendable (String) -> Void) throws -> Machine {
        // 1. Check the request against the host.
        guard config.cpus >= 1 else { throw SetupError("--cpus must be at least 1") }
        let kvm = try openKVM(path: config.kvmPath)
        guard config.cpus <= maxVCPUs(config.irqchip) else {
            throw SetupError("--cpus \(config.cpus) is more than --irqchip \(config.irqchip.rawValue) allows (at most "
                             + "\(maxVCPUs(config.irqchip))\(config.irqchip == .split ? "" : "; --irqchip split takes up to \(maxSplitVCPUs)"))")
        }
        guard config.cpus <= kvm.maxVCPUs else {
            throw SetupError("--cpus \(config.cpus) is more than this host's KVM allows (at most \(kvm.maxVCPUs))")
        }
        guard config.memoryBytes >= GuestLayout.minimumRAM else {
            throw SetupError("--memory \(config.memoryBytes >> 20) MiB is too small (at least \(GuestLayout.minimumRAM >> 20) MiB)")
        }
        let hostRAM = UInt64(sysconf(Int32(_SC_PHYS_PAGES))) * UInt64(sysconf(Int32(_SC_PAGESIZE)))
        guard config.memoryBytes <= hostRAM else {
            throw SetupError("--memory \(config.memoryBytes >> 20) MiB is more than the host's \(hostRAM >> 20) MiB of RAM")
        }
        let kernel = try setup { try FileImage(path: config.kernelPath) }
        let initrd = try config.initrdPath.map { p in try setup { try FileImage(path: p) } }
        let format = try setup { try KernelFormat.detect(kernel) }
        // Each thread kind's seccomp program, compiled from its allow-list when Kite was
        // built; threads install their own as they start (Machine.run).
        let seccomp = SeccompFilters.compiled(config.seccomp)
        for fault in config.watchdog.injections {
            if let vcpu = fault.vcpu, vcpu >= config.cpus {
                throw SetupError("--inject: there is no vCPU \(vcpu) (--cpus \(config.cpus))")
            }
            if case .seccompViolation(let role) = fault { ForbiddenCallInjection.arm(role) }
        }

        // 2. The VM and its memory.
        let vm = try setup { try kvm.createVM() }
        try setup { try vm.setSystemPages(tss: GuestLayout.kvmTSS, identityMap: GuestLayout.kvmIdentityMap) }
        let memory = try setup { try GuestMemory(layout: GuestLayout.ramRegions(size: config.memoryBytes)) }
        try setup { try vm.map(memory) }

        // 3. Interrupt controllers (before any vCPU exists): KVM's in-kernel ones and its PIT;
        //    or (split) KVM's local APICs and Kite's IOAPIC and PICs; or (userspace) every APIC
        //    and the PICs in Kite, with the TSC-deadline MSR trapped. The devices' interrupt eventfds
        //    are irqfds to KVM (kernel; split, through MSI routes), or read on the device
        //    thread (userspace).
        let deviceEvents = try DeviceEventLoop()
        // What CPUID can offer (the vCPUs' template in step 7; userspace mode's address width).
        let supported = try setup { try kvm.supportedCPUID() }
        let interrupts: any InterruptController
        switch config.irqchip {
        case .kernel:
            interrupts = try setup { try KernelInterruptController(vm: vm) }
        case .split:
            interrupts = try setup {
                try SplitInterruptController(vm: vm, x2apicIDs: config.cpus > maxVCPUs)
            }
        case .userspace:
            try setup { try vm.trapMSRs(UserspaceInterruptController.trappedMSRs) }
            // The guest's physical-address width, as its CPUID will say (leaf 0x80000008 is
            // passed through): IA32_APIC_BASE bits above it are reserved.
            let addressBits = supported.first { $0.function == 0x8000_0008 }.map { Int($0.eax & 0xFF) } ?? 36
            interrupts = try UserspaceInterruptController(vcpuCount: config.cpus, physicalAddressBits: addressBits,
                                                          watch: { fd, handler in _ = try deviceEvents.watch(fd, handler) })
        }

        // 4. Devices: legacy ports, then virtio-mmio devices on the event thread. The ACPI
        //    description is collected as they are placed.
        let apicIDs = (0..<config.cpus).map { CPUIDTemplate.apicID(forVCPU: $0) }
        var acpi = ACPIConfig(apicIDs: apicIDs)
        acpi.sleepControlPort = UInt16(Ports.acpiPower + ACPIPowerDevice.sleepControlOffset)
        acpi.sleepStatusPort = UInt16(Ports.acpiPower + ACPIPowerDevice.sleepStatusOffset)
        acpi.resetPort = UInt16(Ports.acpiPower + ACPIPowerDevice.resetOffset)
        let control = try MachineControl(guestEntryAllowed: false)
        // From here on a call outside a thread's list is caught (SIGSYS), before the first
        // confined thread (userspace mode's APIC timers, step 7) starts.
        if seccomp != nil { try setup { try SeccompViolation.catchViolations(wakeFD: control.wakeFD) } }
        let console: ConsoleOutput
        switch config.console {
        case .stdio, .virtio: console = ConsoleOutput(fd: STDOUT_FILENO, ownsFD: false)
        case .file(let path): console = try ConsoleOutput(path: path)
        }
        let timeline = BootTimeline()
        let consoleWrite: @Sendable ([UInt8]) -> Void = { bytes in
            timeline.mark(.firstConsoleByte)
            console.write(bytes)
        }
        let serial = SerialPort(output: consoleWrite, interrupt: { level in
            interrupts.setLine(Ports.com1IRQ, level: level)
        })
        // The keyboard's IRQ 1 is an eventfd, as the virtio devices' interrupts are (an irqfd
        // to KVM, or pulsed by the device thread in userspace mode), so its edges reach the
        // guest after the exit that raised them, as a real controller's next byte does: a
        // pulse from inside the guest's read of the previous byte, while that interrupt was
        // still in service, was lost under nested KVM (Linux took the first byte of
        // Ctrl+Alt+Delete and no more).
        var keyboardIRQ: EventFD?
        if config.keyboard {
            let irq = try EventFD()
            try setup { try interrupts.attachEdgeTrigger(eventFD: irq.fd, gsi: Ports.keyboardIRQ) }
            keyboardIRQ = irq
            acpi.includesKeyboardController = true
            acpi.bootArchitecture.insert(.i8042)
        }
        var raiseKeyboardIRQ: (@Sendable () -> Void)?
        if let irq = keyboardIRQ { raiseKeyboardIRQ = { irq.signal() } }
        let i8042 = I8042(onReset: { control.stop(.reboot) }, keyboardInterrupt: raiseKeyboardIRQ)
        let power = ACPIPowerDevice(s5SleepType: acpi.s5SleepType, resetValue: acpi.resetValue,
                                    onPowerOff: { control.stop(.powerOff) }, onReset: { control.stop(.reboot) })
        let bootTiming = config.bootTiming
        let bootTimer = BootTimer(onMarker: {
            if timeline.mark(.initMarker) && bootTiming { printLine(timeline.summary()) }
        })
        var portRanges: [Bus.Range] = [
            .init(base: Ports.com1, length: 8, device: serial),
            .init(base: Ports.i8042, length: 5, device: i8042),
            .init(base: Ports.postCode, length: 1, device: NullDevice()),
            .init(base: Ports.acpiPower, length: 3, device: power),
            .init(base: Ports.firmwareConfig, length: 2,
                  device: FirmwareConfig(cpus: config.cpus, ramBytes: config.memoryBytes)),
        ]
        var mmioRanges: [Bus.Range] = [.init(base: bootTimerAddress, length: 1, device: bootTimer)]
        if let pics = interrupts.makeLegacyPICDevices() {
            portRanges += [
                .init(base: Ports.picMaster, length: LegacyPICDevices.chipPortCount, device: pics.master),
                .init(base: Ports.picSlave, length: LegacyPICDevices.chipPortCount, device: pics.slave),
                .init(base: Ports.edgeLevelControl, length: LegacyPICDevices.edgeLevelControlPortCount,
                      device: pics.edgeLevelControl),
            ]
        }
        if let ioapic = interrupts.makeIOAPICDevice() {
            mmioRanges.append(.init(base: GuestLayout.ioapicAddress, length: IOAPICWindow.length, device: ioapic))
        }
        if config.testDevices {
            let scratch = TestScratchRegister()
            portRanges += [
                .init(base: Ports.debugExit, length: 4, device: DebugExitDevice(onExit: { control.stop(.debugExit(value: $0)) })),
                .init(base: Ports.testScratch, length: 4, device: scratch.window()),
                .init(base: Ports.testFlushPage, length: 4,
                      device: TestFlushPage(flush: { [memory] address in memory.refault(pageAt: GuestAddress(address)) })),
                .init(base: Ports.testScratchBytes, length: 4, device: scratch.window()),
                .init(base: Ports.testInterruptLines, length: UInt64(TestInterruptLines.count),
                      device: TestInterruptLines(setLine: { line, level in interrupts.setLine(line, level: level) })),
            ]
            mmioRanges.append(.init(base: testDeviceMemoryAddress, length: UInt64(TestDeviceMemory.size),
                                    device: TestDeviceMemory()))
        }
        let ports = try setup { try Bus(name: "port I/O", ranges: portRanges, report: log) }
        var eventFDs: [EventFD] = keyboardIRQ.map { [$0] } ?? []
        var acpiDevices: [ACPIMMIODevice] = []
        var virtioDevices: [(name: String, device: any VirtioDevice)] = []
        for (i, disk) in config.disks.enumerated() {
            let name = "virtio-blk\(i) (\(disk.path))"
            let device = try setup { try BlockDevice(config: disk, log: { log("\(name): \($0)") }) }
            virtioDevices.append((name, device))
        }
        for (i, net) in config.networks.enumerated() {
            let name = "virtio-net\(i) (\(net.tapName))"
            let device = try setup { try NetworkDevice(config: net, log: { log("\(name): \($0)") }) }
            virtioDevices.append((name, device))
        }
        var vsockHost: UnixVsockHost?
        if let vsock = config.vsock {
            let host = UnixVsockHost(path: vsock.socketPath, loop: deviceEvents, log: log)
            try host.listen()
            let device = VsockDevice(guestCID: vsock.guestCID, host: host, log: { log("virtio-vsock: \($0)") })
            host.device = device
            vsockHost = host
            virtioDevices.append(("virtio-vsock", device))
        }
        if config.entropyDevice { virtioDevices.append(("virtio-rng", EntropyDevice())) }
        var virtioConsole: ConsoleDevice?
        if config.console == .virtio {
            let device = ConsoleDevice(output: consoleWrite)
            virtioConsole = device
            virtioDevices.append(("virtio-console", device))
        }
        var disks: [(device: BlockDevice, transport: VirtioMMIOTransport)] = []
        var networks: [NetworkDevice] = []
        var inputSink = ConsoleInputSink(room: { serial.receiveSpace }, deliver: { serial.receive($0) })
        guard virtioDevices.count <= VirtioSlots.maxDevices else {
            throw SetupError("at most \(VirtioSlots.maxDevices) virtio devices (asked for \(virtioDevices.count))")
        }
        for (slot, (name, device)) in virtioDevices.enumerated() {
            let window = VirtioSlots.window(slot)
            let irq = try EventFD()
            try setup { try interrupts.attachEdgeTrigger(eventFD: irq.fd, gsi: VirtioSlots.gsi(slot)) }
            let notifications = try device.queueSizes.map { _ in try EventFD() }
            let transport = VirtioMMIOTransport(
                name: name, device: device, memory: memory,
                interrupt: { irq.signal() }, notify: { queue in notifications[queue].signal() }, report: log)
            if let vsock = device as? VsockDevice {
                let receive = notifications[VsockDevice.receiveQueue]
                vsock.setReceiveWork { receive.signal() }
            }
            var afterServe: [Int: () -> Void] = [:]
            if let net = device as? NetworkDevice {
                // Frames from the tap are served like receive-queue work. While the guest has
                // no receive buffers, or the tap fails (deleted), the tap watch pauses so the
                // device thread cannot spin; the next rx notification tries again.
                let tap = deviceEvents.nextHandle
                try deviceEvents.watch(net.backend.fd, source: .readable) { [unowned deviceEvents] in
                    transport.serve(queue: NetworkDevice.receiveQueue)
                    if net.isWaitingForReceiveBuffers || net.isReceiveFailing { deviceEvents.setEnabled(tap, false) }
                }
                afterServe[NetworkDevice.receiveQueue] = { [unowned deviceEvents] in
                    if !net.isWaitingForReceiveBuffers && !net.isReceiveFailing { deviceEvents.setEnabled(tap, true) }
                }
            }
            for (queue, fd) in notifications.enumerated() {
                try setup {
                    try vm.attachMMIOWrite(address: window + VirtioMMIOTransport.Register.queueNotify,
                                           value: UInt32(queue), eventFD: fd.fd)
                }
                let after = afterServe[queue]
                try deviceEvents.watch(fd.fd) {
                    transport.serve(queue: queue)
                    after?()
                }
            }
            eventFDs += [irq] + notifications
            if let disk = device as? BlockDevice { disks.append((disk, transport)) }
            if let net = device as? NetworkDevice { networks.append(net) }
            if let virtioConsole, device === virtioConsole {
                let receive = notifications[ConsoleDevice.receiveQueue]
                inputSink = ConsoleInputSink(room: { virtioConsole.inputSpace },
                                             deliver: { virtioConsole.enqueueInput($0); receive.signal() })
            }
            mmioRanges.append(.init(base: window, length: VirtioMMIOTransport.windowSize, device: transport))
            acpiDevices.append(ACPIMMIODevice(name: VirtioSlots.acpiName(slot), uid: UInt32(slot), base: window,
                                              length: UInt32(VirtioMMIOTransport.windowSize), gsi: VirtioSlots.gsi(slot)))
        }
        let mmio = try setup { try Bus(name: "MMIO", ranges: mmioRanges, report: log) }

        // 5. Firmware: ACPI describes the CPUs, the IOAPIC and power-off; the reset vector
        //    resets (Linux's last-resort "BIOS" reboot jumps there).
        acpi.mmioDevices = acpiDevices
        let tables = ACPITables.build(acpi, at: GuestLayout.acpiTables)
        guard UInt64(tables.bytes.count) <= GuestLayout.acpiTablesEnd - GuestLayout.acpiTables else {
            throw SetupError("ACPI tables for \(config.cpus) vCPUs do not fit below 1 MiB")
        }
        try setup { try memory.write(tables.bytes, at: GuestAddress(GuestLayout.acpiTables)) }
        try setup { try memory.write(ResetVector.code, at: GuestAddress(GuestLayout.resetVector)) }
        // The same CPUs and IOAPIC as an MP table, for a guest booted with acpi=off (as
        // QEMU's firmware and Firecracker also provide); Linux reads the MADT when it has ACPI.
        let mpTable = MPTable(apicIDs: apicIDs.map { UInt32($0) })
        if mpTable.isExpressible {
            let bytes = mpTable.encoded()
            if bytes.count <= MPTable.room { try setup { try memory.write(bytes, at: GuestAddress(MPTable.address)) } }
        }

        // 6. Kernel, initrd, command line; entry tables. A guest without ACPI learns of the
        //    virtio devices from the command line (`legacyDeviceDiscovery`).
        var commandLine = config.commandLine ?? format.defaultCommandLine
        if config.legacyDeviceDiscovery && commandLine.split(separator: " ").contains("acpi=off") {
            for device in acpiDevices {
                commandLine += " virtio_mmio.device=4K@0x\(String(device.base, radix: 16)):\(device.gsi)"
            }
        }
        let entry = try setup {
            try KernelLoader.load(kernel: kernel, initrd: initrd, commandLine: commandLine,
                                  memory: memory, rsdp: tables.rsdpAddress)
        }
        var longMode = false
        if case .linux64 = entry { longMode = true }
        try setup { try EntryState.writeTables(into: memory, longMode: longMode) }

        // 7. vCPUs: CPUID, MSRs, APIC; the boot vCPU gets the entry state, the others wait
        //    for INIT/SIPI (in KVM's local APIC, or in Kite's in userspace mode).
        let kvmAPICs = config.irqchip != .userspace
        let template = CPUIDTemplate(supported: supported, vcpuCount: config.cpus,
                                     tscDeadlineTimer: kvmAPICs ? kvm.capability(KVM_CAP_TSC_DEADLINE_TIMER) > 0 : true,
                                     localAPICsInKVM: kvmAPICs, extendedDestinationIDs: config.irqchip == .split)
        var threads: [VCPUThread] = []
        for id in 0..<config.cpus {
            let vcpu = try setup { try vm.createVCPU(id: id) }
            try setup {
                try X86VCPUSetup.configure(vcpu, cpuid: template.entries(forVCPU: id), localAPICInKVM: kvmAPICs,
                                           x2apicMode: config.cpus > maxVCPUs)
            }
            if id == 0 { try setup { try X86VCPUSetup.enter(vcpu, at: entry) } }
            threads.append(VCPUThread(vcpu: vcpu, ports: ports, mmio: mmio, interrupts: interrupts, control: control,
                                      timeline: id == 0 ? timeline : nil))
        }

        try setup { try interrupts.attach(threads, seccomp: seccomp) }

        // 8. The hang watchdog (and its control socket, if asked for).
        let watchdog = try setup {
            try HangWatchdog(threads: threads, interruptMode: interrupts.mode, monitor: console.monitor, control: control,
                             settings: config.watchdog, kernelPath: config.kernelPath, memory: memory)
        }
        return Machine(config: config, kvm: kvm, vm: vm, memory: memory, control: control,
                       console: console, serial: serial, threads: threads, entry: entry,
                       deviceEvents: deviceEvents, eventFDs: eventFDs, inputSink: inputSink, vsockHost: vsockHost,
                       watchdog: watchdog, timeline: timeline, interrupts: interrupts, seccomp: seccomp,
                       i8042: i8042, disks: disks, networks: networks)
    }

    /// How long every vCPU thread together gets to leave KVM_RUN and end once the machine
    /// stops; a kicked thread takes microseconds, a thread stuck in the host kernel never.
    static let vcpuStopSeconds: UInt64 = 10

    /// Runs the guest until it powers off, reboots, crashes or hangs, or Kite is told to stop;
    /// then stops every vCPU, in order, before returning.
    ///
    /// Every thread is confined before the guest's first instruction: capabilities are
    /// dropped here (threads inherit the empty sets), each thread installs its own seccomp
    /// filter as it starts, the main thread last, and only then may vCPUs enter the guest.
    public func run(input: TerminalInput?) -> MachineExit {
        signal(SIGPIPE, SIG_IGN)
        var blocked = sigset_t()
        sigemptyset(&blocked)
        for s in [SIGINT, SIGTERM, SIGUSR1, VCPU.kickSignal] { sigaddset(&blocked, s) }
        pthread_sigmask(SIG_BLOCK, &blocked, nil)  // vCPU threads inherit this, then unblock kicks
        _ = installKickHandler()
        let signalFD = host_termination_signalfd()
        defer { if signalFD >= 0 { close(signalFD) } }
        do {
            try dropCapabilities()
        } catch {
            control.stop(.vmmError("\(error)"))
        }

        do { try console.start(seccomp: seccomp?.program(for: .console)) } catch { control.stop(.vmmError("\(error)")) }
        if !deviceEvents.isEmpty {
            do { try deviceEvents.start(seccomp: seccomp?.program(for: .devices)) } catch { control.stop(.vmmError("\(error)")) }
        }
        var started: [VCPUThread] = []
        // Every thread starts, even when vCPU 0 has already crashed or powered off: a
        // thread that finds the machine stopping stays out of the guest but can still be
        // read for the crash report.
        for t in threads {
            do { try t.start(seccomp: seccomp?.program(for: .vcpu), namePrefix: config.vcpuThreadNamePrefix); started.append(t) } catch {
                control.stop(.vmmError("\(error)"))
                break
            }
        }
        var watching = false
        if control.exitReason == nil {
            do { try watchdog.start(seccomp: seccomp?.program(for: .watchdog)); watching = true } catch {
                control.stop(.vmmError("\(error)"))
            }
        }
        if let seccomp {
            do { try seccomp.program(for: .main).install(label: "kite") } catch { control.stop(.vmmError("\(error)")) }
        }
        control.allowGuestEntry()
        ForbiddenCallInjection.fireIfArmed(.main)
        let waiting = MainLoop(control: control, signalFD: signalFD, input: input, sink: inputSink)
        waiting.run()

        // Orderly stop: the watchdog (it talks to the vCPU threads) finishes first; then every
        // vCPU leaves KVM_RUN and its thread ends before we return.
        if watching { watchdog.stop() }
        if case .crash(let vcpu, _, _) = control.exitReason, !started.isEmpty {
            // The other vCPUs are still there to read: what they were doing is the evidence.
            watchdog.publish(watchdog.makeReport(trigger: "the guest crashed on vCPU \(vcpu)"))
        }
        for t in started { t.release() }  // wakes or kicks each thread
        let joinDeadline = monotonicNanoseconds() + Self.vcpuStopSeconds * 1_000_000_000
        for t in started {
            let left = Int32(max(0, Int64(joinDeadline) - Int64(monotonicNanoseconds())) / 1_000_000)
            if !t.join(withinMilliseconds: left) {
                let since = t.threadReport(now: monotonicNanoseconds())
                printLine("kite: vCPU \(t.vcpu.id)'s thread did not stop within \(Self.vcpuStopSeconds) s of the machine's stop "
                          + "(\(since.state.rawValue) for \(Int(since.sinceEntry)) s): exiting without it")
            }
        }
        // Then the interrupt controllers' own threads (the APIC timers in userspace mode), and
        // the devices: the event thread finishes the request in hand and ends.
        interrupts.stop()
        deviceEvents.stop()
        // Last, the console: what the guest wrote reaches stdout or its file before Kite ends.
        let lost = console.finish()
        if lost > 0 {
            printLine("kite: \(lost) bytes of the guest's console output were dropped: nothing read the console "
                      + "as fast as the guest wrote (Kite keeps at most \(ConsoleOutput.bufferLimit >> 10) KiB waiting)")
        }
        vsockHost?.close()
        input?.restore()
        if config.bootTiming && timeline.milliseconds(to: .initMarker) == nil { printLine(timeline.summary()) }
        let exit = control.exitReason ?? .vmmError("machine stopped without a reason")
        // A violation after the stop (on the way out) did not end the machine: still say it.
        if let violation = SeccompViolation.first, exit != .vmmError(violation.sentence) {
            printLine("kite: \(violation.sentence)")
        }
        return exit
    }

    static func openKVM(path: String = "/dev/kvm") throws -> KVMSystem {
        do {
            return try KVMSystem(path: path)
        } catch {
            throw kvmSetupError(error, path: path)
        }
    }

    /// What to tell the user when /dev/kvm cannot be used.
    static func kvmSetupError(_ error: KVMError, path: String) -> SetupError {
        switch error.errno {
        case ENOENT, ENXIO, ENODEV:
            return SetupError("\(path) does not exist: enable virtualization in the firmware and load the module (modprobe kvm_intel or kvm_amd)",
                              cause: error)
        case EACCES, EPERM:
            return SetupError("no permission to open \(path): add your user to the kvm group (usermod -aG kvm $USER, then log in again) or run as root",
                              cause: error)
        default:
            return SetupError("cannot use \(path): \(error)", cause: error)
        }
    }

    /// Runs a setup step, turning any error into a one-line `SetupError` that keeps it as
    /// its cause.
    static func setup<T>(_ step: () throws -> T) throws -> T {
        do { return try step() } catch let e as SetupError { throw e } catch {
            throw SetupError("\(error)", cause: error)
        }
    }
}
