import Testing
@testable import APIC

typealias R = LocalAPIC.Register

/// An APIC the way Linux leaves it: software-enabled, spurious vector 0xFF.
func enabledAPIC(id: UInt8 = 0) -> LocalAPIC {
    var a = LocalAPIC(apicID: id)
    _ = a.write(R.spuriousVector, 0x1FF, at: 0)
    return a
}

@Suite struct LocalAPICPriorityTests {
    @Test func theHighestRequestIsDeliveredAndMasksLowerClassesUntilItsEOI() {
        var a = enabledAPIC()
        let got1 = a.accept(vector: 0x31)
        #expect(got1)
        let got2 = a.accept(vector: 0x52)
        #expect(got2)
        #expect(a.deliverableVector == 0x52)
        let got3 = a.acknowledge()
        #expect(got3 == 0x52)
        #expect(a.isInService(0x52) && !a.isRequested(0x52))
        #expect(a.processorPriority == 0x50)
        #expect(a.deliverableVector == nil)            // class 3 is below the in-service class 5
        let got4 = a.accept(vector: 0x5F)
        #expect(got4)
        #expect(a.deliverableVector == nil)            // same class as in service: waits too
        let got5 = a.accept(vector: 0x61)
        #expect(got5)
        let got6 = a.acknowledge()
        #expect(got6 == 0x61)               // a higher class nests
        let got7 = a.write(R.endOfInterrupt, 0, at: 0)
        #expect(got7 == .noEffect)
        #expect(!a.isInService(0x61) && a.isInService(0x52))
        let got8 = a.write(R.endOfInterrupt, 0, at: 0)
        #expect(got8 == .noEffect)
        #expect(a.deliverableVector == 0x5F)
        let got9 = a.acknowledge()
        #expect(got9 == 0x5F)
        _ = a.write(R.endOfInterrupt, 0, at: 0)
        let got10 = a.acknowledge()
        #expect(got10 == 0x31)
    }

    @Test func taskPriorityHoldsBackItsClassAndBelow() {
        var a = enabledAPIC()
        _ = a.write(R.taskPriority, 0x40, at: 0)
        a.accept(vector: 0x45)
        #expect(a.deliverableVector == nil)
        #expect(a.read(R.processorPriority) == 0x40)
        a.accept(vector: 0x51)
        #expect(a.deliverableVector == 0x51)
        _ = a.write(R.taskPriority, 0x00, at: 0)
        #expect(a.deliverableVector == 0x51)
        let got11 = a.acknowledge()
        #expect(got11 == 0x51)
        _ = a.write(R.endOfInterrupt, 0, at: 0)
        let got12 = a.acknowledge()
        #expect(got12 == 0x45)
        // PPR takes the task priority whole when its class is not below the in-service one.
        _ = a.write(R.taskPriority, 0x47, at: 0)
        #expect(a.processorPriority == 0x47)
    }

    /// CR8 is TPR bits 7:4: a TPR write shows in CR8, a CR8 write clears bits 3:0.
    @Test func cr8IsTheTaskPrioritysClass() {
        var a = enabledAPIC()
        _ = a.write(R.taskPriority, 0x47, at: 0)
        #expect(a.cr8 == 4)
        a.setCR8(0xF)
        #expect(a.read(R.taskPriority) == 0xF0)
        a.accept(vector: 0xEF)
        #expect(a.deliverableVector == nil)
        a.setCR8(0x1D)   // only bits 3:0 count
        #expect(a.read(R.taskPriority) == 0xD0)
        #expect(a.deliverableVector == 0xEF)
    }

