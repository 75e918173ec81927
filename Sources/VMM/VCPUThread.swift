import CKVM
import Devices
import KVM
#if canImport(Glibc)
import Glibc
#endif

/// A vCPU on its own POSIX thread (never the Swift cooperative pool): runs the guest and
/// hands port and MMIO exits to the buses until the machine stops.
final class VCPUThread: @unchecked Sendable {
    let vcpu: VCPU
    private let ports: Bus
    private let mmio: Bus
    private let control: MachineControl
    private var thread: pthread_t?

    init(vcpu: VCPU, ports: Bus, mmio: Bus, control: MachineControl) {
        self.vcpu = vcpu
        self.ports = ports
        self.mmio = mmio
        self.control = control
    }

    func start() throws {
        var attr = pthread_attr_t()
        pthread_attr_init(&attr)
        defer { pthread_attr_destroy(&attr) }
        pthread_attr_setstacksize(&attr, 1 << 20)
        var t = pthread_t()
        // Sound: the retained reference is released exactly once, by the thread body.
        let arg = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&t, &attr, { arg in
            let me = Unmanaged<VCPUThread>.fromOpaque(arg!).takeRetainedValue()
            me.runLoop()
            return nil
        }, arg)
        if rc != 0 {
            Unmanaged<VCPUThread>.fromOpaque(arg).release()
            throw SetupError("cannot start the thread for vCPU \(vcpu.id): \(String(cString: strerror(rc)))")
        }
        thread = t
    }

    /// Waits for the thread to finish (after `control.stop` and a kick).
    func join() {
        if let t = thread { pthread_join(t, nil); thread = nil }
    }

    private func runLoop() {
        vcpu.attachCurrentThread()
        ckvm_set_thread_name("kite-vcpu\(vcpu.id)")
        while !control.isStopping {
            let exit: VCPUExit
            do {
                exit = try vcpu.run()
            } catch {
                control.stop(.vmmError("\(error)"))
                return
            }
            handle(exit)
        }
    }

    private func handle(_ exit: VCPUExit) {
        switch exit {
        case .ioOut(let port, let size, let data):
            for at in stride(from: 0, to: data.count, by: size) {
                ports.write(UInt64(port), width: size, value: Self.load(data, at, size))
            }
        case .ioIn(let port, let size, let data):
            for at in stride(from: 0, to: data.count, by: size) {
                Self.store(ports.read(UInt64(port), width: size), data, at, size)
            }
        case .mmioWrite(let address, let data):
            mmio.write(address, width: data.count, value: Self.load(data, 0, data.count))
        case .mmioRead(let address, let data):
            Self.store(mmio.read(address, width: data.count), data, 0, data.count)
        case .halt, .interrupted:
            break
        case .shutdown:
            crash("triple fault (KVM_EXIT_SHUTDOWN)")
        case .failEntry(let reason):
            crash("VM entry failed, hardware reason 0x\(String(reason, radix: 16))")
        case .internalError(let sub):
            crash("KVM internal error, suberror \(sub)")
        case .systemEvent(let type):
            switch type {
            case 1: control.stop(.powerOff)  // KVM_SYSTEM_EVENT_SHUTDOWN
            case 2: control.stop(.reboot)    // KVM_SYSTEM_EVENT_RESET
            default: crash("KVM system event \(type)")
            }
        case .unknown(let reason):
            crash("unhandled KVM exit reason \(reason)")
        }
    }

    private func crash(_ reason: String) {
        control.stop(.crash(vcpu: vcpu.id, reason: reason, report: CrashReport.registers(of: vcpu)))
    }

    static func load(_ data: UnsafeRawBufferPointer, _ at: Int, _ size: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<min(size, 8) { v |= UInt64(data[at + i]) << (8 * UInt64(i)) }
        return v
    }

    static func load(_ data: UnsafeMutableRawBufferPointer, _ at: Int, _ size: Int) -> UInt64 {
        load(UnsafeRawBufferPointer(data), at, size)
    }

    static func store(_ value: UInt64, _ data: UnsafeMutableRawBufferPointer, _ at: Int, _ size: Int) {
        for i in 0..<min(size, 8) { data[at + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    }
}
