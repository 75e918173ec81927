import APIC
import Devices
import Synchronization

/// Kite's two 8259 PICs (`split`, `userspace`; in `kernel` mode they are KVM's), under one
/// lock: the device thread drives ISA lines, vCPU threads write the ports, and the boot
/// vCPU acknowledges (INTA) before it enters the guest. Their output (INTR) goes to the boot
/// vCPU's LINT0, which the controller tells of each change (`OutputChange`) after the lock is
/// released. Changes are numbered, because they reach the boot vCPU from several threads
/// and only the newest may count.
final class LegacyPIC: Sendable {
    struct OutputChange: Sendable, Equatable {
        let level: Bool
        let sequence: UInt64
    }

    private struct State {
        var pics = PICPair()
        var sequence: UInt64 = 0
    }
    private let state = Mutex(State())

    /// Runs `body` on the PICs under their lock; returns its result, and the output's new
    /// level if it changed.
    func update<R>(_ body: (inout PICPair) -> R) -> (R, OutputChange?) {
        state.withLock { s in
            let before = s.pics.output
            let result = body(&s.pics)
            guard s.pics.output != before else { return (result, nil) }
            s.sequence += 1
            return (result, OutputChange(level: s.pics.output, sequence: s.sequence))
        }
    }

    /// Drives the PIC's side of device line `gsi`: GSIs 0-15 are ISA IRQs (2 is the cascade,
    /// and ISA IRQ 0 is GSI 2 on the IOAPIC: Kite has no timer on either).
    func setLine(_ gsi: UInt32, level: Bool) -> OutputChange? {
        guard gsi < 16, gsi != UInt32(PICPair.cascadeLine) else { return nil }
        return update { $0.setLine(Int(gsi), level: level) }.1
    }

    /// The PICs' INTR now.
    var output: Bool { state.withLock { $0.pics.output } }

    /// The processor's INTA: the vector to inject (spurious IRQ 7's if the request is gone).
    func acknowledge() -> (vector: UInt8, change: OutputChange?) {
        let (vector, change) = update { $0.acknowledge() }
        return (vector, change)
    }

    /// The register windows for the port bus: each chip's command and data ports, and the
    /// ELCR pair. `changed` hears of output changes that guest writes and reads cause.
    func makeDevices(changed: @escaping @Sendable (OutputChange) -> Void) -> LegacyPICDevices {
        LegacyPICDevices(master: PICPorts(pic: self, chip: .master, changed: changed),
                         slave: PICPorts(pic: self, chip: .slave, changed: changed),
                         edgeLevelControl: EdgeLevelControlPorts(pic: self, changed: changed))
    }
}

/// What `Machine` places on the port bus when the PICs are Kite's.
struct LegacyPICDevices {
    /// Two bytes each: command (offset 0), data (offset 1).
    static let chipPortCount: UInt64 = 2
    /// Two bytes: the master's ELCR, the slave's.
    static let edgeLevelControlPortCount: UInt64 = 2
    let master: any BusDevice
    let slave: any BusDevice
    let edgeLevelControl: any BusDevice
}

/// One 8259's command and data ports. Byte accesses; a wider one touches the first byte only.
final class PICPorts: BusDevice {
    private let pic: LegacyPIC
    private let chip: PICPair.Chip
    private let changed: @Sendable (LegacyPIC.OutputChange) -> Void

    init(pic: LegacyPIC, chip: PICPair.Chip, changed: @escaping @Sendable (LegacyPIC.OutputChange) -> Void) {
        self.pic = pic
        self.chip = chip
        self.changed = changed
    }

    func read(offset: UInt64, width: Int) -> UInt64 {
        let (value, change) = pic.update { $0.read(chip, offset) }   // a poll acknowledges
        if let change { changed(change) }
        return UInt64(value)
    }

    func write(offset: UInt64, width: Int, value: UInt64) {
        if let change = pic.update({ $0.write(chip, offset, UInt8(truncatingIfNeeded: value)) }).1 { changed(change) }
    }
}

/// The ELCR (edge/level control) pair: offset 0 the master's lines, 1 the slave's.
final class EdgeLevelControlPorts: BusDevice {
    private let pic: LegacyPIC
    private let changed: @Sendable (LegacyPIC.OutputChange) -> Void

    init(pic: LegacyPIC, changed: @escaping @Sendable (LegacyPIC.OutputChange) -> Void) {
        self.pic = pic
        self.changed = changed
    }

    func read(offset: UInt64, width: Int) -> UInt64 {
        UInt64(pic.update { $0.readELCR(offset == 0 ? .master : .slave) }.0)
    }

    func write(offset: UInt64, width: Int, value: UInt64) {
        if let change = pic.update({ $0.writeELCR(offset == 0 ? .master : .slave, UInt8(truncatingIfNeeded: value)) }).1 {
            changed(change)
        }
    }
}
