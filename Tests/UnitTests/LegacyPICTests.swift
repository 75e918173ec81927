import APIC
import Synchronization
import Testing
@testable import VMM

/// The PICs' output as the boot vCPU learns it: from the device thread's lines and any
/// vCPU's port writes, each change numbered, the newest kept whatever order they arrive in.
@Suite struct LegacyPICTests {
    @Test func outputChangesAreNumberedAndReportedOnlyWhenTheOutputMoves() {
        let pic = LegacyPIC()
        #expect(pic.setLine(4, level: true)?.level == true)    // power-on state: nothing masked
        #expect(pic.setLine(4, level: false) == nil)           // the edge stays latched
        let (vector, change) = pic.acknowledge()
        #expect(vector == 4)                                   // no ICW2 yet: vector base 0
        #expect(change == LegacyPIC.OutputChange(level: false, sequence: 2))
        #expect(pic.setLine(2, level: true) == nil)            // the cascade is no device line
        #expect(pic.setLine(16, level: true) == nil)           // GSIs above 15 are the IOAPIC's only
        #expect(!pic.output)
    }

    @Test func thePortsDriveTheChipsAndReportWhatTheyChange() {
        let pic = LegacyPIC()
        let seen = Mutex<[LegacyPIC.OutputChange]>([])
        let devices = pic.makeDevices(changed: { c in seen.withLock { $0.append(c) } })
        devices.master.write(offset: 1, width: 1, value: 0xFF)  // OCW1: mask all
        _ = pic.setLine(3, level: true)
        #expect(seen.withLock { $0 }.isEmpty && !pic.output)
        devices.master.write(offset: 1, width: 1, value: 0xF7)  // unmask IRQ 3
        #expect(seen.withLock { $0 } == [LegacyPIC.OutputChange(level: true, sequence: 1)])
        #expect(devices.master.read(offset: 1, width: 1) == 0xF7)
        devices.edgeLevelControl.write(offset: 1, width: 1, value: 0xFF)
        #expect(devices.edgeLevelControl.read(offset: 1, width: 1) == 0xDE)
        devices.master.write(offset: 0, width: 1, value: 0x0C)  // OCW3: poll
        #expect(devices.master.read(offset: 0, width: 1) == 0x83)   // IRQ 3, acknowledged
        #expect(seen.withLock { $0 }.last == LegacyPIC.OutputChange(level: false, sequence: 2))
    }

    @Test func theBootVCPUKeepsTheNewestChangeWhateverOrderTheyArriveIn() {
        var state = UserspaceVCPUState(apic: LocalAPIC(apicID: 0, bootProcessor: true), started: true)
        state.record(LegacyPIC.OutputChange(level: true, sequence: 2))
        state.record(LegacyPIC.OutputChange(level: false, sequence: 1))   // older, late
        #expect(state.picOutput && state.externalInterruptPending)
        state.record(LegacyPIC.OutputChange(level: false, sequence: 3))
        #expect(!state.externalInterruptPending)
        // Halted with interrupts on, the PIC's request wakes it, but only through LINT0.
        state.record(LegacyPIC.OutputChange(level: true, sequence: 4))
        state.halted = true
        state.interruptsEnabledAtHalt = true
        #expect(state.canRun)
        _ = state.apic.write(LocalAPIC.Register.spuriousVector, 0x1FF, at: 0)
        _ = state.apic.write(LocalAPIC.Register.lvtLINT0, 0x0001_0700, at: 0)   // masked
        #expect(!state.externalInterruptPending && !state.canRun)
        state.interruptsEnabledAtHalt = false
        _ = state.apic.write(LocalAPIC.Register.lvtLINT0, 0x0000_0700, at: 0)
        #expect(!state.canRun)   // IF=0 at the halt: only an NMI ends it
    }
}