    /// LINT0 and LINT1 send what their LVT entries say: fixed, NMI (Linux sets LINT1 so),
    /// INIT; nothing while masked, after a software disable, or for ExtINT and SMI.
    @Test func localInterruptPinsFollowTheirLVTEntries() {
        var a = enabledAPIC()
        #expect(a.message(for: .lint0) == nil)           // masked since reset
        #expect(a.message(for: .lint1) == nil)
        _ = a.write(R.lvtLINT0, 0x0000_0035, at: 0)       // fixed, vector 0x35
        _ = a.write(R.lvtLINT1, 0x0000_0400, at: 0)       // NMI
        #expect(a.message(for: .lint0) == .interrupt(vector: 0x35, levelTriggered: false))
        #expect(a.message(for: .lint1) == .nmi)
        _ = a.write(R.lvtLINT0, 0x0000_0700, at: 0)       // ExtINT: the PIC's INTR, not a message
        #expect(a.message(for: .lint0) == nil)
        #expect(a.takesExternalInterrupts)
        _ = a.write(R.lvtLINT0, 0x0000_0500, at: 0)       // INIT
        #expect(a.message(for: .lint0) == .initialize)
        _ = a.write(R.lvtLINT0, 0x0000_0200, at: 0)       // SMI: unsupported
        #expect(a.message(for: .lint0) == nil)
        _ = a.write(R.lvtLINT1, 0x0001_0400, at: 0)       // NMI, masked
        #expect(a.message(for: .lint1) == nil)
        _ = a.write(R.lvtLINT1, 0x0000_0400, at: 0)
        _ = a.write(R.spuriousVector, 0x0FF, at: 0)       // software disable masks every LVT
        #expect(a.message(for: .lint1) == nil)
        #expect(a.read(R.lvtLINT1) == 0x0001_0400)
    }

    /// The boot processor's LINT0 starts as ExtINT, unmasked (virtual wire, as KVM and QEMU
    /// reset it), and INIT or a hardware disable and enable bring that back; another
    /// processor's starts masked. Masked or in another mode, LINT0 keeps the PIC out; a
    /// hardware-disabled APIC lets it through (LINT0 is then the processor's INTR pin).
    @Test func onlyTheBootProcessorsLINT0PassesThePICAtReset() {
        var boot = LocalAPIC(apicID: 0, bootProcessor: true)
        let other = LocalAPIC(apicID: 1)
        #expect(boot.read(R.lvtLINT0) == 0x0000_0700)
        #expect(other.read(R.lvtLINT0) == 0x0001_0000)
        #expect(boot.takesExternalInterrupts && !other.takesExternalInterrupts)
        _ = boot.write(R.spuriousVector, 0x1FF, at: 0)
        _ = boot.write(R.lvtLINT0, 0x0001_0700, at: 0)    // masked
        #expect(!boot.takesExternalInterrupts)
        _ = boot.write(R.lvtLINT0, 0x0000_0035, at: 0)    // fixed
        #expect(!boot.takesExternalInterrupts)
        boot.reset()                                      // INIT
        #expect(boot.read(R.lvtLINT0) == 0x0000_0700 && boot.takesExternalInterrupts)
        _ = boot.write(R.lvtLINT0, 0x0001_0700, at: 0)
        boot.setHardwareEnabled(false)
        #expect(boot.takesExternalInterrupts)
        boot.setHardwareEnabled(true)
        #expect(boot.read(R.lvtLINT0) == 0x0000_0700)
    }

    /// IA32_APIC_BASE's enable bit: hardware-disabled, the APIC takes nothing and matches no
    /// destination; enabled again, it is in its power-up state with its initial ID.
    @Test func hardwareDisableAndEnableReturnToPowerUpState() {
        var a = LocalAPIC(apicID: 3)
        _ = a.write(R.spuriousVector, 0x1FF, at: 0)
        _ = a.write(R.id, 0x0700_0000, at: 0)
        a.accept(vector: 0x40)
        a.setHardwareEnabled(false)
        #expect(!a.isHardwareEnabled)
        let tookWhileDisabled = a.accept(vector: 0x41)
        #expect(!tookWhileDisabled)
        #expect(!a.matches(destination: 3, logical: false) && !a.matches(destination: 0xFF, logical: false))
        #expect(a.deliverableVector == nil)
        a.setHardwareEnabled(true)
        #expect(a.isHardwareEnabled)
        #expect(a.apicID == 3)
        #expect(a.read(R.version) == LocalAPIC.versionValue)
        #expect(a.read(R.spuriousVector) == 0xFF)
        let tookSoftwareDisabled = a.accept(vector: 0x42)   // software-disabled, as at power-up
        #expect(!tookSoftwareDisabled)
        _ = a.write(R.spuriousVector, 0x1FF, at: 0)
        let took = a.accept(vector: 0x42)
        #expect(took)
        #expect(a.deliverableVector == 0x42)
    }

