import Devices
import GuestMemory
import Synchronization

/// The virtio-mmio transport, version 2 (virtio 1.2, section 4.2.2): the register window
/// a guest driver uses to find, negotiate with and configure one device. Registers are
/// written from vCPU threads; queues are served from the device event thread through
/// `serve(queue:)`. A guest that breaks the protocol gets DEVICE_NEEDS_RESET, never a crash.
///
/// `@unchecked Sendable`: the device (not Sendable: it is plain mutable state) is touched
/// only inside `deviceLock`, and all other state is inside the `state` mutex.
public final class VirtioMMIOTransport: BusDevice, @unchecked Sendable {
    public enum Register {
        public static let magic: UInt64 = 0x000
        public static let version: UInt64 = 0x004
        public static let deviceID: UInt64 = 0x008
        public static let vendorID: UInt64 = 0x00C
        public static let deviceFeatures: UInt64 = 0x010
        public static let deviceFeaturesSelect: UInt64 = 0x014
        public static let driverFeatures: UInt64 = 0x020
        public static let driverFeaturesSelect: UInt64 = 0x024
        public static let queueSelect: UInt64 = 0x030
        public static let queueSizeMax: UInt64 = 0x034
        public static let queueSize: UInt64 = 0x038
        public static let queueReady: UInt64 = 0x044
        public static let queueNotify: UInt64 = 0x050
        public static let interruptStatus: UInt64 = 0x060
        public static let interruptAcknowledge: UInt64 = 0x064
        public static let status: UInt64 = 0x070
        public static let queueDescriptorLow: UInt64 = 0x080
        public static let queueDescriptorHigh: UInt64 = 0x084
        public static let queueDriverLow: UInt64 = 0x090
        public static let queueDriverHigh: UInt64 = 0x094
        public static let queueDeviceLow: UInt64 = 0x0A0
        public static let queueDeviceHigh: UInt64 = 0x0A4
        public static let configGeneration: UInt64 = 0x0FC
        public static let config: UInt64 = 0x100
    }
    public enum Status {
        public static let acknowledge: UInt32 = 1
        public static let driver: UInt32 = 2
        public static let driverOK: UInt32 = 4
        public static let featuresOK: UInt32 = 8
        public static let needsReset: UInt32 = 64
        public static let failed: UInt32 = 128
    }
    public enum Interrupt {
        public static let usedBuffer: UInt32 = 1
        public static let configChange: UInt32 = 2
    }
    public static let magicValue: UInt32 = 0x7472_6976      // "virt"
    public static let vendor: UInt32 = 0x4554_494B          // "KITE"
    /// Size of the register window, config space included.
    public static let windowSize: UInt64 = 0x200

    struct State {
        var deviceFeaturesSelect: UInt32 = 0
        var driverFeaturesSelect: UInt32 = 0
        var driverFeatures: UInt64 = 0
        var queueSelect: UInt32 = 0
        var status: UInt32 = 0
        var interruptStatus: UInt32 = 0
        var configGeneration: UInt32 = 0
        var queues: [Virtqueue]
        var broken = false
        /// Counts resets, so work started before a reset cannot write back stale queues.
        var epoch: UInt64 = 0
    }

    public let device: any VirtioDevice
    public let name: String
    private let memory: GuestMemory
    private let state: Mutex<State>
    /// Everything the device reaches while serving its queues goes through this lock too:
    /// the device is called by one thread at a time.
    private let deviceLock = Mutex<Void>(())
    private let interrupt: @Sendable () -> Void
    private let notify: @Sendable (Int) -> Void
    private let report: @Sendable (String) -> Void

    /// `interrupt` raises the device's interrupt line; `notify(queue)` hands a queue
    /// notification to the event thread (KVM's ioeventfd normally catches these before they
    /// reach Kite); `report` logs protocol errors.
    public init(name: String, device: any VirtioDevice, memory: GuestMemory,
                interrupt: @escaping @Sendable () -> Void, notify: @escaping @Sendable (Int) -> Void,
                report: @escaping @Sendable (String) -> Void) {
        self.name = name
        self.device = device
        self.memory = memory
        self.interrupt = interrupt
        self.notify = notify
        self.report = report
        state = Mutex(State(queues: device.queueSizes.map { Virtqueue(maxSize: $0) }))
    }

