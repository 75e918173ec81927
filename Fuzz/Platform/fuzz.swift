// libFuzzer target for the guest-facing surface that is not virtio: the port-I/O and MMIO
// devices of Sources/Devices (16550 UART, i8042, ACPI power registers, boot timer, fw_cfg,
// the null device, the --test-devices set, and a Bus routing Kite's addresses to them), and
// the interrupt controllers of Sources/APIC a guest programs (local APIC, IOAPIC, 8259 pair).
// Built and run by Fuzz/run-platform-fuzz.sh. A guest can do anything, so every offset and
// every non-negative width is fair (KVM's exits carry 1, 2 or 4 bytes for port I/O and 1-8
// for MMIO; negative widths cannot come from a guest and are not tried).
//
// Input: target u8 (mod 15, `targetNames`), then operations until the input ends.
// - Bus devices (serial ... bus): op u8 = kind (bits 1:0: 0 read, 1 and 3 write, 2 the
//   target's host-side action: serial receives u8 % 72 bytes of host input, scratch switches
//   window, bus switches between the port and MMIO buses, others read), offset mode (bits
//   3:2: 0-1 u16 % (window + 4), 2 u8, or u8 + window - 128 for windows over 256 bytes, 3 a
//   u64), width (bits 6:4: 1, 2, 4, 8, 1, 4, one of 0/3/5/6/7/16/2^32/Int.max picked by a u8,
//   or a u8), value size (bit 7: u8 or u64, writes only). The bus target's address is one of
//   Kite's device bases picked by a u8, plus a u8 - 16 (and a u16 with bit 3 set), or a u64
//   (bits 3:2 both set).
// - local-apic: flags u8 (bit 0 boot processor, bit 1 start software-enabled, as Linux
//   leaves it), APIC ID u8, start time u32 << 16, then op u8 (mod 16) and its operands:
//   register read or write (offset: one of the registers, any aligned offset, any in the
//   page, or any u32; value a u8, u16 or u32 by the op's bits 5:4), accept(vector u8, level),
//   acknowledge, setCR8(u64), setTSCDeadline(u64), time passing (time stays below 2^62, as a
//   monotonic nanosecond clock does), advance(to: now), setHardwareEnabled, reset (INIT),
//   registerPage, timerCurrentCount and the LINT messages, destination matching.
// - ioapic: op u8 (mod 6): read or write at 0x00, 0x10, a u8 or a u64 (values as for the
//   local APIC), setLine (pin mostly 0-31, sometimes any Int), endOfInterrupt(vector u8),
//   routes(directPins from a u32 bitmap and maybe any Int).
// - pic: op u8 (mod 5; bit 7 the chip): read or write at 0, 1, a u8 or a u64, writeELCR,
//   setLine (IRQ mostly 0-19, sometimes any Int), acknowledge.
//
// Checked, beyond "no trap, no ASan report": a read of width 1-7 fits in `width` bytes; the
// callbacks fire exactly when the register semantics say (serial output byte, reset,
// power-off, boot marker, debug exit, flush page, interrupt lines), and reads of write-only
// devices are 0; the UART against a model of its registers, FIFO, LSR, IIR and interrupt
// line (levels alternate, and match the pending interrupt gated by OUT2); fw_cfg, the scratch
// register and the device memory against byte models; the bus answers unknown addresses
// with all-ones of the width and reports at most 64 of them plus one notice. Local APIC:
// acknowledge returns the deliverable vector, which was requested (and >= 16) and is then in
// service; accept succeeds exactly when enabled with a legal vector; IRR/ISR/TMR never hold
// vectors 0-15; reserved register bits read 0; unknown offsets read 0; a software-disabled
// APIC keeps its LVTs masked; the current count never exceeds the initial count; a passed
// deadline is cleared or moved past now; effects (level EOI, IPI) only from their registers.
// IOAPIC: no message for a masked pin, from setLine, writes or EOIs; messages match their
// pin's entry; edge pins send exactly on rising edges; read-only bits stay clear; reads
// follow IOREGSEL; routes are exactly the documented set. PIC pair: a plain read has no side
// effect, a poll reads 0 or 0x80 | line; the ELCR keeps IRQs 0-2, 8 and 13 edge-triggered;
// acknowledge without INTR is the master's spurious vector and changes nothing, with INTR a
// requested unmasked line's vector (base | line) or a spurious IRQ 7.
// A violation prints a "platform fuzz:" line and aborts, which libFuzzer reports as a crash.
// At exit (libFuzzer's -runs ends with exit()), one line gives the inputs run per target.
#if canImport(Glibc)
import Glibc
#endif
import APIC
import Devices

private let targetNames = [
    "serial", "i8042", "acpi-power", "boot-timer", "fw-cfg", "debug-exit", "scratch", "flush-page",
    "irq-lines", "device-memory", "null", "bus", "local-apic", "ioapic", "pic",
]
// libFuzzer calls the target from one thread.
nonisolated(unsafe) private var inputsPerTarget = [Int](repeating: 0, count: targetNames.count)
nonisolated(unsafe) private var reporting = false

private func reportInputs() {
    let parts = zip(targetNames, inputsPerTarget).map { "\($0) \($1) inputs" }
    let line = Array("platform fuzz: \(parts.joined(separator: ", "))\n".utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}

/// What the devices' callbacks did, in order (cleared for each input).
private enum Event: Equatable {
    case line(Bool), output([UInt8]), powerOff, reset, marker, exit(UInt64), flush(UInt64), irq(UInt32, Bool)
}
nonisolated(unsafe) private var events: [Event] = []

/// A failed check: prints why (-O drops precondition messages) and aborts, which libFuzzer
/// reports as a crash.
private func fail(_ message: String) -> Never {
    let line = Array("platform fuzz: \(message)\n".utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    abort()
}

private func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fail(message()) }
}

private func hex<T: BinaryInteger>(_ v: T) -> String { "0x" + String(v, radix: 16) }