    @Test func aLevelTriggeredEOIIsForwardedAndAnEdgeOneIsNot() {
        var a = enabledAPIC()
        a.accept(vector: 0x60, levelTriggered: true)
        #expect(a.isLevelTriggered(0x60))
        #expect(a.read(R.triggerMode + 0x30) == 1)     // vector 0x60: TMR register 3, bit 0
        let got13 = a.acknowledge()
        #expect(got13 == 0x60)
        let got14 = a.write(R.endOfInterrupt, 0, at: 0)
        #expect(got14 == .levelEOI(vector: 0x60))
        // The TMR bit stays until the vector is accepted again (SDM 11.8.4), as
        // kvm-unit-tests' ioapic test reads it: the next edge-triggered one clears it.
        #expect(a.isLevelTriggered(0x60))
        a.accept(vector: 0x60)
        #expect(!a.isLevelTriggered(0x60))
        _ = a.acknowledge()
        let got15 = a.write(R.endOfInterrupt, 0, at: 0)
        #expect(got15 == .noEffect)
        // An EOI with nothing in service does nothing.
        let got16 = a.write(R.endOfInterrupt, 0, at: 0)
        #expect(got16 == .noEffect)
    }

    @Test func illegalVectorsAreRefusedAndLatchedInTheErrorStatus() {
        var a = enabledAPIC()
        _ = a.write(R.lvtError, 0xFE, at: 0)
        let got17 = a.accept(vector: 5)
        #expect(!got17)
        #expect(a.read(R.errorStatus) == 0)             // latched by the next ESR write
        _ = a.write(R.errorStatus, 0, at: 0)
        #expect(a.read(R.errorStatus) == LocalAPIC.receivedIllegalVector)
        #expect(a.isRequested(0xFE))                    // the error LVT fired
        _ = a.write(R.errorStatus, 0, at: 0)
        #expect(a.read(R.errorStatus) == 0)
    }

    /// Found with Fuzz/run-platform-fuzz.sh: an error LVT with an illegal vector raised the
    /// error interrupt from its own refusal without end (the vCPU spun under its lock).
    @Test func anIllegalErrorVectorIsLatchedOnceAndRaisesNothing() {
        var a = enabledAPIC()
        _ = a.write(R.lvtError, 0x05, at: 0)             // unmasked, vector 5
        #expect(a.read(R.lvtError) == 0x05)
        let accepted = a.accept(vector: 3)
        #expect(!accepted)
        let sent = a.write(R.commandLow, 0x0000_4003, at: 0)   // fixed IPI, vector 3
        #expect(sent == .noEffect)
        _ = a.write(R.lvtTimer, 0x07, at: 0)             // one-shot, vector 7
        _ = a.write(R.timerInitialCount, 10, at: 0)
        let fired = a.advance(to: 100)
        #expect(!fired)
        _ = a.write(R.errorStatus, 0, at: 0)
        #expect(a.read(R.errorStatus) == LocalAPIC.receivedIllegalVector | LocalAPIC.sendIllegalVector)
        #expect(!a.hasRequested)
    }

    @Test func aSoftwareDisabledAPICRefusesInterruptsAndKeepsItsLVTsMasked() {
        var a = LocalAPIC(apicID: 3)
        #expect(!a.isSoftwareEnabled)
        let got18 = a.accept(vector: 0x40)
        #expect(!got18)
        _ = a.write(R.lvtTimer, 0x20, at: 0)
        #expect(a.read(R.lvtTimer) == 0x1_0020)         // stays masked
        _ = a.write(R.spuriousVector, 0x1FF, at: 0)
        let got19 = a.accept(vector: 0x40)
        #expect(got19)
        _ = a.write(R.lvtLINT0, 0x700, at: 0)           // ExtINT, unmasked
        #expect(a.read(R.lvtLINT0) == 0x700)
        _ = a.write(R.spuriousVector, 0xFF, at: 0)      // disabling masks every LVT
        #expect(a.read(R.lvtLINT0) == 0x1_0700)
        #expect(a.isRequested(0x40))                    // what was requested is kept
    }

    @Test func vectorRegistersAreLaidOutAsInTheSDM() {
        var a = enabledAPIC(id: 7)
        a.accept(vector: 0x41)
        a.accept(vector: 0xFF)
        #expect(a.read(R.interruptRequest + 0x20) == 1 << 1)    // 0x41: register 2, bit 1
        #expect(a.read(R.interruptRequest + 0x70) == 1 << 31)   // 0xFF: register 7, bit 31
        #expect(a.read(R.id) == 7 << 24)
        #expect(a.read(R.version) == 0x0005_0014)
        _ = a.write(R.id, 9 << 24, at: 0)
        #expect(a.apicID == 9)
        _ = a.acknowledge()
        #expect(a.read(R.inService + 0x70) == 1 << 31)
        _ = a.write(R.lvtTimer, 0x2_00EF, at: 0)
        a.reset()
        #expect(a.apicID == 9 && !a.isRequested(0x41) && !a.isInService(0xFF) && !a.isSoftwareEnabled)
        #expect(a.read(R.lvtTimer) == 0x1_0000)
    }
}