    public var offeredFeatures: UInt64 {
        device.features | VirtioFeature.version1 | VirtioFeature.ringIndirectDescriptors
    }

    // MARK: Registers (vCPU threads)

    public func read(offset: UInt64, width: Int) -> UInt64 {
        if offset >= Register.config {
            let bytes = deviceLock.withLock { _ in device.readConfig(offset: Int(offset - Register.config), count: width) }
            return bytes.enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        }
        guard width == 4 else { return 0 }
        let features = offeredFeatures
        return UInt64(state.withLock { s -> UInt32 in
            switch offset {
            case Register.magic: return Self.magicValue
            case Register.version: return 2
            case Register.deviceID: return device.type.rawValue
            case Register.vendorID: return Self.vendor
            case Register.deviceFeatures:
                return s.deviceFeaturesSelect == 0 ? UInt32(truncatingIfNeeded: features)
                     : s.deviceFeaturesSelect == 1 ? UInt32(truncatingIfNeeded: features >> 32) : 0
            case Register.queueSizeMax: return s.selectedQueue.map { UInt32($0.maxSize) } ?? 0
            case Register.queueReady: return s.selectedQueue.map { $0.isReady ? 1 : 0 } ?? 0
            case Register.interruptStatus: return s.interruptStatus
            case Register.status: return s.status
            case Register.configGeneration: return s.configGeneration
            default: return 0
            }
        })
    }