private struct Reader {
    let bytes: [UInt8]
    var at = 0
    var done: Bool { at >= bytes.count }
    mutating func u8() -> UInt8 { defer { at += 1 }; return at < bytes.count ? bytes[at] : 0 }
    mutating func u16() -> UInt16 { UInt16(u8()) | UInt16(u8()) << 8 }
    mutating func u32() -> UInt32 { UInt32(u16()) | UInt32(u16()) << 16 }
    mutating func u64() -> UInt64 { UInt64(u32()) | UInt64(u32()) << 32 }
    mutating func bool() -> Bool { u8() & 1 != 0 }
    mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in u8() } }
    /// A 32-bit register value, read as a u8, u16 or u32 by `size` (small values are common:
    /// vectors, enable bits).
    mutating func value32(_ size: UInt8) -> UInt32 {
        switch size & 3 {
        case 0: UInt32(u8())
        case 1: UInt32(u16())
        default: u32()
        }
    }
}

// MARK: Bus-device accesses

private struct Access: CustomStringConvertible {
    var write: Bool
    var offset: UInt64
    var width: Int
    var value: UInt64
    var description: String {
        write ? "write \(hex(value)) width \(width) at \(hex(offset))" : "read width \(width) at \(hex(offset))"
    }
}

private enum Op { case access(Access), action }

private let oddWidths = [0, 3, 5, 6, 7, 16, 1 << 32, Int.max]

extension Reader {
    /// One operation on a device whose registers span `window` bytes.
    mutating func op(window: UInt64) -> Op {
        let b = u8()
        let kind = b & 3
        if kind == 2 { return .action }
        let offset: UInt64
        switch (b >> 2) & 3 {
        case 0, 1: offset = UInt64(u16()) % (window + 4)
        case 2: offset = UInt64(u8()) + (window > 256 ? window - 128 : 0)
        default: offset = u64()
        }
        return .access(access(b, write: kind & 1 == 1, offset: offset))
    }

    /// Width and value of an access, from its op byte.
    mutating func access(_ b: UInt8, write: Bool, offset: UInt64) -> Access {
        let width: Int
        switch (b >> 4) & 7 {
        case 0, 4: width = 1
        case 1: width = 2
        case 2, 5: width = 4
        case 3: width = 8
        case 6: width = oddWidths[Int(u8()) % oddWidths.count]
        default: width = Int(u8())
        }
        let value = write ? (b & 0x80 != 0 ? u64() : UInt64(u8())) : 0
        return Access(write: write, offset: offset, width: width, value: value)
    }
}

/// Bytes 1-7 wide reads must fit their width (8 and wider: anything; 0: device's choice).
private func checkFits(_ target: String, _ a: Access, _ value: UInt64) {
    if a.width >= 1 && a.width < 8 {
        check(value >> (8 * UInt64(a.width)) == 0, "\(target): \(a) returned \(hex(value)), wider than the access")
    }
}

/// Runs `a` on `device`: checks the width of a read's value and that the callbacks fired
/// were exactly `expected` (for a read: the device's `readEvents`). Returns the read value.
@discardableResult
private func perform(_ target: String, _ device: any BusDevice, _ a: Access, expecting expected: [Event]) -> UInt64 {
    let mark = events.count
    var value: UInt64 = 0
    if a.write {
        device.write(offset: a.offset, width: a.width, value: a.value)
    } else {
        value = device.read(offset: a.offset, width: a.width)
        checkFits(target, a, value)
    }
    let fired = Array(events[mark...])
    check(fired == expected, "\(target): \(a) fired \(fired), expected \(expected)")
    return value
}

/// Devices whose reads are always 0 and whose writes fire `expect(access)` and nothing else.
private func fuzzWriteOnly(_ r: inout Reader, _ target: String, _ device: any BusDevice, window: UInt64,
                           expect: (Access) -> [Event]) {
    while !r.done {
        var a: Access
        switch r.op(window: window) {
        case .action: a = Access(write: false, offset: 0, width: 1, value: 0)
        case .access(let access): a = access
        }
        let v = perform(target, device, a, expecting: a.write ? expect(a) : [])
        check(v == 0, "\(target): \(a) returned \(hex(v)), not 0")
    }
}

// MARK: UART

/// The 16550A as the data sheet describes it, for what Kite models: DLAB-switched divisor,
/// IER, FCR (FIFO enable, receive FIFO reset), LCR, MCR with loopback, LSR (data ready,
/// overrun), MSR, scratch, a 64-byte receive FIFO, THR-empty and received-data interrupts,
/// and OUT2 gating the interrupt line.
private struct SerialModel {
    var ier: UInt8 = 0, lcr: UInt8 = 0, mcr: UInt8 = 0x08, scratch: UInt8 = 0
    var divisor: (low: UInt8, high: UInt8) = (0x0C, 0)
    var fifoEnabled = false, overrun = false, thrEmpty = false
    var fifo: [UInt8] = []
    var line = false

    var dlab: Bool { lcr & 0x80 != 0 }
    var loopback: Bool { mcr & 0x10 != 0 }
    var pending: UInt8? {
        if ier & 0x01 != 0 && !fifo.isEmpty { return 0x04 }
        if ier & 0x02 != 0 && thrEmpty { return 0x02 }
        return nil
    }
    var expectedLine: Bool { pending != nil && mcr & 0x08 != 0 }

    mutating func push(_ b: UInt8) -> Bool {
        guard fifo.count < SerialPort.fifoSize else { overrun = true; return false }
        fifo.append(b)
        return true
    }

    /// A register read: the value, with its side effects on the model.
    mutating func read(_ offset: UInt64) -> UInt8 {
        switch offset {
        case 0:
            if dlab { return divisor.low }
            return fifo.isEmpty ? 0 : fifo.removeFirst()
        case 1: return dlab ? divisor.high : ier
        case 2:
            let p = pending
            if p == 0x02 { thrEmpty = false }
            return (p ?? 0x01) | (fifoEnabled ? 0xC0 : 0)
        case 3: return lcr
        case 4: return mcr
        case 5:
            defer { overrun = false }
            return 0x60 | (fifo.isEmpty ? 0 : 0x01) | (overrun ? 0x02 : 0)
        case 6:
            guard loopback else { return 0xB0 }
            // DTR -> DSR, RTS -> CTS, OUT1 -> RI, OUT2 -> DCD.
            return (mcr & 0x01) << 5 | (mcr & 0x02) << 3 | (mcr & 0x04) << 4 | (mcr & 0x08) << 4
        case 7: return scratch
        default: return 0xFF
        }
    }