@Suite struct LocalAPICTimerTests {
    @Test func divideConfigurationDecodesAsTheSDMTable() {
        var a = enabledAPIC()
        let expected: [UInt32: UInt64] = [0x0: 2, 0x1: 4, 0x2: 8, 0x3: 16, 0x8: 32, 0x9: 64, 0xA: 128, 0xB: 1]
        for (code, divisor) in expected {
            _ = a.write(R.timerDivide, code, at: 0)
            #expect(a.divisor == divisor, "divide code \(code)")
        }
    }

    @Test func oneShotCountsDownAndFiresOnce() {
        var a = enabledAPIC()
        _ = a.write(R.timerDivide, 0xB, at: 0)          // divide by 1
        _ = a.write(R.lvtTimer, 0xEC, at: 0)
        _ = a.write(R.timerInitialCount, 1000, at: 10_000)
        #expect(a.timerDeadline == 11_000)
        #expect(a.timerCurrentCount(at: 10_250) == 750)
        let got20 = a.advance(to: 10_999)
        #expect(!got20)
        let got21 = a.advance(to: 11_000)
        #expect(got21)
        #expect(a.isRequested(0xEC))
        #expect(a.timerDeadline == nil)
        #expect(a.timerCurrentCount(at: 12_000) == 0)
        let got22 = a.advance(to: 20_000)
        #expect(!got22)
        // Writing 0 stops it.
        _ = a.write(R.timerInitialCount, 5, at: 30_000)
        _ = a.write(R.timerInitialCount, 0, at: 30_001)
        #expect(a.timerDeadline == nil)
    }

    @Test func aMaskedTimerRunsButRequestsNothing() {
        var a = enabledAPIC()
        _ = a.write(R.lvtTimer, 0x1_00EC, at: 0)
        _ = a.write(R.timerInitialCount, 10, at: 0)
        let got23 = a.advance(to: 1_000)
        #expect(!got23)
        #expect(!a.isRequested(0xEC))
    }

    @Test func periodicRearmsAndMergesMissedPeriods() {
        var a = enabledAPIC()
        _ = a.write(R.timerDivide, 0x0, at: 0)          // divide by 2
        _ = a.write(R.lvtTimer, 0x2_00EC, at: 0)
        _ = a.write(R.timerInitialCount, 100, at: 0)
        #expect(a.timerDeadline == 200)
        let got24 = a.advance(to: 650)
        #expect(got24)                      // periods at 200, 400, 600: one request
        #expect(a.timerDeadline == 800)
        #expect(a.timerCurrentCount(at: 700) == 50)
        let got25 = a.acknowledge()
        #expect(got25 == 0xEC)
        let got26 = a.advance(to: 799)
        #expect(!got26)
        let got27 = a.advance(to: 800)
        #expect(got27)
        #expect(a.timerDeadline == 1000)
    }

    @Test func tscDeadlineModeFiresAtItsDeadlineAndIgnoresTheCount() {
        var a = enabledAPIC()
        _ = a.write(R.lvtTimer, 0x4_00EC, at: 0)
        #expect(a.timerMode == .tscDeadline)
        _ = a.write(R.timerInitialCount, 100, at: 0)
        #expect(a.timerDeadline == nil && a.read(R.timerInitialCount) == 0)
        a.setTSCDeadline(5_000)
        let got28 = a.advance(to: 4_999)
        #expect(!got28)
        let got29 = a.advance(to: 5_000)
        #expect(got29)
        #expect(a.timerDeadline == nil)
        a.setTSCDeadline(9_000)
        a.setTSCDeadline(0)                              // disarmed
        let got30 = a.advance(to: 10_000)
        #expect(!got30)
        // Leaving the mode stops an armed deadline; in another mode a deadline is ignored.
        a.setTSCDeadline(20_000)
        _ = a.write(R.lvtTimer, 0x00EC, at: 0)
        #expect(a.timerDeadline == nil)
        a.setTSCDeadline(30_000)
        #expect(a.timerDeadline == nil)
    }

