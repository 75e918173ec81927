import Foundation
import GuestMemory
import Testing
@testable import Diagnosis
@testable import VMM

/// Where hang reports get their names: with no symbol file, the guest kernel's kallsyms,
/// read from guest RAM only once the kernel runs, then cached.
struct SymbolSourceTests {
    @Test func noFileAndNoKallsymsGivesNoNames() throws {
        let memory = try GuestMemory(layout: [(base: 0, size: 8 << 20)])
        var source = SymbolSource(path: nil, kernelPath: "/nonexistent/bzImage", memory: memory)
        #expect(source.load(kernelRunning: false) == nil)
        #expect(source.load(kernelRunning: true) == nil)
    }

    /// Debian's kernel image (the ELF vmlinux's bytes) placed in guest RAM, as scripts/test
    /// provides it: the names come from kallsyms, and only after the kernel runs.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["KITE_KALLSYMS_VMLINUX"] != nil,
                   "set KITE_KALLSYMS_VMLINUX and KITE_KALLSYMS_SYSTEM_MAP (scripts/test does)"))
    func kallsymsInGuestRAMNameFunctions() throws {
        let environment = ProcessInfo.processInfo.environment
        let vmlinux = try [UInt8](Data(contentsOf: URL(fileURLWithPath: try #require(environment["KITE_KALLSYMS_VMLINUX"]))))
        let map = try KernelSymbols(contentsOf: try #require(environment["KITE_KALLSYMS_SYSTEM_MAP"]))
        let memory = try GuestMemory(layout: [(base: 0, size: 128 << 20)])
        try memory.write(vmlinux, at: GuestAddress(16 << 20 | 0x123))
        var source = SymbolSource(path: nil, kernelPath: "/nonexistent/bzImage", memory: memory)
        #expect(source.load(kernelRunning: false) == nil)  // not before the kernel runs
        let found = source.load(kernelRunning: true)
        let loaded = try #require(found)
        #expect(loaded.origin == SymbolSource.kallsymsOrigin)
        #expect(loaded.addressesAreRuntime)
        let entry = try #require(map.address(of: "entry_SYSCALL_64"))
        #expect(loaded.table.address(of: "entry_SYSCALL_64") == entry)
        // The LSTAR check gives no relocation for these addresses (a file-less vmlinux is
        // not relocated; a running guest's kallsyms are already relocated).
        #expect(loaded.table.kaslrOffset(runtimeAddress: entry, of: "entry_SYSCALL_64") == 0)
        #expect(loaded.table.describe(entry + 0x10) == map.describe(entry + 0x10))
        #expect(loaded.table.count == map.count)
    }
}