    /// A register write: the byte transmitted, if any.
    mutating func write(_ offset: UInt64, _ v: UInt8) -> UInt8? {
        switch offset {
        case 0:
            if dlab { divisor.low = v; return nil }
            thrEmpty = true
            if loopback { _ = push(v); return nil }
            return v
        case 1:
            if dlab { divisor.high = v; return nil }
            if v & 0x02 != 0 && ier & 0x02 == 0 { thrEmpty = true }
            ier = v & 0x0F
        case 2:
            fifoEnabled = v & 0x01 != 0
            if v & 0x02 != 0 { fifo.removeAll() }
        case 3: lcr = v
        case 4: mcr = v & 0x1F
        case 7: scratch = v
        default: break
        }
        return nil
    }
}

private func fuzzSerial(_ r: inout Reader) {
    let serial = SerialPort(output: { events.append(.output($0)) }, interrupt: { events.append(.line($0)) })
    var model = SerialModel()
    while !r.done {
        let mark = events.count
        var outputs: [[UInt8]] = []
        switch r.op(window: 8) {
        case .action:
            let n = Int(r.u8() % 72)
            let bytes = r.bytes(n)
            let space = serial.receiveSpace
            check(space == SerialPort.fifoSize - model.fifo.count,
                  "serial: receive space \(space), FIFO holds \(model.fifo.count)")
            let accepted = serial.receive(bytes)
            let modelAccepted = bytes.filter { model.push($0) }.count
            check(accepted == modelAccepted, "serial: accepted \(accepted) of \(n) bytes with room for \(space)")
            check(serial.receiveSpace == space - accepted,
                  "serial: receive space \(serial.receiveSpace) after taking \(accepted) of \(space)")
        case .access(let a):
            if a.write {
                if let sent = model.write(a.offset, UInt8(truncatingIfNeeded: a.value)) { outputs = [[sent]] }
                serial.write(offset: a.offset, width: a.width, value: a.value)
            } else {
                let expected = model.read(a.offset)
                let v = serial.read(offset: a.offset, width: a.width)
                check(v == UInt64(expected), "serial: \(a) returned \(hex(v)), the register holds \(hex(expected))")
                checkFits("serial", a, v)
            }
        }
        for e in events[mark...] {
            switch e {
            case .line(let level):
                check(level != model.line, "serial: interrupt line set to \(level) twice in a row")
                model.line = level
            case .output(let bytes):
                check(outputs.first == bytes, "serial: transmitted \(bytes), expected \(outputs)")
                outputs.removeFirst()
            default: fail("serial: unexpected callback \(e)")
            }
        }
        check(outputs.isEmpty, "serial: \(outputs) not transmitted")
        check(model.line == model.expectedLine,
              "serial: interrupt line \(model.line) with IER \(hex(model.ier)), MCR \(hex(model.mcr)), "
                + "\(model.fifo.count) bytes received, THR-empty pending \(model.thrEmpty)")
    }
}

// MARK: fw_cfg

private func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }

private func fuzzFirmwareConfig(_ r: inout Reader) {
    let device: FirmwareConfig
    var items: [UInt16: [UInt8]]
    if r.bool() {
        // The machine's own items, as QEMU's pc machine lays them out.
        let cpus = Int(r.u16()) - 100, ram = r.u64()
        device = FirmwareConfig(cpus: cpus, ramBytes: ram)
        let count = le(UInt16(clamping: cpus))
        items = [0x00: Array("QEMU".utf8), 0x01: le(UInt32(1)), 0x02: [UInt8](repeating: 0, count: 16),
                 0x03: le(ram), 0x04: le(UInt16(1)), 0x05: count, 0x0F: count, 0x19: [0, 0, 0, 0]]
    } else {
        items = [:]
        for _ in 0..<Int(r.u8() % 4) {
            let key = r.u16() & 0xBFFF
            items[key] = r.bytes(Int(r.u8() % 24))
        }
        device = FirmwareConfig(items: items)
    }
    var key: UInt16 = 0, position = 0
    while !r.done {
        var a: Access
        switch r.op(window: 2) {
        case .action: a = Access(write: false, offset: FirmwareConfig.dataOffset, width: 1, value: 0)
        case .access(let access): a = access
        }
        if a.write {
            perform("fw-cfg", device, a, expecting: [])
            if a.offset == FirmwareConfig.selectorOffset {
                key = UInt16(truncatingIfNeeded: a.width == 1 ? a.value & 0xFF : a.value) & ~0x4000
                position = 0
            }
        } else {
            var expected: UInt64 = 0
            if a.offset == FirmwareConfig.dataOffset {
                let item = items[key] ?? []
                for i in 0..<min(a.width, 8) {
                    if position < item.count { expected |= UInt64(item[position]) << (8 * UInt64(i)) }
                    position += 1
                }
            }
            let v = perform("fw-cfg", device, a, expecting: [])
            check(v == expected, "fw-cfg: \(a) of key \(hex(key)) returned \(hex(v)), expected \(hex(expected))")
        }
    }
}

// MARK: Byte-addressed test devices

/// Reads and writes of a `size`-byte register at `offset`: the bytes inside, at most 8.
private func modelRead(_ bytes: [UInt8], _ a: Access) -> UInt64 {
    guard a.offset < UInt64(bytes.count) else { return 0 }
    var out: UInt64 = 0
    for i in 0..<min(a.width, 8, bytes.count - Int(a.offset)) { out |= UInt64(bytes[Int(a.offset) + i]) << (8 * UInt64(i)) }
    return out
}

private func modelWrite(_ bytes: inout [UInt8], _ a: Access) {
    guard a.offset < UInt64(bytes.count) else { return }
    for i in 0..<min(a.width, 8, bytes.count - Int(a.offset)) {
        bytes[Int(a.offset) + i] = UInt8(truncatingIfNeeded: a.value >> (8 * UInt64(i)))
    }
}

private func fuzzByteDevice(_ r: inout Reader, _ target: String, devices: [any BusDevice], size: Int) {
    var model = [UInt8](repeating: 0, count: size)
    var which = 0
    while !r.done {
        switch r.op(window: UInt64(size)) {
        case .action: which = (which + 1) % devices.count
        case .access(let a):
            let v = perform(target, devices[which], a, expecting: [])
            if a.write {
                modelWrite(&model, a)
            } else {
                let expected = modelRead(model, a)
                check(v == expected, "\(target): \(a) (window \(which)) returned \(hex(v)), expected \(hex(expected))")
            }
        }
    }
}

