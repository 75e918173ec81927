/// One 8259A programmable interrupt controller as a guest programs it through its two ports
/// (command at offset 0, data at offset 1): eight request lines, the request, in-service and
/// mask registers, fully nested priority with rotation, the initialization sequence
/// (ICW1-ICW4) and the operation commands (OCW1-OCW3). Pure state; `PICPair` wires two of
/// them as a PC does. Follows the 8259A data sheet as KVM's and QEMU's models read it:
/// edge-triggered lines latch on a rising edge, level-triggered ones (the ELCR) follow the
/// line; ICW1's level-triggered mode (LTIM) is not modelled (neither KVM nor QEMU does).
public struct PIC8259: Sendable, Equatable {
    /// Requests (IRR), in service (ISR), masked (IMR).
    public private(set) var requested: UInt8 = 0
    public private(set) var inService: UInt8 = 0
    public private(set) var masked: UInt8 = 0
    /// Lines as last driven, for edge detection.
    var lineLevels: UInt8 = 0
    /// The rotation: the line with the highest priority (0 after initialization); the others
    /// follow it in circular order.
    var highestPriorityLine: UInt8 = 0
    /// ICW2's vector base (bits 7:3).
    public private(set) var vectorBase: UInt8 = 0
    /// Edge/level control register (ELCR): set bits are level-triggered; `elcrWritable` says
    /// which lines may be.
    public private(set) var levelTriggered: UInt8 = 0
    let elcrWritable: UInt8
    /// Where the initialization sequence is: 0 done, 1 expects ICW2, 2 ICW3, 3 ICW4.
    var initStep = 0
    var expectsICW4 = false
    var single = false
    var autoEOI = false
    var rotateOnAutoEOI = false
    var specialFullyNested = false
    var specialMask = false
    /// OCW3's read register select: the command port reads ISR (true) or IRR.
    var readsInService = false
    /// OCW3's poll command: the next read of either port is a poll.
    var polling = false

    public init(elcrWritable: UInt8) {
        self.elcrWritable = elcrWritable
    }

    // MARK: Lines and priorities

    /// Drives request line `line` (0-7).
    public mutating func setLine(_ line: Int, level: Bool) {
        let bit = UInt8(1) << UInt8(line)
        if levelTriggered & bit != 0 {
            requested = level ? requested | bit : requested & ~bit
        } else if level && lineLevels & bit == 0 {
            requested |= bit   // a rising edge latches a request
        }
        lineLevels = level ? lineLevels | bit : lineLevels & ~bit
    }

    /// The priority (0 highest, 7 lowest) of the highest-priority line in `lines`, or 8.
    func priority(of lines: UInt8) -> Int {
        guard lines != 0 else { return 8 }
        var p = 0
        while lines & (1 << ((UInt8(p) &+ highestPriorityLine) & 7)) == 0 { p += 1 }
        return p
    }

    func line(atPriority p: Int) -> Int { (p + Int(highestPriorityLine)) & 7 }

    /// The line the chip asks the processor (or the master) to take now, if any: the
    /// highest-priority unmasked request above everything in service. `cascadeLine` is the
    /// master's slave input, which special fully nested mode lets through while in service.
    func pendingLine(cascadeLine: Int?) -> Int? {
        let request = priority(of: requested & ~masked)
        guard request < 8 else { return nil }
        var blocking = inService
        if specialMask { blocking &= ~masked }
        if specialFullyNested, let c = cascadeLine { blocking &= ~(UInt8(1) << UInt8(c)) }
        return request < priority(of: blocking) ? line(atPriority: request) : nil
    }

    /// The processor takes `line` (INTA): it goes in service unless in automatic EOI mode,
    /// and an edge-triggered request is consumed.
    mutating func take(_ line: Int) {
        let bit = UInt8(1) << UInt8(line)
        if autoEOI {
            if rotateOnAutoEOI { highestPriorityLine = UInt8((line + 1) & 7) }
        } else {
            inService |= bit
        }
        if levelTriggered & bit == 0 { requested &= ~bit }
    }

    // MARK: Guest access

    /// A byte written at `offset` (0 command, 1 data).
    public mutating func write(_ offset: UInt64, _ value: UInt8) {
        if offset == 0 {
            if value & 0x10 != 0 {
                initialize(icw1: value)
            } else if value & 0x08 != 0 {
                operationCommand3(value)
            } else {
                operationCommand2(value)
            }
            return
        }
        switch initStep {
        case 1:   // ICW2
            vectorBase = value & 0xF8
            initStep = single ? (expectsICW4 ? 3 : 0) : 2
        case 2:   // ICW3 (the cascade wiring is fixed: slave on the master's line 2)
            initStep = expectsICW4 ? 3 : 0
        case 3:   // ICW4
            specialFullyNested = value & 0x10 != 0
            autoEOI = value & 0x02 != 0
            initStep = 0
        default:  // OCW1
            masked = value
        }
    }

    /// ICW1 starts the sequence: the mask, in-service register and rotation clear, edge
    /// detection restarts, reads return IRR (data sheet, "Initialization Command Words").
    mutating func initialize(icw1: UInt8) {
        lineLevels = 0
        requested &= levelTriggered
        masked = 0
        inService = 0
        highestPriorityLine = 0
        vectorBase = 0
        readsInService = false
        polling = false
        specialMask = false
        autoEOI = false
        rotateOnAutoEOI = false
        specialFullyNested = false
        expectsICW4 = icw1 & 0x01 != 0
        single = icw1 & 0x02 != 0
        initStep = 1
    }

