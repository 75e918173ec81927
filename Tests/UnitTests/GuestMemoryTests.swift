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
}