// MARK: The bus

/// Notices the buses gave for unknown addresses (both buses of one input).
nonisolated(unsafe) private var busReports = 0

private func fuzzBus(_ r: inout Reader) {
    let scratch = TestScratchRegister()
    let serial = SerialPort(output: { events.append(.output($0)) }, interrupt: { events.append(.line($0)) })
    // (base, length, device, the callbacks an access to it may fire)
    typealias Entry = (base: UInt64, length: UInt64, device: any BusDevice, fires: (Event) -> Bool)
    let ports: [Entry] = [
        (0x3F8, 8, serial, { if case .line = $0 { true } else if case .output = $0 { true } else { false } }),
        (0x60, 5, I8042(onReset: { events.append(.reset) }), { $0 == .reset }),
        (0x80, 1, NullDevice(), { _ in false }),
        (0x600, 3, ACPIPowerDevice(s5SleepType: 5, resetValue: 1, onPowerOff: { events.append(.powerOff) },
                                   onReset: { events.append(.reset) }), { $0 == .reset || $0 == .powerOff }),
        (0x510, 2, FirmwareConfig(cpus: 2, ramBytes: 1 << 30), { _ in false }),
        (0xF4, 4, DebugExitDevice(onExit: { events.append(.exit($0)) }), { if case .exit = $0 { true } else { false } }),
        (0xE0, 4, scratch.window(), { _ in false }),
        (0xE4, 4, TestFlushPage(flush: { events.append(.flush($0)) }), { if case .flush = $0 { true } else { false } }),
        (0xE8, 4, scratch.window(), { _ in false }),
        (0x2000, 24, TestInterruptLines(setLine: { events.append(.irq($0, $1)) }), { if case .irq = $0 { true } else { false } }),
    ]
    let mmio: [Entry] = [
        (0xC000_0000, 1, BootTimer(onMarker: { events.append(.marker) }), { $0 == .marker }),
        (0xFF00_0000, UInt64(TestDeviceMemory.size), TestDeviceMemory(), { _ in false }),
    ]
    busReports = 0
    let report: @Sendable (String) -> Void = { _ in busReports += 1 }
    func bus(_ name: String, _ entries: [Entry]) -> (Bus, [Entry]) {
        let ranges = entries.map { Bus.Range(base: $0.base, length: $0.length, device: $0.device) }
        return (try! Bus(name: name, ranges: ranges, report: report), entries)
    }
    let buses = [bus("port I/O", ports), bus("MMIO", mmio)]
    var which = 0
    while !r.done {
        let b = r.u8()
        guard b & 3 != 2 else { which ^= 1; continue }
        let (bus, entries) = buses[which]
        let address: UInt64
        if b & 0x0C == 0x0C {
            address = r.u64()
        } else {
            let base = entries[Int(r.u8()) % entries.count].base
            address = base &+ UInt64(r.u8()) &- 16 &+ (b & 0x08 != 0 ? UInt64(r.u16()) : 0)
        }
        let a = r.access(b, write: b & 1 == 1, offset: address)
        let owner = entries.first { address >= $0.base && address - $0.base < $0.length }
        let mark = events.count
        if a.write {
            bus.write(address, width: a.width, value: a.value)
        } else {
            let v = bus.read(address, width: a.width)
            checkFits("bus", a, v)
            if owner == nil {
                let ones = a.width >= 8 ? UInt64.max : (UInt64(1) << (8 * UInt64(a.width))) - 1
                check(v == ones, "bus: \(a) at an unknown address returned \(hex(v)), not all-ones")
            }
        }
        for e in events[mark...] {
            check(owner?.fires(e) ?? false, "bus: \(a) fired \(e), which is not the device's at \(hex(address))")
            if case .output = e { check(a.write, "bus: a read transmitted") }
        }
        check(bus.unknownAddresses.count <= Bus.noticedAddressLimit,
              "bus: \(bus.unknownAddresses.count) unknown addresses remembered")
        check(busReports <= 2 * (Bus.noticedAddressLimit + 1), "bus: \(busReports) notices")
    }
}

// MARK: Local APIC

private typealias Reg = LocalAPIC.Register

/// Offsets that read a register; everything else reads 0.
private let namedRegisters: Set<UInt32> = [
    Reg.id, Reg.version, Reg.taskPriority, Reg.arbitrationPriority, Reg.processorPriority, Reg.logicalDestination,
    Reg.destinationFormat, Reg.spuriousVector, Reg.errorStatus, Reg.commandLow, Reg.commandHigh, Reg.lvtTimer,
    Reg.lvtThermal, Reg.lvtPerformance, Reg.lvtLINT0, Reg.lvtLINT1, Reg.lvtError, Reg.lvtCMCI,
    Reg.timerInitialCount, Reg.timerDivide,
]
private let lvtRegisters: [UInt32] = [
    Reg.lvtTimer, Reg.lvtThermal, Reg.lvtPerformance, Reg.lvtLINT0, Reg.lvtLINT1, Reg.lvtError, Reg.lvtCMCI,
]

private func inVectorBlock(_ offset: UInt32) -> Bool {
    [Reg.inService, Reg.triggerMode, Reg.interruptRequest].contains { offset >= $0 && offset < $0 + 0x80 }
}

/// Bits of each register that must read 0 (SDM 11.4-11.6, and what Kite keeps writable).
private func reservedBits(_ offset: UInt32) -> UInt32 {
    switch offset {
    case Reg.id: 0x00FF_FFFF
    case Reg.taskPriority, Reg.processorPriority: 0xFFFF_FF00
    case Reg.logicalDestination: 0x00FF_FFFF
    case Reg.spuriousVector: 0xFFFF_FC00
    case Reg.errorStatus: ~(LocalAPIC.sendIllegalVector | LocalAPIC.receivedIllegalVector)
    case Reg.commandLow: ~UInt32(0x000C_CFFF)
    case Reg.commandHigh: 0x00FF_FFFF
    case Reg.lvtTimer: ~UInt32(0x0007_00FF)
    case Reg.lvtError: ~UInt32(0x0001_00FF)
    case Reg.lvtLINT0, Reg.lvtLINT1: ~UInt32(0x0001_A7FF)
    case Reg.lvtThermal, Reg.lvtPerformance, Reg.lvtCMCI: ~UInt32(0x0001_07FF)
    case Reg.timerDivide: ~UInt32(0xB)
    default: 0
    }
}