    /// OCW2: end of interrupt (non-specific, specific, with rotation) and priority commands.
    mutating func operationCommand2(_ value: UInt8) {
        let command = value >> 5
        switch command {
        case 0, 4:   // clear / set rotate in automatic EOI mode
            rotateOnAutoEOI = command == 4
        case 1, 5:   // non-specific EOI (5: and rotate)
            let p = priority(of: inService)
            guard p < 8 else { return }
            let l = line(atPriority: p)
            inService &= ~(UInt8(1) << UInt8(l))
            if command == 5 { highestPriorityLine = UInt8((l + 1) & 7) }
        case 3, 7:   // specific EOI (7: and rotate)
            let l = Int(value & 7)
            inService &= ~(UInt8(1) << UInt8(l))
            if command == 7 { highestPriorityLine = UInt8((l + 1) & 7) }
        case 6:      // set priority: the given line becomes the lowest
            highestPriorityLine = (value &+ 1) & 7
        default:     // 2: no operation
            break
        }
    }

    /// OCW3: poll, read register select, special mask mode.
    mutating func operationCommand3(_ value: UInt8) {
        if value & 0x04 != 0 { polling = true }
        if value & 0x02 != 0 { readsInService = value & 0x01 != 0 }
        if value & 0x40 != 0 { specialMask = value & 0x20 != 0 }
    }

    /// A byte read at `offset` without side effects other than a poll's (`PICPair.read`
    /// handles polls, which acknowledge).
    public func read(_ offset: UInt64) -> UInt8 {
        offset == 0 ? (readsInService ? inService : requested) : masked
    }

    public mutating func writeELCR(_ value: UInt8) {
        levelTriggered = value & elcrWritable
    }
}

/// The PC's two 8259As: the master (ports 0x20-0x21) takes IRQs 0-7 and the slave's output
/// on its line 2; the slave (0xA0-0xA1) takes IRQs 8-15. Plus the ELCR pair (0x4D0-0x4D1)
/// that makes lines level-triggered. `output` is the master's INTR to the boot processor's
/// LINT0; `acknowledge` is the processor's INTA cycle, returning the vector.
public struct PICPair: Sendable, Equatable {
    public enum Chip: Sendable { case master, slave }
    public static let cascadeLine = 2

    /// IRQs 0, 1, 2 (timer, keyboard, cascade) and 8, 13 (RTC, FPU) are always
    /// edge-triggered, as on the PIIX that QEMU and KVM model.
    public private(set) var master = PIC8259(elcrWritable: 0xF8)
    public private(set) var slave = PIC8259(elcrWritable: 0xDE)
    /// The master's INTR: the processor is asked to take an interrupt.
    public private(set) var output = false

    public init() {}

    /// Drives ISA IRQ `irq` (0-15, not 2, the cascade).
    public mutating func setLine(_ irq: Int, level: Bool) {
        guard (0..<16).contains(irq), irq != Self.cascadeLine else { return }
        if irq < 8 { master.setLine(irq, level: level) } else { slave.setLine(irq - 8, level: level) }
        update()
    }

    /// Recomputes the slave's output into the master's line 2, then the master's output.
    mutating func update() {
        master.setLine(Self.cascadeLine, level: slave.pendingLine(cascadeLine: nil) != nil)
        output = master.pendingLine(cascadeLine: Self.cascadeLine) != nil
    }

    /// INTA: the vector of the highest-priority request, which goes in service; with nothing
    /// to take (the request went away), the spurious IRQ 7 of the chip asked (data sheet).
    public mutating func acknowledge() -> UInt8 {
        defer { update() }
        guard let line = master.pendingLine(cascadeLine: Self.cascadeLine) else { return master.vectorBase | 7 }
        master.take(line)
        guard line == Self.cascadeLine else { return master.vectorBase | UInt8(line) }
        guard let slaveLine = slave.pendingLine(cascadeLine: nil) else { return slave.vectorBase | 7 }
        slave.take(slaveLine)
        return slave.vectorBase | UInt8(slaveLine)
    }

    /// A guest read of `chip`'s port at `offset` (0 command, 1 data). After OCW3's poll
    /// command, the read is the poll: 0x80 | line, acknowledging it, or 0.
    public mutating func read(_ chip: Chip, _ offset: UInt64) -> UInt8 {
        let polled = chip == .master ? master.polling : slave.polling
        guard polled else { return chip == .master ? master.read(offset) : slave.read(offset) }
        defer { update() }
        if chip == .master {
            master.polling = false
            guard let line = master.pendingLine(cascadeLine: Self.cascadeLine) else { return 0 }
            master.take(line)
            return 0x80 | UInt8(line)
        }
        slave.polling = false
        guard let line = slave.pendingLine(cascadeLine: nil) else { return 0 }
        slave.take(line)
        return 0x80 | UInt8(line)
    }

    public mutating func write(_ chip: Chip, _ offset: UInt64, _ value: UInt8) {
        if chip == .master { master.write(offset, value) } else { slave.write(offset, value) }
        update()
    }

    /// The ELCR byte of `chip` (port 0x4D0 master, 0x4D1 slave).
    public func readELCR(_ chip: Chip) -> UInt8 { chip == .master ? master.levelTriggered : slave.levelTriggered }

    public mutating func writeELCR(_ chip: Chip, _ value: UInt8) {
        if chip == .master { master.writeELCR(value) } else { slave.writeELCR(value) }
        update()
    }
}
