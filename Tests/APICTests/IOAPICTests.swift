import Testing
@testable import APIC

@Suite struct IOAPICTests {
    /// Programs redirection entry `pin` through IOREGSEL/IOWIN, as a guest does.
    static func program(_ io: inout IOAPIC, pin: Int, low: UInt32, high: UInt32 = 0) -> [InterruptMessage] {
        _ = io.write(IOAPIC.selectOffset, 0x10 + 2 * UInt32(pin) + 1)
        _ = io.write(IOAPIC.windowOffset, high)
        _ = io.write(IOAPIC.selectOffset, 0x10 + 2 * UInt32(pin))
        return io.write(IOAPIC.windowOffset, low)
    }

    static func readEntry(_ io: inout IOAPIC, pin: Int) -> UInt64 {
        _ = io.write(IOAPIC.selectOffset, 0x10 + 2 * UInt32(pin))
        let low = io.read(IOAPIC.windowOffset)
        _ = io.write(IOAPIC.selectOffset, 0x10 + 2 * UInt32(pin) + 1)
        return UInt64(io.read(IOAPIC.windowOffset)) << 32 | UInt64(low)
    }

    @Test func identificationRegisters() {
        var io = IOAPIC()
        _ = io.write(IOAPIC.selectOffset, 1)
        #expect(io.read(IOAPIC.windowOffset) == 0x0017_0011)
        _ = io.write(IOAPIC.selectOffset, 0)
        _ = io.write(IOAPIC.windowOffset, 0x0200_0000)
        #expect(io.read(IOAPIC.windowOffset) == 0x0200_0000)
        #expect(io.read(IOAPIC.selectOffset) == 0)
        // Entries start masked; an index past the table reads 0.
        #expect(Self.readEntry(&io, pin: 23) == 1 << 16)
        _ = io.write(IOAPIC.selectOffset, 0x10 + 48)
        #expect(io.read(IOAPIC.windowOffset) == 0)
    }