private let apicRegisters = namedRegisters.sorted() + [Reg.endOfInterrupt, Reg.timerCurrentCount, 0x100, 0x180, 0x200, 0x270]

private func apicOffset(_ r: inout Reader) -> UInt32 {
    switch r.u8() % 4 {
    case 0: apicRegisters[Int(r.u8()) % apicRegisters.count]
    case 1: UInt32(r.u8()) << 4 & 0xFF0   // any aligned offset
    case 2: UInt32(r.u16() & 0xFFF)          // anywhere in the page
    default: r.u32()
    }
}

private func checkAPIC(_ a: LocalAPIC, now: UInt64) {
    for offset in [UInt32(0x100), 0x180, 0x200] {
        check(a.read(offset) & 0xFFFF == 0,
              "local-apic: vectors 0-15 in the register at \(hex(offset)): \(hex(a.read(offset)))")
    }
    for offset in namedRegisters {
        check(a.read(offset) & reservedBits(offset) == 0, "local-apic: register \(hex(offset)) reads \(hex(a.read(offset)))")
    }
    check(a.read(Reg.version) == LocalAPIC.versionValue, "local-apic: version \(hex(a.read(Reg.version)))")
    check(a.read(Reg.destinationFormat) & 0x0FFF_FFFF == 0x0FFF_FFFF,
          "local-apic: DFR \(hex(a.read(Reg.destinationFormat)))")
    check(a.cr8 == UInt64(a.taskPriority >> 4) && a.cr8 < 16, "local-apic: CR8 \(a.cr8) with TPR \(hex(a.taskPriority))")
    if !a.isSoftwareEnabled {
        for offset in lvtRegisters where !(offset == Reg.lvtLINT0 && a.isBootProcessor) {
            check(a.read(offset) & 0x1_0000 != 0,
                  "local-apic: LVT \(hex(offset)) unmasked (\(hex(a.read(offset)))) while software-disabled")
        }
    }
    if let v = a.deliverableVector { check(v >= 16 && a.isRequested(v), "local-apic: deliverable \(v) not requested") }
    let count = a.timerCurrentCount(at: now)
    check(count <= a.timerInitialCount, "local-apic: current count \(count) above the initial \(a.timerInitialCount)")
    if a.timerMode == .tscDeadline { check(count == 0, "local-apic: current count \(count) in TSC-deadline mode") }
}

