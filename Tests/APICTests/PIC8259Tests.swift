import Testing
@testable import APIC

/// The two PICs initialized as Linux and firmware do: master vectors 0x20-0x27, slave
/// 0x28-0x2F on the master's line 2, 8086 mode, every line unmasked.
func initializedPICs(icw4: UInt8 = 0x01) -> PICPair {
    var p = PICPair()
    for (chip, base, icw3) in [(PICPair.Chip.master, UInt8(0x20), UInt8(0x04)), (.slave, 0x28, 0x02)] {
        p.write(chip, 0, 0x11)      // ICW1: edge, cascade, ICW4 follows
        p.write(chip, 1, base)      // ICW2
        p.write(chip, 1, icw3)      // ICW3
        p.write(chip, 1, icw4)      // ICW4
        p.write(chip, 1, 0x00)      // OCW1: nothing masked
    }
    return p
}

let nonSpecificEOI: UInt8 = 0x20

@Suite struct PIC8259Tests {
    @Test func anEdgeIsTakenOnceWithItsVectorAndStaysInServiceUntilEOI() {
        var p = initializedPICs()
        #expect(!p.output)
        p.setLine(4, level: true)
        #expect(p.output)
        #expect(p.acknowledge() == 0x24)
        #expect(p.master.inService == 0x10 && p.master.requested == 0)
        #expect(!p.output)
        p.setLine(4, level: true)          // still high: no new edge
        #expect(!p.output && p.master.requested == 0)
        p.setLine(4, level: false)
        p.setLine(4, level: true)          // a new edge, held back while IRQ 4 is in service
        #expect(!p.output && p.master.requested == 0x10)
        p.write(.master, 0, nonSpecificEOI)
        #expect(p.master.inService == 0 && p.output)
        #expect(p.acknowledge() == 0x24)
    }

    @Test func aLevelTriggeredLineAsksAgainAfterEOIWhileItIsHigh() {
        var p = initializedPICs()
        p.writeELCR(.master, 0x20)         // IRQ 5 level-triggered
        #expect(p.readELCR(.master) == 0x20)
        p.setLine(5, level: true)
        #expect(p.acknowledge() == 0x25)
        #expect(!p.output)                 // in service
        p.write(.master, 0, nonSpecificEOI)
        #expect(p.output)                  // still high
        #expect(p.acknowledge() == 0x25)
        p.setLine(5, level: false)
        p.write(.master, 0, nonSpecificEOI)
        #expect(!p.output && p.master.requested == 0)
    }

    @Test func theELCRKeepsTheTimerKeyboardCascadeRTCAndFPULinesEdgeTriggered() {
        var p = initializedPICs()
        p.writeELCR(.master, 0xFF)
        p.writeELCR(.slave, 0xFF)
        #expect(p.readELCR(.master) == 0xF8)
        #expect(p.readELCR(.slave) == 0xDE)
    }

    @Test func higherPrioritiesNestAndLowerOnesWait() {
        var p = initializedPICs()
        p.setLine(3, level: true)
        p.setLine(1, level: true)
        #expect(p.acknowledge() == 0x21)   // IRQ 1 before IRQ 3
        #expect(!p.output)                 // IRQ 3 waits for IRQ 1's EOI
        p.setLine(0, level: true)
        #expect(p.output)                  // IRQ 0 is above IRQ 1: it nests
        #expect(p.acknowledge() == 0x20)
        #expect(p.master.inService == 0x03)
        p.write(.master, 0, nonSpecificEOI) // ends IRQ 0, the highest in service
        #expect(p.master.inService == 0x02 && !p.output)
        p.write(.master, 0, 0x61)          // specific EOI for IRQ 1
        #expect(p.master.inService == 0 && p.output)
        #expect(p.acknowledge() == 0x23)
    }

    @Test func aMaskedRequestWaitsAndARequestGoneBeforeINTAIsSpuriousIRQ7() {
        var p = initializedPICs()
        p.write(.master, 1, 0x10)          // mask IRQ 4
        p.setLine(4, level: true)
        #expect(!p.output && p.master.requested == 0x10)
        p.write(.master, 1, 0x00)
        #expect(p.output)
        p.write(.master, 1, 0x10)          // masked again before the processor's INTA
        #expect(!p.output)
        #expect(p.acknowledge() == 0x27)   // spurious: IRQ 7's vector, nothing in service
        #expect(p.master.inService == 0)
    }

