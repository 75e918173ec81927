import CKVM
import KVM
import Testing
@testable import VMM

@Suite struct CrashReportTests {
    static func registers(rip: UInt64) -> Registers {
        var r = Registers()
        r.rip = rip
        r.rflags = 2
        return r
    }

    static func special(csBase: UInt64, cr0: UInt64) -> SpecialRegisters {
        var s = SpecialRegisters()
        s.cs.base = csBase
        s.cs.selector = csBase == 0xffff_0000 ? 0xf000 : 0x10
        s.cr0 = cr0
        return s
    }

    @Test func anAMDTripleFaultsResetStateIsCalledSo() {
        // What svm.c's shutdown_interception leaves: the reset vector, real mode.
        let text = CrashReport.format(vcpuID: 20, registers: Self.registers(rip: 0xfff0),
                                      special: Self.special(csBase: 0xffff_0000, cr0: 0x6000_0010),
                                      mpState: .runnable, afterTripleFault: true)
        #expect(text.contains("rip=0x000000000000fff0"))
        #expect(text.contains("reset state"), "\(text)")
        #expect(text.contains("kvm:kvm_exit"), "\(text)")
    }

    @Test func registersOfARealFaultSiteAreNotCalledResetState() {
        let longMode = CrashReport.format(vcpuID: 1, registers: Self.registers(rip: 0xffff_ffff_8100_0000),
                                          special: Self.special(csBase: 0, cr0: 0x8005_0033),
                                          mpState: .runnable, afterTripleFault: true)
        #expect(!longMode.contains("reset state"), "\(longMode)")
        // The reset vector is not enough: with protection on, it is a real place to fault.
        let protected = CrashReport.format(vcpuID: 1, registers: Self.registers(rip: 0xfff0),
                                           special: Self.special(csBase: 0xffff_0000, cr0: 0x11),
                                           mpState: .runnable, afterTripleFault: true)
        #expect(!protected.contains("reset state"), "\(protected)")
        // And only a triple fault gets the note: an internal error at the reset vector is
        // reported as it is.
        let other = CrashReport.format(vcpuID: 1, registers: Self.registers(rip: 0xfff0),
                                       special: Self.special(csBase: 0xffff_0000, cr0: 0x10),
                                       mpState: .runnable, afterTripleFault: false)
        #expect(!other.contains("reset state"), "\(other)")
    }

    @Test func missingRegistersSayTheyAreUnavailable() {
        let text = CrashReport.format(vcpuID: 3, registers: nil, special: nil, mpState: nil, afterTripleFault: true)
        #expect(text == "vCPU 3 registers:\n  (general registers unavailable)")
    }
}