private func fuzzLocalAPIC(_ r: inout Reader) {
    let flags = r.u8()
    var apic = LocalAPIC(apicID: r.u8(), bootProcessor: flags & 1 != 0)
    // Half the inputs start as Linux leaves the APIC at boot: software-enabled, vector 0xFF.
    if flags & 2 != 0 { _ = apic.write(Reg.spuriousVector, 0x1FF, at: 0) }
    let peer = LocalAPIC(apicID: flags, bootProcessor: false)
    var now = UInt64(r.u32()) << 16
    let timeLimit: UInt64 = 1 << 62
    while !r.done {
        let before = apic
        let op = r.u8()
        switch op % 16 {
        case 0, 1:
            let offset = apicOffset(&r)
            let v = apic.read(offset)
            if !namedRegisters.contains(offset) && !inVectorBlock(offset) {
                check(v == 0, "local-apic: offset \(hex(offset)) reads \(hex(v)), not 0")
            }
        case 2, 3:
            let offset = apicOffset(&r), value = r.value32(op >> 4)
            let effect = apic.write(offset, value, at: now)
            switch effect {
            case .noEffect: break
            case .levelEOI(let v):
                check(offset == Reg.endOfInterrupt, "local-apic: level EOI from a write at \(hex(offset))")
                check(before.isInService(v) && before.isLevelTriggered(v) && !apic.isInService(v),
                      "local-apic: level EOI of \(v), which was not a level vector in service")
            case .interProcessor(let ipi):
                check(offset == Reg.commandLow, "local-apic: IPI from a write at \(hex(offset))")
                check(ipi.deliveryMode != .fixed || ipi.vector >= 16, "local-apic: fixed IPI with vector \(ipi.vector)")
                let targets = ipi.targets(from: 0, in: [apic, peer])
                check(Set(targets).count == targets.count && targets.allSatisfy { $0 == 0 || $0 == 1 },
                      "local-apic: IPI targets \(targets)")
                _ = ipi.message
            }
            if offset == Reg.spuriousVector {
                check(apic.spuriousVector == value & 0x3FF,
                      "local-apic: SVR \(hex(apic.spuriousVector)) after writing \(hex(value))")
            }
        case 4, 5:
            let vector = r.u8(), level = r.bool()
            let accepted = apic.accept(vector: vector, levelTriggered: level)
            let expected = before.isHardwareEnabled && before.isSoftwareEnabled && vector >= 16
            check(accepted == expected, "local-apic: accept(\(vector)) returned \(accepted)")
            if accepted {
                check(apic.isRequested(vector) && apic.isLevelTriggered(vector) == level,
                      "local-apic: accepted \(vector) not requested as sent")
            }
        case 6:
            let got = apic.acknowledge()
            check(got == before.deliverableVector,
                  "local-apic: acknowledged \(String(describing: got)), deliverable \(String(describing: before.deliverableVector))")
            if let v = got {
                check(v >= 16 && before.isRequested(v), "local-apic: acknowledged \(v), which was not requested")
                check(UInt32(v) & 0xF0 > before.processorPriority & 0xF0,
                      "local-apic: acknowledged \(v) at priority \(hex(before.processorPriority))")
                check(apic.isInService(v) && !apic.isRequested(v), "local-apic: acknowledged \(v) is not in service alone")
            } else {
                check(apic == before, "local-apic: an acknowledge with nothing deliverable changed the APIC")
            }
        case 7:
            let value = r.u64()
            apic.setCR8(value)
            check(apic.cr8 == value & 0xF && apic.read(Reg.taskPriority) == UInt32(value & 0xF) << 4,
                  "local-apic: CR8 \(apic.cr8) after setting \(value)")
        case 8:
            let deadline = r.u64()
            apic.setTSCDeadline(deadline)
            if before.timerMode == .tscDeadline {
                check(apic.timerDeadline == (deadline == 0 ? nil : deadline),
                      "local-apic: TSC deadline \(String(describing: apic.timerDeadline)) after \(deadline)")
            } else {
                check(apic == before, "local-apic: a TSC deadline outside TSC-deadline mode changed the APIC")
            }
        case 9:   // time passes
            switch r.u8() % 4 {
            case 0: now += UInt64(r.u8())
            case 1: now += UInt64(r.u16())
            case 2: now += UInt64(r.u32())
            default: now += UInt64(r.u32()) << 16
            }
            if now >= timeLimit { now %= timeLimit }
        case 10:
            let fired = apic.advance(to: now)
            if let d = before.timerDeadline, now >= d {
                if let next = apic.timerDeadline { check(next > now, "local-apic: deadline \(next) not past now \(now)") }
                if fired {
                    let vector = UInt8(truncatingIfNeeded: before.read(Reg.lvtTimer))
                    check(before.read(Reg.lvtTimer) & 0x1_0000 == 0 && apic.isRequested(vector),
                          "local-apic: the timer fired but \(vector) is not requested")
                }
            } else {
                check(!fired && apic == before, "local-apic: advance before the deadline changed the APIC")
            }
        case 11:
            let enabled = r.bool()
            apic.setHardwareEnabled(enabled)
            check(apic.isHardwareEnabled == enabled, "local-apic: hardware enable \(enabled) not taken")
            if enabled != before.isHardwareEnabled {
                check(apic.apicID == apic.initialAPICID && !apic.hasRequested && !apic.isSoftwareEnabled,
                      "local-apic: a hardware enable change did not give the power-up state")
            }
            if enabled == before.isHardwareEnabled {
                check(apic == before, "local-apic: setting the same hardware enable changed the APIC")
            }
            if !enabled {
                let takesPart = apic.accept(vector: 0x40) || apic.matches(destination: 0xFF, logical: false)
                check(!takesPart && apic.takesExternalInterrupts,
                      "local-apic: a hardware-disabled APIC takes part")
            }
        case 12:
            apic.reset()
            check(apic.apicID == before.apicID && !apic.hasRequested && apic.timerDeadline == nil,
                  "local-apic: INIT kept state")
        case 13:
            let page = apic.registerPage(at: now)
            check(page.count == 0x400, "local-apic: register page of \(page.count) bytes")
            for offset in stride(from: 0, to: 0x400, by: 0x10) {
                let word = (0..<4).reduce(UInt32(0)) { $0 | UInt32(page[offset + $1]) << (8 * UInt32($1)) }
                let expected = offset == Int(Reg.timerCurrentCount) ? apic.timerCurrentCount(at: now) : apic.read(UInt32(offset))
                check(word == expected,
                      "local-apic: register page word \(hex(offset)) is \(hex(word)), the register \(hex(expected))")
            }
        case 14:
            let at = r.bool() ? now : r.u64() % timeLimit
            _ = apic.timerCurrentCount(at: at)
            _ = apic.message(for: .lint0)
            _ = apic.message(for: .lint1)
            let pins = [(LocalAPIC.LocalInterruptPin.lint0, Reg.lvtLINT0), (.lint1, Reg.lvtLINT1)]
            for (pin, offset) in pins where apic.read(offset) & 0x1_0000 != 0 {
                check(apic.message(for: pin) == nil, "local-apic: a masked LINT sends a message")
            }
        default:
            let destination = r.u8(), logical = r.bool()
            let matched = apic.matches(destination: destination, logical: logical)
            if !apic.isHardwareEnabled { check(!matched, "local-apic: a hardware-disabled APIC matched") }
            else if destination == 0xFF { check(matched, "local-apic: broadcast not matched") }
            _ = apic.takesExternalInterrupts
        }
        checkAPIC(apic, now: now)
    }
}

// MARK: IOAPIC

private let ioapicWritable: UInt64 = 0xFFFE_0000_0001_AFFF
private let remoteIRR: UInt64 = 1 << 14
private let levelBit: UInt64 = 1 << 15
private let maskBit: UInt64 = 1 << 16

private func checkMessage(_ m: InterruptMessage, pin: Int, _ io: IOAPIC, _ what: String) {
    let e = io.entry(pin)
    check(e & maskBit == 0, "ioapic: \(what) sent a message for masked pin \(pin) (entry \(hex(e)))")
    check(m.vector == UInt8(truncatingIfNeeded: e) && m.levelTriggered == (e & levelBit != 0),
          "ioapic: \(what) sent \(m) for pin \(pin) with entry \(hex(e))")
    check(m.destination < 1 << 15, "ioapic: destination \(hex(m.destination))")
    check((m.msi.address & 0xFFFF_FFFF) >> 20 == 0xFEE, "ioapic: MSI address \(hex(m.msi.address))")
}