    @Test func slaveLinesCascadeThroughTheMastersLine2() {
        var p = initializedPICs()
        p.setLine(10, level: true)
        #expect(p.output)
        #expect(p.acknowledge() == 0x2A)
        #expect(p.master.inService == 0x04 && p.slave.inService == 0x04)
        p.setLine(9, level: true)          // higher than 10 on the slave, but line 2 is in service
        #expect(!p.output)
        p.write(.slave, 0, nonSpecificEOI)
        p.write(.master, 0, nonSpecificEOI)
        #expect(p.output)
        #expect(p.acknowledge() == 0x29)
        let before = p
        p.setLine(2, level: true)          // the cascade is not a device line
        #expect(p == before)
    }

    @Test func specialFullyNestedModeLetsAHigherSlaveRequestThroughLine2InService() {
        var p = initializedPICs(icw4: 0x11)   // 8086 mode, special fully nested
        p.setLine(10, level: true)
        #expect(p.acknowledge() == 0x2A)
        p.setLine(9, level: true)
        #expect(p.output)
        #expect(p.acknowledge() == 0x29)
    }

    @Test func automaticEOILeavesNothingInService() {
        var p = initializedPICs(icw4: 0x03)
        p.setLine(6, level: true)
        #expect(p.acknowledge() == 0x26)
        #expect(p.master.inService == 0)
        p.setLine(6, level: false)
        p.setLine(6, level: true)
        #expect(p.output)
    }

    @Test func rotationMakesTheLineJustServedTheLowest() {
        var p = initializedPICs()
        p.setLine(3, level: true)
        #expect(p.acknowledge() == 0x23)
        p.write(.master, 0, 0xA0)          // rotate on non-specific EOI
        p.setLine(3, level: false)
        p.setLine(3, level: true)
        p.setLine(5, level: true)
        #expect(p.acknowledge() == 0x25)   // IRQ 4 is now the highest, 3 the lowest
        p.write(.master, 0, 0xC0 | 2)      // set priority: IRQ 2 lowest, so IRQ 3 highest
        p.write(.master, 0, 0x60 | 5)      // specific EOI for IRQ 5
        #expect(p.acknowledge() == 0x23)
    }

    @Test func ocw3SelectsWhatTheCommandPortReadsAndPollAcknowledges() {
        var p = initializedPICs()
        p.setLine(7, level: true)
        p.setLine(1, level: true)
        #expect(p.read(.master, 0) == 0x82)   // IRR by default
        p.write(.master, 0, 0x0B)             // OCW3: read ISR
        #expect(p.read(.master, 0) == 0)
        p.write(.master, 0, 0x0C)             // OCW3: poll
        #expect(p.read(.master, 0) == 0x81)   // IRQ 1, taken
        #expect(p.read(.master, 0) == 0x02)   // ISR again (the poll was one read)
        #expect(p.read(.master, 1) == 0x00)   // the mask
        p.write(.master, 0, 0x0C)
        #expect(p.read(.master, 1) == 0)      // IRQ 7 waits below IRQ 1 in service: nothing
    }

    @Test func icw1RestartsInitializationAndClearsMaskAndInService() {
        var p = initializedPICs()
        p.write(.master, 1, 0xFF)
        p.setLine(4, level: true)
        p.write(.master, 1, 0x00)
        _ = p.acknowledge()
        p.write(.master, 0, 0x13)             // ICW1: single, ICW4 follows
        p.write(.master, 1, 0x40)             // ICW2
        p.write(.master, 1, 0x01)             // ICW4 (no ICW3 in single mode)
        #expect(p.master.inService == 0 && p.master.masked == 0 && p.master.vectorBase == 0x40)
        p.write(.master, 1, 0xFE)             // the next data write is OCW1 again
        #expect(p.master.masked == 0xFE)
    }
}