    /// kvm-unit-tests' apic_change_mode: between one-shot and periodic the count runs on (and
    /// a periodic timer reloads from TMICT); into TSC-deadline mode it stops, TMICT cleared.
    @Test func switchingBetweenOneShotAndPeriodicKeepsTheCountRunning() {
        var a = enabledAPIC()
        _ = a.write(R.timerDivide, 0xB, at: 0)           // divide by 1: 1 tick per ns
        _ = a.write(R.lvtTimer, 0x00EC, at: 0)           // one-shot
        _ = a.write(R.timerInitialCount, 1000, at: 0)
        #expect(a.timerCurrentCount(at: 600) == 400)
        _ = a.write(R.lvtTimer, 0x2_00EC, at: 600)       // periodic, mid-count
        #expect(a.timerMode == .periodic && a.timerCurrentCount(at: 700) == 300)
        let fired = a.advance(to: 1000)
        #expect(fired && a.timerCurrentCount(at: 1100) == 900)   // reloaded from TMICT
        _ = a.write(R.lvtTimer, 0x00EC, at: 1100)        // back to one-shot: runs out at 2000
        #expect(a.timerCurrentCount(at: 1500) == 500)
        let firedAgain = a.advance(to: 2000)
        #expect(firedAgain && a.timerDeadline == nil && a.timerCurrentCount(at: 2100) == 0)
        _ = a.write(R.timerInitialCount, 1000, at: 3000)
        _ = a.write(R.lvtTimer, 0x4_00EC, at: 3100)      // TSC-deadline: stopped, TMICT 0
        #expect(a.timerDeadline == nil && a.read(R.timerInitialCount) == 0)
    }
}

@Suite struct InterProcessorInterruptTests {
    @Test func anICRWriteDecodesIntoAnIPI() {
        var a = enabledAPIC()
        _ = a.write(R.commandHigh, 0x0300_0000, at: 0)
        let effect = a.write(R.commandLow, 0x0000_40FB, at: 0)   // fixed, physical, assert, vector 0xFB
        guard case .interProcessor(let ipi) = effect else {
            Issue.record("expected an IPI, got \(effect)")
            return
        }
        #expect(ipi.vector == 0xFB && ipi.deliveryMode == .fixed && !ipi.logicalDestination)
        #expect(ipi.destination == 3 && ipi.shorthand == .none)
        #expect(ipi.message == .interrupt(vector: 0xFB, levelTriggered: false))
        #expect(a.read(R.commandLow) & (1 << 12) == 0)           // delivery status: idle
        #expect(a.read(R.commandHigh) == 0x0300_0000)
    }

    @Test func aFixedIPIWithAnIllegalVectorIsNotSent() {
        var a = enabledAPIC()
        let got31 = a.write(R.commandLow, 0x0000_4005, at: 0)
        #expect(got31 == .noEffect)
        _ = a.write(R.errorStatus, 0, at: 0)
        #expect(a.read(R.errorStatus) == LocalAPIC.sendIllegalVector)
    }

    @Test func initSIPIAndNMIMessages() {
        let initAssert = InterProcessorInterrupt(commandLow: 0x0000_C500, commandHigh: 0)
        #expect(initAssert.message == .initialize)
        let initDeassert = InterProcessorInterrupt(commandLow: 0x0000_8500, commandHigh: 0)
        #expect(initDeassert.message == nil)
        let sipi = InterProcessorInterrupt(commandLow: 0x0000_4608, commandHigh: 0)
        #expect(sipi.message == .startUp(vector: 0x08))
        let nmi = InterProcessorInterrupt(commandLow: 0x0000_4400, commandHigh: 0)
        #expect(nmi.message == .nmi)
        #expect(InterProcessorInterrupt(commandLow: 0x0000_4200, commandHigh: 0).message == nil)   // SMI
    }

    static func apics(_ n: Int) -> [LocalAPIC] { (0..<n).map { enabledAPIC(id: UInt8($0)) } }