    public func write(offset: UInt64, width: Int, value: UInt64) {
        if offset >= Register.config {
            let bytes = (0..<width).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) }
            deviceLock.withLock { _ in device.writeConfig(offset: Int(offset - Register.config), bytes: bytes) }
            return
        }
        guard width == 4 else { return }
        let v = UInt32(truncatingIfNeeded: value)
        var activate = false
        var resetDevice = false
        var notified: Int?
        state.withLock { s in
            switch offset {
            case Register.deviceFeaturesSelect: s.deviceFeaturesSelect = v
            case Register.driverFeaturesSelect: s.driverFeaturesSelect = v
            case Register.driverFeatures:
                guard s.status & Status.featuresOK == 0 else { return }
                if s.driverFeaturesSelect == 0 {
                    s.driverFeatures = (s.driverFeatures & ~0xFFFF_FFFF) | UInt64(v)
                } else if s.driverFeaturesSelect == 1 {
                    s.driverFeatures = (s.driverFeatures & 0xFFFF_FFFF) | (UInt64(v) << 32)
                }
            case Register.queueSelect: s.queueSelect = v
            case Register.queueSize: s.updateQueue { $0.size = UInt16(truncatingIfNeeded: v) }
            case Register.queueReady:
                s.updateQueue { $0.isReady = v == 1 }
            case Register.queueDescriptorLow: s.updateQueue { $0.descriptorTable = $0.descriptorTable.settingLow(v) }
            case Register.queueDescriptorHigh: s.updateQueue { $0.descriptorTable = $0.descriptorTable.settingHigh(v) }
            case Register.queueDriverLow: s.updateQueue { $0.availableRing = $0.availableRing.settingLow(v) }
            case Register.queueDriverHigh: s.updateQueue { $0.availableRing = $0.availableRing.settingHigh(v) }
            case Register.queueDeviceLow: s.updateQueue { $0.usedRing = $0.usedRing.settingLow(v) }
            case Register.queueDeviceHigh: s.updateQueue { $0.usedRing = $0.usedRing.settingHigh(v) }
            case Register.queueNotify:
                if Int(v) < s.queues.count, s.status & Status.driverOK != 0 { notified = Int(v) }
            case Register.interruptAcknowledge: s.interruptStatus &= ~v
            case Register.status:
                if v == 0 {
                    resetDevice = true
                    s.reset()
                    return
                }
                let wasOK = s.status & Status.driverOK != 0
                if v & Status.featuresOK != 0, s.status & Status.featuresOK == 0 {
                    // Accept only features we offered, and VERSION_1 is mandatory.
                    let offered = offeredFeatures
                    if s.driverFeatures & ~offered != 0 || s.driverFeatures & VirtioFeature.version1 == 0 {
                        s.status = v & ~Status.featuresOK
                        return
                    }
                }
                s.status = v
                if v & Status.driverOK != 0 && !wasOK { activate = true }
            default: break
            }
        }
        if resetDevice { deviceLock.withLock { _ in device.reset() } }
        if activate { activateDevice() }
        if let notified { notify(notified) }
    }

    // MARK: Queues (event thread)

    private func activateDevice() {
        let (features, problem) = state.withLock { s -> (UInt64, String?) in
            for i in s.queues.indices where s.queues[i].isReady {
                s.queues[i].eventIndexEnabled = s.driverFeatures & VirtioFeature.ringEventIndex != 0
                do { try s.queues[i].validate(memory: memory) } catch {
                    return (s.driverFeatures, "queue \(i): \(error)")
                }
            }
            return (s.driverFeatures, nil)
        }
        if let problem { fail(problem); return }
        deviceLock.withLock { _ in device.activate(features: features, memory: memory) }
    }

    /// Serves queue `index` after a notification: runs the device on it and interrupts the
    /// driver if buffers were used and the driver wants to know. The register lock is not
    /// held while the device works, so vCPUs reading registers never wait for device I/O.
    public func serve(queue index: Int) {
        var raise = false
        var problem: String?
        deviceLock.withLock { _ in
            let taken = state.withLock { s -> (Virtqueue, UInt64)? in
                guard !s.broken, s.status & Status.driverOK != 0, index < s.queues.count,
                      s.queues[index].isReady else { return nil }
                return (s.queues[index], s.epoch)
            }
            guard let (taken, epoch) = taken else { return }
            var queue = taken
            do {
                let used = try device.process(queue: index, &queue, memory: memory)
                let wants = used ? try queue.needsInterrupt(memory: memory) : false
                state.withLock { s in
                    guard s.epoch == epoch else { return }   // reset meanwhile: drop the old queue
                    s.queues[index] = queue
                    if wants {
                        s.interruptStatus |= Interrupt.usedBuffer
                        raise = true
                    }
                }
            } catch {
                problem = "queue \(index): \(error)"
            }
        }
        if let problem { fail(problem) }
        if raise { interrupt() }
    }

    /// Changes the device outside the guest's doing (a disk's new backing file): `change` runs
    /// under the device's lock, so no request is being served meanwhile; then, if it returns
    /// true, the driver is told that the configuration changed (interrupt status bit 1, a new
    /// configuration generation) and interrupted.
    public func changeDevice(_ change: (any VirtioDevice) -> Bool) {
        let changed = deviceLock.withLock { _ in change(device) }
        guard changed else { return }
        state.withLock { s in
            s.interruptStatus |= Interrupt.configChange
            s.configGeneration &+= 1
        }
        interrupt()
    }

    /// The guest broke the protocol: stop serving, ask the driver to reset, log once.
    private func fail(_ problem: String) {
        let first = state.withLock { s -> Bool in
            let first = !s.broken
            s.broken = true
            s.status |= Status.needsReset
            s.interruptStatus |= Interrupt.configChange
            s.configGeneration &+= 1
            return first
        }
        if first { report("\(name): \(problem); device needs reset") }
        interrupt()
    }

    /// Whether the device was marked as needing a reset (for tests and diagnostics).
    public var needsReset: Bool { state.withLock { $0.status & Status.needsReset != 0 } }
}

extension VirtioMMIOTransport.State {
    var selectedQueue: Virtqueue? {
        Int(queueSelect) < queues.count ? queues[Int(queueSelect)] : nil
    }

    /// Applies a change to the selected queue, ignored once the driver is running or when
    /// the selection is out of range (the spec forbids changing live queues).
    mutating func updateQueue(_ change: (inout Virtqueue) -> Void) {
        guard Int(queueSelect) < queues.count, status & VirtioMMIOTransport.Status.driverOK == 0 else { return }
        change(&queues[Int(queueSelect)])
    }

    mutating func reset() {
        deviceFeaturesSelect = 0
        driverFeaturesSelect = 0
        driverFeatures = 0
        queueSelect = 0
        status = 0
        interruptStatus = 0
        broken = false
        epoch &+= 1
        for i in queues.indices { queues[i].reset() }
    }
}

extension GuestAddress {
    func settingLow(_ v: UInt32) -> GuestAddress { GuestAddress((raw & ~0xFFFF_FFFF) | UInt64(v)) }
    func settingHigh(_ v: UInt32) -> GuestAddress { GuestAddress((raw & 0xFFFF_FFFF) | (UInt64(v) << 32)) }
}
