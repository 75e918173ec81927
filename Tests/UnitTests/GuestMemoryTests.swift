import Foundation
import Testing
@testable import GuestMemory
import X86Boot

@Suite struct GuestMemoryTests {
    @Test func boundsAreChecked() throws {
        let m = try GuestMemory(layout: [(0, 0x10000)])
        try m.store(UInt32(0xDEADBEEF), at: GuestAddress(0xFFFC))
        #expect(try m.load(UInt32.self, at: GuestAddress(0xFFFC)) == 0xDEADBEEF)
        #expect(throws: GuestMemoryError.outOfRange(address: 0xFFFD, length: 4)) {
            try m.store(UInt32(1), at: GuestAddress(0xFFFD))
        }
        #expect(throws: GuestMemoryError.self) { try m.read(at: GuestAddress(0x10000), count: 1) }
        // Length overflow must not wrap around into a valid range.
        #expect(throws: GuestMemoryError.self) { try m.hostBuffer(at: GuestAddress(8), length: UInt64.max) }
        #expect(throws: GuestMemoryError.self) { try m.hostBuffer(at: GuestAddress(UInt64.max - 2), length: 4) }
    }

    @Test func accessMayNotSpanTheHole() throws {
        let m = try GuestMemory(layout: [(0, 0x2000), (0x4000, 0x2000)])
        try m.write([1, 2, 3], at: GuestAddress(0x4000))
        #expect(try m.read(at: GuestAddress(0x4000), count: 3) == [1, 2, 3])
        #expect(throws: GuestMemoryError.self) { try m.read(at: GuestAddress(0x1FFF), count: 2) }
        #expect(throws: GuestMemoryError.self) { try m.read(at: GuestAddress(0x3000), count: 1) }
        #expect(m.size == 0x4000)
    }

    @Test func regionsAreHugePageAlignedAndAdvised() throws {
        let m = try GuestMemory(layout: GuestLayout.ramRegions(size: 64 << 20))
        for r in m.regions {
            #expect(r.hostAddress % UInt(GuestMemory.hostAlignment) == 0)
        }
        // The kernel lists MADV_HUGEPAGE as "hg" among the VmFlags of the mapping holding the
        // region (which may have merged with a neighbouring one of the same kind).
        let lines = try #require(FileHandle(forReadingAtPath: "/proc/self/smaps")?.readDataToEndOfFile())
            .split(separator: UInt8(ascii: "\n")).map { String(decoding: $0, as: UTF8.self) }
        let r = m.regions[0]
        let holding = lines.drop { line in
            let range = line.split(separator: " ").first?.split(separator: "-").compactMap { UInt($0, radix: 16) } ?? []
            return !(range.count == 2 && range[0] <= r.hostAddress && r.hostAddress + UInt(r.size) <= range[1])
        }
        let flags = try #require(holding.first { $0.hasPrefix("VmFlags:") }, "no mapping holds the region")
        #expect(flags.split(separator: " ").contains("hg"), "\(flags)")
        try m.store(UInt64(7), at: GuestAddress(m.regions[0].size - 8))
        #expect(try m.load(UInt64.self, at: GuestAddress(m.regions[0].size - 8)) == 7)
    }

    @Test func overlappingRegionsAreRefused() {
        #expect(throws: GuestMemoryError.overlappingRegions) {
            try GuestMemory(layout: [(0, 0x2000), (0x1000, 0x2000)])
        }
    }

    @Test func layoutSplitsAroundTheMMIOHole() {
        #expect(GuestLayout.ramRegions(size: 1 << 30).map(\.size) == [1 << 30])
        let big = GuestLayout.ramRegions(size: 4 << 30)
        #expect(big.count == 2)
        #expect(big[0].base == 0 && big[0].size == GuestLayout.mmioHoleStart)
        #expect(big[1].base == 1 << 32 && big[1].size == (4 << 30) - GuestLayout.mmioHoleStart)
    }

    @Test func refaultKeepsThePageAndItsAccess() throws {
        let m = try GuestMemory(layout: [(0, 1 << 20)])
        try m.write([1, 2, 3], at: GuestAddress(0x5FFF))
        #expect(m.refault(pageAt: GuestAddress(0x5123)))
        #expect(m.refault(pageAt: GuestAddress(0x6000)))
        #expect(try m.read(at: GuestAddress(0x5FFF), count: 3) == [1, 2, 3])
        try m.write([9], at: GuestAddress(0x5000))                   // still writable
        #expect(try m.load(UInt8.self, at: GuestAddress(0x5000)) == 9)
        #expect(!m.refault(pageAt: GuestAddress(1 << 20)))           // not RAM
        #expect(!m.refault(pageAt: GuestAddress(UInt64.max)))
    }
}