private func fuzzIOAPIC(_ r: inout Reader) {
    var io = IOAPIC()
    var lines = [Bool](repeating: false, count: IOAPIC.pins)
    let apics = [LocalAPIC(apicID: 0, bootProcessor: true), LocalAPIC(apicID: 1)]
    while !r.done {
        let before = io
        let op = r.u8()
        switch op % 6 {
        case 0, 1:
            let offset: UInt64 = switch r.u8() % 8 {
            case 0, 1, 2: IOAPIC.windowOffset
            case 3, 4: IOAPIC.selectOffset
            case 5, 6: UInt64(r.u8())
            default: r.u64()
            }
            if op % 6 == 0 {
                let v = io.read(offset)
                let select = io.select
                var expected: UInt32 = 0
                if offset == IOAPIC.selectOffset {
                    expected = select
                } else if offset == IOAPIC.windowOffset {
                    switch select {
                    case 0, 2: expected = UInt32(io.id) << 24
                    case 1: expected = IOAPIC.versionValue
                    case 0x10..<0x40:
                        expected = UInt32(truncatingIfNeeded: io.entry(Int(select - 0x10) / 2) >> (select & 1 == 0 ? 0 : 32))
                    default: expected = 0
                    }
                }
                check(v == expected,
                      "ioapic: read at \(hex(offset)) with IOREGSEL \(hex(select)) gave \(hex(v)), expected \(hex(expected))")
            } else {
                let value = r.value32(op >> 4)
                let select = io.select
                let sent = io.write(offset, value)
                if offset == IOAPIC.windowOffset, (0x10..<0x40).contains(select) {
                    let pin = Int(select - 0x10) / 2
                    check(sent.count <= 1, "ioapic: one write sent \(sent.count) messages")
                    for m in sent {
                        checkMessage(m, pin: pin, io, "a write")
                        check(io.entry(pin) & remoteIRR != 0 && before.entry(pin) & remoteIRR == 0,
                              "ioapic: a write sent for pin \(pin) without remote IRR")
                    }
                    let shift: UInt64 = select & 1 == 0 ? 0 : 32
                    let mask = (ioapicWritable >> shift) & 0xFFFF_FFFF
                    check((io.entry(pin) >> shift) & mask == UInt64(value) & mask,
                          "ioapic: entry \(pin) is \(hex(io.entry(pin))) after writing \(hex(value))")
                } else {
                    check(sent.isEmpty, "ioapic: a write at \(hex(offset)) (IOREGSEL \(hex(select))) sent \(sent)")
                }
                if offset == IOAPIC.selectOffset { check(io.select == value & 0xFF, "ioapic: IOREGSEL \(hex(io.select))") }
            }
        case 2, 3:
            let pin = r.u8() & 0x80 != 0 ? Int(truncatingIfNeeded: r.u64()) : Int(r.u8() % 32)
            let level = r.bool()
            let sent = io.setLine(pin, level: level)
            guard pin >= 0 && pin < IOAPIC.pins else {
                check(sent.isEmpty && io == before, "ioapic: setLine(\(pin)) out of range did something")
                continue
            }
            let e = before.entry(pin)
            let activeLow = e & (1 << 13) != 0
            let wasAsserted = lines[pin] != activeLow, isAsserted = level != activeLow
            lines[pin] = level
            check(sent.count <= 1, "ioapic: setLine sent \(sent.count) messages")
            for m in sent { checkMessage(m, pin: pin, io, "setLine(\(pin), \(level))") }
            if e & levelBit == 0 {
                let rising = isAsserted && !wasAsserted && e & maskBit == 0
                check(sent.count == (rising ? 1 : 0),
                      "ioapic: edge pin \(pin) sent \(sent.count) messages (asserted \(wasAsserted) -> \(isAsserted), entry \(hex(e)))")
            } else {
                let due = isAsserted && e & maskBit == 0 && e & remoteIRR == 0
                check(sent.count == (due ? 1 : 0),
                      "ioapic: level pin \(pin) sent \(sent.count) messages (asserted \(isAsserted), entry \(hex(e)))")
            }
        case 4:
            let vector = r.u8()
            let sent = io.endOfInterrupt(vector: vector)
            for m in sent {
                check(m.vector == vector && m.levelTriggered, "ioapic: EOI of \(vector) sent \(m)")
                let unmasked = (0..<IOAPIC.pins).filter { io.entry($0) & maskBit == 0 }
                check(unmasked.contains { UInt8(truncatingIfNeeded: io.entry($0)) == vector },
                      "ioapic: EOI sent for vector \(vector) without an unmasked entry")
            }
            check(sent.count <= IOAPIC.pins, "ioapic: EOI sent \(sent.count) messages")
            for pin in 0..<IOAPIC.pins
            where UInt8(truncatingIfNeeded: io.entry(pin)) == vector && io.entry(pin) & remoteIRR != 0 {
                check(lines[pin] != (io.entry(pin) & (1 << 13) != 0) && io.entry(pin) & maskBit == 0,
                      "ioapic: pin \(pin) still awaits an EOI of \(vector) though its line is not asserted")
            }
        default:
            var direct = Set<Int>()
            let bits = r.u32()
            for pin in 0..<32 where bits & (1 << UInt32(pin)) != 0 { direct.insert(pin) }
            if r.bool() { direct.insert(Int(truncatingIfNeeded: r.u64())) }
            let routes = io.routes(directPins: direct)
            let expected = (0..<IOAPIC.pins).filter { pin in
                let e = io.entry(pin)
                return UInt8(truncatingIfNeeded: e) >= 16 && (e & levelBit != 0 || (direct.contains(pin) && e & maskBit == 0))
            }
            check(routes.map(\.pin) == expected, "ioapic: routes for pins \(routes.map(\.pin)), expected \(expected)")
            for route in routes {
                check(route.message.vector == UInt8(truncatingIfNeeded: io.entry(route.pin)), "ioapic: route \(route)")
                let targets = route.message.targets(in: apics)
                check(targets.allSatisfy { $0 >= 0 && $0 < apics.count }, "ioapic: targets \(targets)")
            }
        }
        check(io.select <= 0xFF && io.id <= 0x0F, "ioapic: IOREGSEL \(hex(io.select)), ID \(io.id)")
        for pin in 0..<IOAPIC.pins {
            let e = io.entry(pin)
            check(e & ~(ioapicWritable | remoteIRR) == 0, "ioapic: entry \(pin) has read-only bits set: \(hex(e))")
            check(e & remoteIRR == 0 || e & levelBit != 0, "ioapic: edge entry \(pin) with remote IRR: \(hex(e))")
        }
    }
}

// MARK: 8259 pair