    @Test func anEdgeEntrySendsOnTheRisingEdgeOnlyAndNotWhileMasked() {
        var io = IOAPIC()
        #expect(io.setLine(4, level: true) == [])                    // masked
        _ = io.setLine(4, level: false)
        #expect(Self.program(&io, pin: 4, low: 0x24, high: 0x0100_0000) == [])
        let sent = io.setLine(4, level: true)
        #expect(sent == [InterruptMessage(vector: 0x24, deliveryMode: .fixed, logicalDestination: false,
                                          levelTriggered: false, destination: 1)])
        #expect(io.setLine(4, level: true) == [])                    // no edge
        _ = io.setLine(4, level: false)
        #expect(io.setLine(4, level: true).count == 1)
        #expect(io.setLine(99, level: true) == [])                   // no such pin
    }

    @Test func aLevelEntrySendsOnceUntilTheEOIAndAgainIfStillAsserted() {
        var io = IOAPIC()
        #expect(io.setLine(10, level: true) == [])                   // masked; and active low: high is idle
        #expect(Self.program(&io, pin: 10, low: 0xA000 | 0x31) == [])  // level, active low, vector 0x31
        let first = io.setLine(10, level: false)
        #expect(first.map(\.vector) == [0x31] && first[0].levelTriggered)
        #expect(Self.readEntry(&io, pin: 10) & (1 << 14) != 0)       // remote IRR
        #expect(io.setLine(10, level: true) == [])
        #expect(io.setLine(10, level: false) == [])                  // still awaiting the EOI
        #expect(io.endOfInterrupt(vector: 0x31).map(\.vector) == [0x31])   // line still asserted: again
        _ = io.setLine(10, level: true)                              // the device is served
        #expect(io.endOfInterrupt(vector: 0x31) == [])
        #expect(Self.readEntry(&io, pin: 10) & (1 << 14) == 0)
        #expect(io.endOfInterrupt(vector: 0x55) == [])               // another vector: nothing
    }

    @Test func unmaskingAnAssertedLevelEntrySendsAndReadOnlyBitsStay() {
        var io = IOAPIC()
        _ = Self.program(&io, pin: 5, low: 0x1_8040)                 // level, masked
        #expect(io.setLine(5, level: true) == [])
        let sent = Self.program(&io, pin: 5, low: 0x8040)            // unmask
        #expect(sent.map(\.vector) == [0x40])
        // The guest cannot clear remote IRR or set delivery status by writing them.
        _ = Self.program(&io, pin: 5, low: 0x8040 & ~UInt32(1 << 14) | (1 << 12))
        let e = Self.readEntry(&io, pin: 5)
        #expect(e & (1 << 14) != 0 && e & (1 << 12) == 0)
        // Switching the entry to edge drops its remote IRR.
        _ = Self.program(&io, pin: 5, low: 0x0040)
        #expect(Self.readEntry(&io, pin: 5) & (1 << 14) == 0)
    }

    /// `split` mode's routes: every level entry with a real vector, masked or not (a masked
    /// entry may still have one in service), and an edge entry only where its device
    /// signals KVM directly and the entry is unmasked.
    @Test func routesListLevelEntriesAndUnmaskedDirectEdgeEntries() {
        var io = IOAPIC()
        #expect(io.routes().isEmpty)
        _ = Self.program(&io, pin: 4, low: 0x24)                        // edge
        _ = Self.program(&io, pin: 9, low: 0x0001_8029, high: 0x0300_0000)  // level, masked
        _ = Self.program(&io, pin: 14, low: 0x0000_8931, high: 0x0200_0000) // level, logical, lowest priority
        _ = Self.program(&io, pin: 15, low: 0x0000_8005)                // level, but vector 5
        let routes = io.routes()
        #expect(routes.map(\.pin) == [9, 14])
        #expect(routes[0].message.msi.address == 0xFEE0_3000)
        #expect(routes[0].message.msi.data == 0xC029)
        #expect(routes[1].message.msi.address == 0xFEE0_2004)
        #expect(routes[1].message.msi.data == 0xC131)
        _ = Self.program(&io, pin: 16, low: 0x0001_0040)                // edge, masked
        #expect(io.routes(directPins: [4, 16]).map(\.pin) == [4, 9, 14])
        #expect(io.routes(directPins: [4, 16])[0].message.msi.data == 0x0024)
        _ = Self.program(&io, pin: 16, low: 0x0000_0040, high: 0x0100_0000)  // unmasked
        #expect(io.routes(directPins: [4, 16]).map(\.pin) == [4, 9, 14, 16])
        #expect(io.routes(directPins: [4, 16])[3].message.msi.address == 0xFEE0_1000)
        #expect(io.routes(directPins: [16]).map(\.pin) == [9, 14, 16])
    }

    @Test func messagesReachTheirAPICsAndEncodeAsMSIs() {
        var apics = (0..<3).map { i -> LocalAPIC in
            var a = LocalAPIC(apicID: UInt8(i))
            _ = a.write(LocalAPIC.Register.spuriousVector, 0x1FF, at: 0)
            _ = a.write(LocalAPIC.Register.logicalDestination, UInt32(1 << i) << 24, at: 0)
            return a
        }
        let physical = InterruptMessage(vector: 0x41, deliveryMode: .fixed, logicalDestination: false,
                                        levelTriggered: false, destination: 2)
        #expect(physical.targets(in: apics) == [2])
        #expect(physical.msi.address == 0xFEE0_2000 && physical.msi.data == 0x41)
        _ = apics[0].write(LocalAPIC.Register.taskPriority, 0x20, at: 0)
        let lowest = InterruptMessage(vector: 0x41, deliveryMode: .lowestPriority, logicalDestination: true,
                                      levelTriggered: true, destination: 0x03)
        #expect(lowest.targets(in: apics) == [1])
        #expect(lowest.msi.address == 0xFEE0_3004 && lowest.msi.data == 0xC141)
    }

    /// An entry's extended destination ID (bits 55:49, KVM's MSI_EXT_DEST_ID) makes a 15-bit
    /// destination, which the MSI carries above bit 8 in its upper address word (KVM's
    /// 32-bit APIC IDs); Kite's xAPICs see the low 8 bits only.
    @Test func extendedDestinationIDsReachAPICsAbove255() {
        var io = IOAPIC()
        // Destination 0x12C (300): 0x2C in bits 63:56, 0x01 in bits 55:49.
        _ = Self.program(&io, pin: 3, low: 0x0000_0050, high: 0x2C02_0000)
        #expect(Self.readEntry(&io, pin: 3) >> 32 == 0x2C02_0000)
        let sent = io.setLine(3, level: true)
        #expect(sent.map(\.destination) == [300])
        #expect(sent.first?.msi.address == 0x0000_0100_FEE2_C000)
        #expect(sent.first?.msi.data == 0x50)
        // Bit 48 stays reserved.
        _ = Self.program(&io, pin: 4, low: 0x0001_0051, high: 0x0001_0000)
        #expect(Self.readEntry(&io, pin: 4) >> 32 == 0)
    }
}
