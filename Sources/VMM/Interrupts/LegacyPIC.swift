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
        update { $0.acknowledge() }
    }

    /// The register windows for the port bus: each chip's command and data ports, and the
    /// ELCR pair. `changed` hears of output changes that guest writes and reads cause.
    func makeDevices(changed: @escaping @Sendable (OutputChange) -> Void) -> LegacyPICDevices {
        LegacyPICDevices(master: PICPorts(pic: self, registers: .chip(.master), changed: changed),
                         slave: PICPorts(pic: self, registers: .chip(.slave), changed: changed),
                         edgeLevelControl: PICPorts(pic: self, registers: .edgeLevelControl, changed: changed))
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

/// A window of PIC ports on the port bus: one chip's command (offset 0) and data (offset 1)
/// ports, or the ELCR pair (offset 0 the master's lines, 1 the slave's). Byte accesses; a
/// wider one touches the first byte only. Whatever changes the PICs' output (a write, or a
/// read that polls and so acknowledges) is told to `changed` after the lock is released.
final class PICPorts: BusDevice {
    enum Registers { case chip(PICPair.Chip), edgeLevelControl }
    private let pic: LegacyPIC
    private let registers: Registers
    private let changed: @Sendable (LegacyPIC.OutputChange) -> Void

    init(pic: LegacyPIC, registers: Registers, changed: @escaping @Sendable (LegacyPIC.OutputChange) -> Void) {
        self.pic = pic
        self.registers = registers
        self.changed = changed
    }

    func read(offset: UInt64, width: Int) -> UInt64 {
        let (value, change) = pic.update { p -> UInt8 in
            switch registers {
            case .chip(let chip): p.read(chip, offset)
            case .edgeLevelControl: p.readELCR(offset == 0 ? .master : .slave)
            }
        }
        if let change { changed(change) }
        return UInt64(value)
    }

    func write(offset: UInt64, width: Int, value: UInt64) {
        let byte = UInt8(truncatingIfNeeded: value)
        let change = pic.update { p in
            switch registers {
            case .chip(let chip): p.write(chip, offset, byte)
            case .edgeLevelControl: p.writeELCR(offset == 0 ? .master : .slave, byte)
            }
        }.1
        if let change { changed(change) }
    }
}
