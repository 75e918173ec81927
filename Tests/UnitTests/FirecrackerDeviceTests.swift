import Testing
import Synchronization
@testable import Devices
@testable import X86Boot

/// The devices `kite firecracker` adds: the i8042's keyboard (SendCtrlAltDel) and the MP
/// table (guests booted with acpi=off).
@Suite struct KeyboardControllerTests {
    final class Pulses: Sendable { let count = Atomic<Int>(0) }

    @Test func ctrlAltDeleteArrivesAsSet2ScanCodesOneInterruptPerByte() {
        let pulses = Pulses()
        let kbd = I8042(onReset: {}, keyboardInterrupt: { pulses.count.add(1, ordering: .relaxed) })
        #expect(kbd.read(offset: I8042.commandOffset, width: 1) & 1 == 0)   // nothing to read yet
        #expect(kbd.pressCtrlAltDelete())
        #expect(pulses.count.load(ordering: .relaxed) == 1)
        var bytes: [UInt8] = []
        while kbd.read(offset: I8042.commandOffset, width: 1) & 1 != 0 {
            bytes.append(UInt8(kbd.read(offset: I8042.dataOffset, width: 1)))
        }
        #expect(bytes == [0x14, 0x11, 0xE0, 0x71])
        #expect(pulses.count.load(ordering: .relaxed) == 4, "one interrupt for each byte the driver reads")
        // Four presses fill the 16-byte buffer; a fifth does not fit and pushes nothing.
        for _ in 0..<4 { #expect(kbd.pressCtrlAltDelete()) }
        #expect(!kbd.pressCtrlAltDelete())
    }

    @Test func controlRegisterOutputPortAndKeyboardAcknowledgements() {
        let pulses = Pulses()
        let kbd = I8042(onReset: {}, keyboardInterrupt: { pulses.count.add(1, ordering: .relaxed) })
        kbd.write(offset: I8042.commandOffset, width: 1, value: UInt64(I8042.readControl))
        #expect(kbd.read(offset: I8042.dataOffset, width: 1) == 0x05)      // interrupt enabled, POST passed
        kbd.write(offset: I8042.commandOffset, width: 1, value: UInt64(I8042.writeControl))
        #expect(kbd.read(offset: I8042.commandOffset, width: 1) & 0x08 != 0)   // waiting for the parameter
        kbd.write(offset: I8042.dataOffset, width: 1, value: 0x44)             // interrupt disabled
        kbd.write(offset: I8042.commandOffset, width: 1, value: UInt64(I8042.readControl))
        #expect(kbd.read(offset: I8042.dataOffset, width: 1) == 0x44)
        #expect(kbd.pressCtrlAltDelete())
        #expect(pulses.count.load(ordering: .relaxed) == 0, "the guest disabled the keyboard interrupt")
        kbd.write(offset: I8042.commandOffset, width: 1, value: UInt64(I8042.writeOutputPort))
        kbd.write(offset: I8042.dataOffset, width: 1, value: 0x01)
        kbd.write(offset: I8042.commandOffset, width: 1, value: UInt64(I8042.readOutputPort))
        #expect(kbd.read(offset: I8042.dataOffset, width: 1) == 0x01)
        kbd.write(offset: I8042.dataOffset, width: 1, value: 0xF2)             // a keyboard command
        #expect(kbd.read(offset: I8042.dataOffset, width: 1) == 0xFA)
    }

    @Test func withoutAKeyboardOnlyTheResetIsThere() {
        let kbd = I8042(onReset: {})
        #expect(!kbd.pressCtrlAltDelete())
        kbd.write(offset: I8042.commandOffset, width: 1, value: UInt64(I8042.readControl))
        #expect(kbd.read(offset: I8042.commandOffset, width: 1) == 0)
        #expect(kbd.read(offset: I8042.dataOffset, width: 1) == 0)
    }
}

@Suite struct MPTableTests {
    static func sum(_ bytes: ArraySlice<UInt8>) -> UInt8 { bytes.reduce(0, &+) }

    @Test func floatingPointerAndTableAreWellFormed() {
        let table = MPTable(apicIDs: [0, 1, 2, 3])
        let bytes = table.encoded()
        #expect(Array(bytes[0..<4]) == Array("_MP_".utf8))
        #expect(Self.sum(bytes[0..<16]) == 0)
        let tableAddress = UInt32(bytes[4]) | UInt32(bytes[5]) << 8 | UInt32(bytes[6]) << 16 | UInt32(bytes[7]) << 24
        #expect(UInt64(tableAddress) == MPTable.address + 16)
        #expect(Array(bytes[16..<20]) == Array("PCMP".utf8))
        let length = Int(bytes[20]) | Int(bytes[21]) << 8
        #expect(16 + length == bytes.count)
        #expect(Self.sum(bytes[16...]) == 0)
        let entries = Int(bytes[16 + 34]) | Int(bytes[16 + 35]) << 8
        #expect(entries == 4 + 1 + 1 + 24 + 2)   // CPUs, ISA bus, IOAPIC, 24 pins, LINT0 and LINT1
        // The first processor entry is the bootstrap processor, enabled.
        #expect(bytes[16 + 44] == 0 && bytes[16 + 44 + 3] == 0x03)
        #expect(bytes[16 + 44 + 20 + 3] == 0x01)
        #expect(bytes.count <= MPTable.room)
    }

    @Test func onlyEightBitAPICIDsFit() {
        #expect(MPTable(apicIDs: Array(0..<254)).isExpressible)
        #expect(!MPTable(apicIDs: [0, 300]).isExpressible)
        #expect(MPTable(apicIDs: Array(0..<254)).encoded().count <= MPTable.room)
    }
}