private func fuzzPIC(_ r: inout Reader) {
    var pair = PICPair()
    var polling = [false, false]   // OCW3's poll command given, per chip
    while !r.done {
        let before = pair
        let op = r.u8()
        let chip: PICPair.Chip = op & 0x80 != 0 ? .slave : .master
        let c = chip == .master ? 0 : 1
        let chipBefore = chip == .master ? before.master : before.slave
        switch op % 5 {
        case 0, 1:
            let offset: UInt64 = switch r.u8() % 8 {
            case 0, 1, 2: 0
            case 3, 4, 5: 1
            case 6: UInt64(r.u8())
            default: r.u64()
            }
            if op % 5 == 0 {
                let v = pair.read(chip, offset)
                if polling[c] {
                    polling[c] = false
                    if v != 0 {
                        let line = Int(v & 7)
                        check(v & 0x78 == 0 && v & 0x80 != 0, "pic: poll read \(hex(v))")
                        check((chipBefore.requested & ~chipBefore.masked) & (1 << line) != 0,
                              "pic: poll gave line \(line), not an unmasked request "
                              + "(IRR \(hex(chipBefore.requested)), IMR \(hex(chipBefore.masked)))")
                    }
                } else {
                    check(v == chipBefore.read(offset) && pair == before,
                          "pic: read of \(chip) at \(hex(offset)) gave \(hex(v)) or changed the pair")
                }
            } else {
                let value = r.u8()
                pair.write(chip, offset, value)
                if offset == 0 {
                    if value & 0x10 != 0 { polling[c] = false }
                    else if value & 0x08 != 0 && value & 0x04 != 0 { polling[c] = true }
                }
            }
        case 2:
            let value = r.u8()
            pair.writeELCR(chip, value)
            check(pair.readELCR(chip) == value & (chip == .master ? 0xF8 : 0xDE),
                  "pic: ELCR \(hex(pair.readELCR(chip))) after writing \(hex(value))")
        case 3:
            let irq = r.u8() & 0x40 != 0 ? Int(truncatingIfNeeded: r.u64()) : Int(r.u8() % 20)
            let level = r.bool()
            pair.setLine(irq, level: level)
            if !(0..<16).contains(irq) || irq == PICPair.cascadeLine {
                check(pair == before, "pic: setLine(\(irq)) changed the pair")
            }
        default:
            let vector = pair.acknowledge()
            let m = before.master, s = before.slave
            if !before.output {
                check(vector == m.vectorBase | 7 && pair == before,
                      "pic: acknowledge without INTR gave \(hex(vector)) or changed the pair")
            } else {
                let line = Int(vector & 7)
                let fromMaster = vector & 0xF8 == m.vectorBase && line != PICPair.cascadeLine
                    && (m.requested & ~m.masked) & (1 << line) != 0
                let fromSlave = vector & 0xF8 == s.vectorBase && (line == 7 || (s.requested & ~s.masked) & (1 << line) != 0)
                    && m.requested & (1 << PICPair.cascadeLine) != 0
                check(fromMaster || fromSlave,
                      "pic: acknowledge gave \(hex(vector)): master IRR \(hex(m.requested)) IMR \(hex(m.masked)) base "
                      + "\(hex(m.vectorBase)), slave IRR \(hex(s.requested)) IMR \(hex(s.masked)) base \(hex(s.vectorBase))")
            }
        }
        check(pair.readELCR(.master) & 0x07 == 0 && pair.readELCR(.slave) & 0x21 == 0,
              "pic: IRQs 0-2, 8 or 13 level-triggered (ELCR \(hex(pair.readELCR(.master))), \(hex(pair.readELCR(.slave))))")
        check(pair.master.vectorBase & 7 == 0 && pair.slave.vectorBase & 7 == 0,
              "pic: vector bases \(pair.master.vectorBase), \(pair.slave.vectorBase)")
    }
}

// MARK: Entry

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    if !reporting {
        reporting = true
        atexit { reportInputs() }
    }
    runFuzzInput(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

private func runFuzzInput(_ input: [UInt8]) {
    var r = Reader(bytes: input)
    let target = Int(r.u8()) % targetNames.count
    inputsPerTarget[target] += 1
    events.removeAll(keepingCapacity: true)
    switch targetNames[target] {
    case "serial": fuzzSerial(&r)
    case "i8042":
        fuzzWriteOnly(&r, "i8042", I8042(onReset: { events.append(.reset) }), window: 8) { a in
            a.offset == I8042.commandOffset && UInt8(truncatingIfNeeded: a.value) == 0xFE ? [.reset] : []
        }
    case "acpi-power":
        let s5 = r.u8() & 7, resetValue = r.u8()
        let device = ACPIPowerDevice(s5SleepType: s5, resetValue: resetValue,
                                     onPowerOff: { events.append(.powerOff) }, onReset: { events.append(.reset) })
        fuzzWriteOnly(&r, "acpi-power", device, window: 3) { a in
            let v = UInt8(truncatingIfNeeded: a.value)
            switch a.offset {
            case 0: return v & 0x20 != 0 && (v >> 2) & 7 == s5 ? [.powerOff] : []
            case 2: return v == resetValue ? [.reset] : []
            default: return []
            }
        }
    case "boot-timer":
        fuzzWriteOnly(&r, "boot-timer", BootTimer(onMarker: { events.append(.marker) }), window: 8) { a in
            a.offset == 0 && UInt8(truncatingIfNeeded: a.value) == 123 ? [.marker] : []
        }
    case "fw-cfg": fuzzFirmwareConfig(&r)
    case "debug-exit":
        fuzzWriteOnly(&r, "debug-exit", DebugExitDevice(onExit: { events.append(.exit($0)) }), window: 4) { a in
            let status = DebugExitDevice.exitStatus(forValue: a.value)
            check(status & 1 == 1 && status >= 0 && status <= 0xFF, "debug-exit: exit status \(status) for \(hex(a.value))")
            return [.exit(a.value)]
        }
    case "scratch":
        let register = TestScratchRegister()
        fuzzByteDevice(&r, "scratch", devices: [register.window(), register.window()], size: 4)
    case "flush-page":
        fuzzWriteOnly(&r, "flush-page", TestFlushPage(flush: { events.append(.flush($0)) }), window: 4) { a in
            a.offset == 0 && a.width == 4 ? [.flush(a.value & 0xFFFF_FFFF)] : []
        }
    case "irq-lines":
        fuzzWriteOnly(&r, "irq-lines", TestInterruptLines(setLine: { events.append(.irq($0, $1)) }), window: 32) { a in
            a.offset < 24 ? [.irq(UInt32(a.offset), UInt8(truncatingIfNeeded: a.value) != 0)] : []
        }
    case "device-memory": fuzzByteDevice(&r, "device-memory", devices: [TestDeviceMemory()], size: TestDeviceMemory.size)
    case "null": fuzzWriteOnly(&r, "null", NullDevice(), window: 8) { _ in [] }
    case "bus": fuzzBus(&r)
    case "local-apic": fuzzLocalAPIC(&r)
    case "ioapic": fuzzIOAPIC(&r)
    default: fuzzPIC(&r)
    }
}
