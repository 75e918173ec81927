import Synchronization

// The devices QEMU offers to test kernels (kvm-unit-tests and the like), with QEMU's
// semantics, attached by `kite run --test-devices` only: a guest must not be able to end
// Kite with a status of its choosing or pull interrupt lines unless the user asked for it.

/// isa-debug-exit (QEMU's `-device isa-debug-exit,iobase=0xf4,iosize=4`): a write of V of
/// any width at any offset ends the machine with exit status (V << 1) | 1. Reads are zero.
public final class DebugExitDevice: BusDevice {
    private let onExit: @Sendable (UInt64) -> Void
    public init(onExit: @escaping @Sendable (UInt64) -> Void) { self.onExit = onExit }

    /// The process exit status for a written value, as QEMU's exit((V << 1) | 1) gives it.
    public static func exitStatus(forValue value: UInt64) -> Int32 { Int32(((value << 1) | 1) & 0xFF) }

    public func read(offset: UInt64, width: Int) -> UInt64 { 0 }
    public func write(offset: UInt64, width: Int, value: UInt64) { onExit(value) }
}

/// pc-testdev's scratch register: one 32-bit value that two windows share, port 0xe0
/// (accesses of any width, at the byte they address) and port 0xe8 (accesses split into
/// bytes). Bytes past the 4-byte register are dropped on writes and read as zero.
public final class TestScratchRegister: Sendable {
    private let value = Mutex<UInt32>(0)
    public init() {}

    /// A byte-granular window onto the register, as a bus device of length 4.
    public func window() -> any BusDevice { Window(register: self) }

    func read(offset: UInt64, width: Int) -> UInt64 {
        let v = value.withLock { $0 }
        var out: UInt64 = 0
        for i in 0..<inRange(offset, width, size: 4) {
            out |= UInt64((v >> (8 * UInt32(offset + UInt64(i)))) & 0xFF) << (8 * UInt64(i))
        }
        return out
    }

    func write(offset: UInt64, width: Int, value new: UInt64) {
        value.withLock { v in
            for i in 0..<inRange(offset, width, size: 4) {
                let shift = 8 * UInt32(offset + UInt64(i))
                let byte = UInt32(truncatingIfNeeded: new >> (8 * UInt64(i))) & 0xFF
                v = (v & ~(0xFF << shift)) | (byte << shift)
            }
        }
    }

    final class Window: BusDevice {
        let register: TestScratchRegister
        init(register: TestScratchRegister) { self.register = register }
        func read(offset: UInt64, width: Int) -> UInt64 { register.read(offset: offset, width: width) }
        func write(offset: UInt64, width: Int, value: UInt64) { register.write(offset: offset, width: width, value: value) }
    }
}

/// pc-testdev's interrupt lines (port 0x2000 + n, n < 24): a byte write sets ISA interrupt
/// line n to `value != 0` (the IOAPIC pin, and the PIC's for n < 16). Reads are zero.
public final class TestInterruptLines: BusDevice {
    public static let count = 24
    private let setLine: @Sendable (UInt32, Bool) -> Void
    public init(setLine: @escaping @Sendable (UInt32, Bool) -> Void) { self.setLine = setLine }

    public func read(offset: UInt64, width: Int) -> UInt64 { 0 }
    public func write(offset: UInt64, width: Int, value: UInt64) {
        // QEMU accepts only byte writes here; a wider write sets the line it starts at.
        guard offset < UInt64(Self.count) else { return }
        setLine(UInt32(offset), UInt8(truncatingIfNeeded: value) != 0)
    }
}

/// pc-testdev's "flush page" port (0xe4): a 32-bit write of a guest-physical address makes
/// KVM fault that page in again on its next access (the event-injection tests use it to
/// make a fault happen while an event is delivered). Other widths are ignored, as by QEMU.
public final class TestFlushPage: BusDevice {
    private let flush: @Sendable (UInt64) -> Void
    public init(flush: @escaping @Sendable (UInt64) -> Void) { self.flush = flush }
    public func read(offset: UInt64, width: Int) -> UInt64 { 0 }
    public func write(offset: UInt64, width: Int, value: UInt64) {
        if offset == 0 && width == 4 { flush(value & 0xFFFF_FFFF) }
    }
}

/// pc-testdev's 64 KiB of device memory at 0xff000000, for the instruction-emulation tests:
/// reads return what was written (little-endian), through MMIO exits. Accesses that run
/// past the end are cut at it.
public final class TestDeviceMemory: BusDevice {
    public static let size = 0x10000
    private let bytes = Mutex([UInt8](repeating: 0, count: TestDeviceMemory.size))
    public init() {}

    public func read(offset: UInt64, width: Int) -> UInt64 {
        bytes.withLock { b in
            var out: UInt64 = 0
            for i in 0..<inRange(offset, width, size: Self.size) {
                out |= UInt64(b[Int(offset) + i]) << (8 * UInt64(i))
            }
            return out
        }
    }

    public func write(offset: UInt64, width: Int, value: UInt64) {
        bytes.withLock { b in
            for i in 0..<inRange(offset, width, size: Self.size) {
                b[Int(offset) + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i)))
            }
        }
    }
}

/// How many of an access's bytes (at most 8) fall inside a register or buffer of `size` bytes.
func inRange(_ offset: UInt64, _ width: Int, size: Int) -> Int {
    offset < UInt64(size) ? min(max(width, 0), 8, size - Int(offset)) : 0
}