    @Test func shorthandsAndPhysicalDestinations() {
        let apics = Self.apics(4)
        func targets(_ low: UInt32, _ dest: UInt32 = 0, from: Int = 1) -> [Int] {
            InterProcessorInterrupt(commandLow: low, commandHigh: dest << 24).targets(from: from, in: apics)
        }
        #expect(targets(0x0004_40F0) == [1])                 // self
        #expect(targets(0x0008_40F0) == [0, 1, 2, 3])        // all including self
        #expect(targets(0x000C_40F0) == [0, 2, 3])           // all excluding self
        #expect(targets(0x0000_40F0, 2) == [2])              // physical 2
        #expect(targets(0x0000_40F0, 9) == [])               // no such APIC
        #expect(targets(0x0000_40F0, 0xFF) == [0, 1, 2, 3])  // broadcast
    }

    @Test func logicalFlatAndClusterDestinations() {
        var apics = Self.apics(4)
        for i in apics.indices { _ = apics[i].write(R.logicalDestination, UInt32(1 << i) << 24, at: 0) }
        let flat = InterProcessorInterrupt(commandLow: 0x0000_48F0, commandHigh: 0x0A00_0000)   // bits 1 and 3
        #expect(flat.targets(from: 0, in: apics) == [1, 3])
        // Cluster model: cluster 1 holds APICs 0 and 1, cluster 2 holds 2 and 3.
        for i in apics.indices {
            _ = apics[i].write(R.destinationFormat, 0x0FFF_FFFF, at: 0)
            let cluster = UInt32(i < 2 ? 1 : 2), bit = UInt32(1 << (i % 2))
            _ = apics[i].write(R.logicalDestination, ((cluster << 4) | bit) << 24, at: 0)
        }
        let cluster2 = InterProcessorInterrupt(commandLow: 0x0000_48F0, commandHigh: 0x2300_0000)
        #expect(cluster2.targets(from: 0, in: apics) == [2, 3])
        let oneInCluster1 = InterProcessorInterrupt(commandLow: 0x0000_48F0, commandHigh: 0x1200_0000)
        #expect(oneInCluster1.targets(from: 0, in: apics) == [1])
    }

    @Test func noIPIReachesAHardwareDisabledAPICNotEvenINIT() {
        var apics = Self.apics(4)
        apics[2].setHardwareEnabled(false)
        func targets(_ low: UInt32, _ dest: UInt32 = 0, from: Int = 1) -> [Int] {
            InterProcessorInterrupt(commandLow: low, commandHigh: dest << 24).targets(from: from, in: apics)
        }
        #expect(targets(0x0008_40F0) == [0, 1, 3])           // all including self
        #expect(targets(0x000C_4500) == [0, 3])              // INIT to all excluding self
        #expect(targets(0x0000_4500, 2) == [])               // INIT to it by its physical ID
    }

    @Test func lowestPriorityPicksTheLeastBusyMatchingAPIC() {
        var apics = Self.apics(3)
        for i in apics.indices { _ = apics[i].write(R.logicalDestination, UInt32(1 << i) << 24, at: 0) }
        _ = apics[0].write(R.taskPriority, 0x30, at: 0)
        _ = apics[1].write(R.taskPriority, 0x10, at: 0)
        _ = apics[2].write(R.taskPriority, 0x20, at: 0)
        let ipi = InterProcessorInterrupt(commandLow: 0x0000_49F0, commandHigh: 0x0700_0000)   // lowest, logical 0-2
        #expect(ipi.targets(from: 0, in: apics) == [1])
        _ = apics[1].write(R.taskPriority, 0x30, at: 0)
        #expect(ipi.targets(from: 0, in: apics) == [2])
    }
}

@Suite struct LocalAPICRegisterPageTests {
    @Test func theRegisterPageHasKVMsLayout() {
        var a = enabledAPIC(id: 5)
        _ = a.write(R.taskPriority, 0x20, at: 0)
        a.accept(vector: 0x41)
        _ = a.write(R.timerDivide, 0xB, at: 0)
        _ = a.write(R.timerInitialCount, 1000, at: 0)
        let page = a.registerPage(at: 400)
        func reg(_ offset: Int) -> UInt32 {
            UInt32(page[offset]) | UInt32(page[offset + 1]) << 8 | UInt32(page[offset + 2]) << 16 | UInt32(page[offset + 3]) << 24
        }
        #expect(page.count == 0x400)
        #expect(reg(0x20) == 5 << 24)
        #expect(reg(0x80) == 0x20)
        #expect(reg(0xF0) == 0x1FF)
        #expect(reg(0x220) == 1 << 1)            // IRR: vector 0x41
        #expect(reg(0x380) == 1000 && reg(0x390) == 600)
    }
}
