import Foundation
import GuestMemory
import Synchronization
import SystemPackage
import Testing
import Virtio
@testable import VirtioDevices

// MARK: Fixtures

/// Guest RAM with a hole: [0, 1 MiB) and [2 MiB, 6 MiB). Nothing is mapped at [1 MiB, 2 MiB),
/// so a device that touched a hole address would read or write outside RAM.
private let holeStart: UInt64 = 1 << 20
private let secondRegion: UInt64 = 2 << 20
private func makeMemory() throws -> GuestMemory {
    try GuestMemory(layout: [(base: 0, size: 1 << 20), (base: secondRegion, size: 4 << 20)])
}

/// Collects log lines from the device (the callback must be Sendable).
private final class LogLines: Sendable {
    private let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }
    var sink: @Sendable (String) -> Void { { line in self.lines.withLock { $0.append(line) } } }
}

/// Lays out requests in guest RAM: a bump allocator plus helpers for each kind of buffer.
struct BlockChainBuilder {
    let memory: GuestMemory
    var next: UInt64 = 0x1000

    init(memory: GuestMemory, start: UInt64 = 0x1000) {
        self.memory = memory
        self.next = start
    }

    /// A device-readable buffer holding `bytes`.
    mutating func readable(_ bytes: [UInt8]) throws -> Descriptor {
        let address = GuestAddress(next)
        try memory.write(bytes, at: address)
        next += UInt64(bytes.count + 64)       // gaps between buffers catch overruns
        return Descriptor(address: address, length: UInt32(bytes.count), isWriteOnly: false)
    }

    /// A device-writable buffer of `length` bytes, filled with `fill`.
    mutating func writable(_ length: Int, fill: UInt8 = 0xEE) throws -> Descriptor {
        let address = GuestAddress(next)
        try memory.write([UInt8](repeating: fill, count: length), at: address)
        try memory.write([UInt8](repeating: 0xCC, count: 64), at: address.adding(UInt64(length)))
        next += UInt64(length + 64)
        return Descriptor(address: address, length: UInt32(length), isWriteOnly: true)
    }

    func bytes(_ d: Descriptor) throws -> [UInt8] { try memory.read(at: d.address, count: Int(d.length)) }
    /// The status byte: the last byte of `d`.
    func status(_ d: Descriptor) throws -> UInt8 { try memory.load(UInt8.self, at: d.address.adding(UInt64(d.length) - 1)) }
    /// The 64 canary bytes after `d`, untouched if the device stayed inside the buffer.
    func canaryIntact(_ d: Descriptor) throws -> Bool {
        try memory.read(at: d.address.adding(UInt64(d.length)), count: 64).allSatisfy { $0 == 0xCC }
    }
}

private func header(_ type: UInt32, sector: UInt64 = 0) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: 16)
    bytes.put(type, at: 0)
    bytes.put(UInt32(0xDEAD), at: 4)       // reserved: ignored
    bytes.put(sector, at: 8)
    return bytes
}

private func pattern(_ count: Int, seed: UInt8) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed) &+ ($0 >> 9)) }
}

private let ok = BlockRequestStatus.ok.rawValue
private let ioError = BlockRequestStatus.ioError.rawValue
private let unsupported = BlockRequestStatus.unsupported.rawValue

/// A temporary file of `size` bytes, removed by the caller.
private func temporaryImage(size: Int, contents: [UInt8]? = nil) throws -> String {
    let path = FileManager.default.temporaryDirectory
        .appendingPathComponent("kite-blk-\(UUID().uuidString).img").path
    var data = Data(count: size)
    if let contents { data.replaceSubrange(0..<contents.count, with: contents) }
    try data.write(to: URL(fileURLWithPath: path))
    return path
}

private func remove(_ path: String) { try? FileManager.default.removeItem(atPath: path) }

enum BlockBackendKind: String, CaseIterable, CustomTestStringConvertible {
    case memory, file
    var testDescription: String { rawValue }
}

/// A device on a fresh 1 MiB disk of the given kind; `cleanup` removes any file.
private func makeDevice(_ kind: BlockBackendKind, size: Int = 1 << 20, serial: String? = nil,
                        log: LogLines? = nil) throws -> (BlockDevice, cleanup: () -> Void) {
    var sink: @Sendable (String) -> Void = { _ in }
    if let log { sink = log.sink }
    switch kind {
    case .memory:
        return (BlockDevice(backend: MemoryBlockBackend(size: size), serial: serial, log: sink), {})
    case .file:
        let path = try temporaryImage(size: size)
        let device = try BlockDevice(config: BlockDeviceConfig(path: path, serial: serial), log: sink)
        return (device, { remove(path) })
    }
}

// MARK: Reads and writes

@Suite("virtio-blk requests")
struct BlockRequestTests {
    @Test("write then read round trips across multi-descriptor chains",
          arguments: BlockBackendKind.allCases, [0, 1, 7, 1000, 2044] as [UInt64])
    func writeReadRoundTrip(kind: BlockBackendKind, sector: UInt64) throws {
        let (device, cleanup) = try makeDevice(kind)
        defer { cleanup() }
        let memory = try makeMemory()
        var chain = BlockChainBuilder(memory: memory)
        let data = pattern(2048, seed: UInt8(truncatingIfNeeded: sector))

        // Write: header and the first data bytes share a descriptor; data split unevenly.
        let first = try chain.readable(header(BlockRequestType.write, sector: sector) + data[0..<300])
        let second = try chain.readable(Array(data[300..<1324]))
        let third = try chain.readable(Array(data[1324...]))
        let writeStatus = try chain.writable(1)
        let write = DescriptorChain(headIndex: 3, readable: [first, second, third], writable: [writeStatus])
        #expect(device.handle(write, memory: memory) == 1)
        #expect(try chain.status(writeStatus) == ok)

        // Read back: data split over three writable buffers, the last one also holding the status.
        let read = try chain.readable(header(BlockRequestType.read, sector: sector))
        let a = try chain.writable(100)
        let b = try chain.writable(1500)
        let c = try chain.writable(448 + 1)
        let readChain = DescriptorChain(headIndex: 4, readable: [read], writable: [a, b, c])
        #expect(device.handle(readChain, memory: memory) == 2048 + 1)
        #expect(try chain.status(c) == ok)
        let back = try chain.bytes(a) + chain.bytes(b) + chain.bytes(c).dropLast()
        #expect(back == data)
        for d in [a, b, c] { #expect(try chain.canaryIntact(d)) }

        // The neighbouring sectors are still zero.
        if sector > 0 {
            let before = try chain.readable(header(BlockRequestType.read, sector: sector - 1))
            let buffer = try chain.writable(512 + 1)
            let n = device.handle(DescriptorChain(headIndex: 5, readable: [before], writable: [buffer]), memory: memory)
            #expect(n == 513)
            #expect(try chain.bytes(buffer).dropLast().allSatisfy { $0 == 0 })
        }
    }

    @Test("writes land at sector * 512 in the backend, reads come from there")
    func backendOffsets() throws {
        let backend = MemoryBlockBackend(bytes: pattern(64 * 512, seed: 9))
        let device = BlockDevice(backend: backend)
        let memory = try makeMemory()
        var chain = BlockChainBuilder(memory: memory)

        // Read sectors 10-11 into a buffer in the second RAM region.
        var high = BlockChainBuilder(memory: memory, start: secondRegion + 0x100)
        let data = try high.writable(1024)
        let status = try chain.writable(1)
        let read = DescriptorChain(headIndex: 0, readable: [try chain.readable(header(0, sector: 10))],
                                   writable: [data, status])
        #expect(device.handle(read, memory: memory) == 1025)
        #expect(try chain.bytes(data) == Array(backend.bytes[5120..<6144]))

        let newData = pattern(512, seed: 200)
        let write = DescriptorChain(headIndex: 1, readable: [try chain.readable(header(1, sector: 63)),
                                                             try chain.readable(newData)],
                                    writable: [try chain.writable(1)])
        #expect(device.handle(write, memory: memory) == 1)
        #expect(Array(backend.bytes[(63 * 512)...]) == newData)
        let restUnchanged = Array(backend.bytes[0..<(63 * 512)]) == Array(pattern(64 * 512, seed: 9)[0..<(63 * 512)])
        #expect(restUnchanged)
        #expect(device.counters == BlockDeviceCounters(reads: 1, readBytes: 1024, writes: 1, writeBytes: 512, flushes: 0))
    }

    @Test("reads and writes of zero bytes succeed without touching the backend")
    func emptyTransfers() throws {
        let backend = MemoryBlockBackend(size: 4096)
        let device = BlockDevice(backend: backend)
        let memory = try makeMemory()
        var chain = BlockChainBuilder(memory: memory)
        for type in [BlockRequestType.read, BlockRequestType.write] {
            let status = try chain.writable(1)
            let request = DescriptorChain(headIndex: 0, readable: [try chain.readable(header(type, sector: 8))],
                                          writable: [status])
            #expect(device.handle(request, memory: memory) == 1)
            #expect(try chain.status(status) == ok)
        }
        #expect(backend.writeCount == 0)
    }

    // MARK: Flush and GET_ID

    @Test("FLUSH flushes the backend and answers OK")
    func flushReachesBackend() throws {
        let backend = MemoryBlockBackend(size: 4096)
        let device = BlockDevice(backend: backend)
        device.activate(features: device.features, memory: try makeMemory())
        let memory = try makeMemory()
        var chain = BlockChainBuilder(memory: memory)
        for round in 1...3 {
            let status = try chain.writable(1)
            let flush = DescriptorChain(headIndex: 0, readable: [try chain.readable(header(BlockRequestType.flush))],
                                        writable: [status])
            #expect(device.handle(flush, memory: memory) == 1)
            #expect(try chain.status(status) == ok)
            #expect(backend.flushCount == round)
        }
        #expect(device.counters.flushes == 3)
    }

    @Test("FLUSH on a file disk fsyncs and answers OK")
    func fileFlush() throws {
        let (device, cleanup) = try makeDevice(.file)
        defer { cleanup() }
        let memory = try makeMemory()
        var chain = BlockChainBuilder(memory: memory)
        let write = DescriptorChain(headIndex: 0, readable: [try chain.readable(header(1, sector: 3) + pattern(512, seed: 1))],
                                    writable: [try chain.writable(1)])
        #expect(device.handle(write, memory: memory) == 1)
        let status = try chain.writable(1)
        let flush = DescriptorChain(headIndex: 1, readable: [try chain.readable(header(BlockRequestType.flush))],
                                    writable: [status])
        #expect(device.handle(flush, memory: memory) == 1)
        #expect(try chain.status(status) == ok)
        try (device.backend as! FileBlockBackend).flush()
    }

    @Test("a driver without VIRTIO_BLK_F_FLUSH gets write-through: each write is flushed")
    func writeThroughWithoutFlushFeature() throws {
        let backend = MemoryBlockBackend(size: 4096)
        let device = BlockDevice(backend: backend)
        let memory = try makeMemory()
        var chain = BlockChainBuilder(memory: memory)
        func write() throws {
            let request = DescriptorChain(headIndex: 0, readable: [try chain.readable(header(1) + pattern(512, seed: 3))],
                                          writable: [try chain.writable(1)])
            #expect(device.handle(request, memory: memory) == 1)
        }
        device.activate(features: device.features, memory: memory)
        try write()
        #expect(backend.flushCount == 0)
        device.activate(features: device.features & ~BlockFeature.flush, memory: memory)
        #expect(device.isWriteThrough)
        try write()
        #expect(backend.flushCount == 1)
        device.reset()
        #expect(!device.isWriteThrough)
    }

    @Test("GET_ID returns the serial, zero-padded to 20 bytes")
    func getID() throws {
        let device = BlockDevice(backend: MemoryBlockBackend(size: 4096), serial: "kite-disk-0")
        let memory = try makeMemory()
        var chain = BlockChainBuilder(memory: memory)
        let id = try chain.writable(20)
        let status = try chain.writable(1)
        let request = DescriptorChain(headIndex: 0, readable: [try chain.readable(header(BlockRequestType.getID))],
                                      writable: [id, status])
        #expect(device.handle(request, memory: memory) == 21)
        #expect(try chain.status(status) == ok)
        #expect(try chain.bytes(id) == Array("kite-disk-0".utf8) + [UInt8](repeating: 0, count: 9))
        #expect(try chain.canaryIntact(id))
    }

    @Test("GET_ID fills a short buffer with the serial's prefix; a long serial is truncated; none reads as zeros")
    func getIDEdges() throws {
        let memory = try makeMemory()
        var chain = BlockChainBuilder(memory: memory)

        let short = BlockDevice(backend: MemoryBlockBackend(size: 512), serial: "ABCDEFGHIJKLMNOPQRST")
        let small = try chain.writable(8 + 1)
        let request = DescriptorChain(headIndex: 0, readable: [try chain.readable(header(8))], writable: [small])
        #expect(short.handle(request, memory: memory) == 9)
        #expect(try chain.bytes(small) == Array("ABCDEFGH".utf8) + [ok])

        let long = BlockDevice(backend: MemoryBlockBackend(size: 512), serial: "0123456789012345678901234")
        #expect(long.serial == Array("01234567890123456789".utf8))

        let none = BlockDevice(backend: MemoryBlockBackend(size: 512))
        let big = try chain.writable(64)
        let request2 = DescriptorChain(headIndex: 1, readable: [try chain.readable(header(8))], writable: [big])
        #expect(none.handle(request2, memory: memory) == 21)
        let got = try chain.bytes(big)
        #expect(got[0..<20].allSatisfy { $0 == 0 })
        #expect(got[20..<63].allSatisfy { $0 == 0xEE })      // untouched past the 20 bytes
        #expect(got[63] == ok)
    }

    // MARK: Malformed requests

    /// One malformed request: the chain (built in guest RAM with a hole), the status the
    /// guest must get (nil: no status can be written) and the written length.
    struct Malformed: CustomTestStringConvertible, Sendable {
        let name: String
        let expectedStatus: UInt8?
        /// What the one log line must contain (nil: nothing is logged).
        let logged: String?
        let build: @Sendable (inout BlockChainBuilder) throws -> (DescriptorChain, status: Descriptor?)
        var testDescription: String { name }
        var expectedWritten: UInt32 { expectedStatus == nil ? 0 : 1 }
    }

    /// A disk of 2048 sectors (1 MiB).
    static let diskSectors: UInt64 = 2048
    static let inHole = GuestAddress(holeStart + 0x800)

    static let malformedCases: [Malformed] = [
        Malformed(name: "header of 15 bytes", expectedStatus: ioError, logged: "header is 15 bytes") { b in
            let s = try b.writable(513)
            return (DescriptorChain(headIndex: 0, readable: [try b.readable(Array(header(0).prefix(15)))], writable: [s]), s)
        },
        Malformed(name: "no header at all", expectedStatus: ioError, logged: "header is 0 bytes") { b in
            let s = try b.writable(1)
            return (DescriptorChain(headIndex: 0, readable: [], writable: [s]), s)
        },
        Malformed(name: "header split 8+7 bytes", expectedStatus: ioError, logged: "header is 15 bytes") { b in
            let h = header(1)
            let s = try b.writable(1)
            return (DescriptorChain(headIndex: 0, readable: [try b.readable(Array(h[0..<8])), try b.readable(Array(h[8..<15]))],
                                    writable: [s]), s)
        },
        Malformed(name: "header in the RAM hole", expectedStatus: ioError, logged: "header: guest access outside RAM") { b in
            let s = try b.writable(513)
            return (DescriptorChain(headIndex: 0, readable: [Descriptor(address: inHole, length: 16, isWriteOnly: false)],
                                    writable: [s]), s)
        },
        Malformed(name: "no writable buffer (no status byte)", expectedStatus: nil, logged: "no writable status byte") { b in
            (DescriptorChain(headIndex: 0, readable: [try b.readable(header(0) + [UInt8](repeating: 0, count: 512))], writable: []), nil)
        },
        Malformed(name: "only zero-length writable buffers", expectedStatus: nil, logged: "no writable status byte") { b in
            let empty = Descriptor(address: GuestAddress(0x100), length: 0, isWriteOnly: true)
            return (DescriptorChain(headIndex: 0, readable: [try b.readable(header(4))], writable: [empty, empty]), nil)
        },
        Malformed(name: "status byte in the RAM hole", expectedStatus: nil, logged: "no writable status byte") { b in
            let data = try b.writable(512)
            return (DescriptorChain(headIndex: 0, readable: [try b.readable(header(0))],
                                    writable: [data, Descriptor(address: inHole, length: 1, isWriteOnly: true)]), nil)
        },
        Malformed(name: "status byte address wraps past 2^64", expectedStatus: nil, logged: "no writable status byte") { b in
            (DescriptorChain(headIndex: 0, readable: [try b.readable(header(4))],
                             writable: [Descriptor(address: GuestAddress(UInt64.max - 2), length: 16, isWriteOnly: true)]), nil)
        },
        Malformed(name: "read starting past the end", expectedStatus: ioError, logged: "read of 512 bytes at sector 2048 ends past the disk's 2048 sectors") { b in
            let s = try b.writable(513)
            return (DescriptorChain(headIndex: 0, readable: [try b.readable(header(0, sector: diskSectors))], writable: [s]), s)
        },
        Malformed(name: "read running past the end", expectedStatus: ioError, logged: "read of 1024 bytes at sector 2047 ends past") { b in
            let s = try b.writable(1025)
            return (DescriptorChain(headIndex: 0, readable: [try b.readable(header(0, sector: diskSectors - 1))], writable: [s]), s)
        },
        Malformed(name: "write running past the end", expectedStatus: ioError, logged: "write of 1024 bytes at sector 2047 ends past") { b in
            let s = try b.writable(1)
            return (DescriptorChain(headIndex: 0, readable: [try b.readable(header(1, sector: diskSectors - 1) + [UInt8](repeating: 7, count: 1024))],
                                    writable: [s]), s)
        },
        Malformed(name: "sector * 512 overflows", expectedStatus: ioError, logged: "ends past") { b in
            let s = try b.writable(513)
            return (DescriptorChain(headIndex: 0, readable: [try b.readable(header(0, sector: UInt64.max / 512 + 1))], writable: [s]), s)
        },
        Malformed(name: "sector UInt64.max", expectedStatus: ioError, logged: "ends past") { b in
            let s = try b.writable(1)
            return (DescriptorChain(headIndex: 0, readable: [try b.readable(header(1, sector: .max) + [UInt8](repeating: 1, count: 512))],
                                    writable: [s]), s)
        },
        Malformed(name: "sector * 512 + length overflows", expectedStatus: ioError, logged: "ends past") { b in
            let s = try b.writable(1025)
            return (DescriptorChain(headIndex: 0, readable: [try b.readable(header(0, sector: UInt64.max / 512))], writable: [s]), s)
        },
        Malformed(name: "read of 511 bytes", expectedStatus: ioError, logged: "read of 511 bytes is not a whole number of sectors") { b in
            let s = try b.writable(512)
            return (DescriptorChain(headIndex: 0, readable: [try b.readable(header(0))], writable: [s]), s)
        },
        Malformed(name: "write of 513 bytes", expectedStatus: ioError, logged: "write of 513 bytes is not a whole number of sectors") { b in
            let s = try b.writable(1)
            return (DescriptorChain(headIndex: 0, readable: [try b.readable(header(1) + [UInt8](repeating: 1, count: 513))], writable: [s]), s)
        },
        Malformed(name: "read over the 4 MiB request limit", expectedStatus: ioError, logged: "read of 5242880 bytes is over the 4194304-byte request limit") { b in
            // Five 1 MiB descriptors over the same RAM: 5 MiB of data, no 5 MiB of anything allocated.
            let big = Descriptor(address: GuestAddress(secondRegion), length: 1 << 20, isWriteOnly: true)
            let s = try b.writable(1)
            return (DescriptorChain(headIndex: 0, readable: [try b.readable(header(0))],
                                    writable: [big, big, big, big, big, s]), s)
        },
        Malformed(name: "write over the 4 MiB request limit", expectedStatus: ioError, logged: "is over the 4194304-byte request limit") { b in
            let big = Descriptor(address: GuestAddress(secondRegion), length: 0xFFFF_FE00, isWriteOnly: false)
            let s = try b.writable(1)
            return (DescriptorChain(headIndex: 0, readable: [try b.readable(header(1)), big, big], writable: [s]), s)
        },
        Malformed(name: "read into the RAM hole", expectedStatus: ioError, logged: "data buffer: guest access outside RAM") { b in
            let s = try b.writable(1)
            let ok = try b.writable(512)
            return (DescriptorChain(headIndex: 0, readable: [try b.readable(header(0))],
                                    writable: [ok, Descriptor(address: inHole, length: 512, isWriteOnly: true), s]), s)
        },
        Malformed(name: "read into a buffer running off the end of RAM", expectedStatus: ioError, logged: "data buffer: guest access outside RAM") { b in
            let s = try b.writable(1)
            let edge = Descriptor(address: GuestAddress(holeStart - 512), length: 1024, isWriteOnly: true)
            return (DescriptorChain(headIndex: 0, readable: [try b.readable(header(0))], writable: [edge, s]), s)
        },
        Malformed(name: "write from the RAM hole", expectedStatus: ioError, logged: "data buffer: guest access outside RAM") { b in
            let s = try b.writable(1)
            return (DescriptorChain(headIndex: 0, readable: [try b.readable(header(1) + [UInt8](repeating: 5, count: 512)),
                                                             Descriptor(address: inHole, length: 512, isWriteOnly: false)],
                                    writable: [s]), s)
        },
        Malformed(name: "GET_ID into the RAM hole", expectedStatus: ioError, logged: "GET_ID buffer: ") { b in
            let s = try b.writable(1)
            return (DescriptorChain(headIndex: 0, readable: [try b.readable(header(8))],
                                    writable: [Descriptor(address: inHole, length: 20, isWriteOnly: true), s]), s)
        },
        Malformed(name: "DISCARD (not offered)", expectedStatus: unsupported, logged: nil) { b in
            let s = try b.writable(1)
            return (DescriptorChain(headIndex: 0, readable: [try b.readable(header(11) + [UInt8](repeating: 0, count: 16))], writable: [s]), s)
        },
        Malformed(name: "WRITE_ZEROES (not offered)", expectedStatus: unsupported, logged: nil) { b in
            let s = try b.writable(1)
            return (DescriptorChain(headIndex: 0, readable: [try b.readable(header(13) + [UInt8](repeating: 0, count: 16))], writable: [s]), s)
        },
        Malformed(name: "type 0xFFFFFFFF", expectedStatus: unsupported, logged: nil) { b in
            let s = try b.writable(100)
            return (DescriptorChain(headIndex: 0, readable: [try b.readable(header(.max))], writable: [s]), s)
        },
    ]

    @Test("malformed requests fail with IOERR/UNSUPP (or no status at all), leave the disk and RAM alone",
          arguments: malformedCases)
    func malformed(_ malformed: Malformed) throws {
        let original = pattern(Int(Self.diskSectors) * 512, seed: 77)
        let backend = MemoryBlockBackend(bytes: original)
        let log = LogLines()
        let device = BlockDevice(backend: backend, serial: "x", log: log.sink)
        let memory = try makeMemory()
        try memory.write([UInt8](repeating: 0xAB, count: 1 << 20), at: GuestAddress(secondRegion))
        var builder = BlockChainBuilder(memory: memory)
        let (chain, status) = try malformed.build(&builder)

        let written = device.handle(chain, memory: memory)

        #expect(written == malformed.expectedWritten)
        if let status, let expected = malformed.expectedStatus {
            #expect(try builder.status(status) == expected)
            // Nothing but the status byte was written into the guest's buffers.
            for d in chain.writable where d != status && d.address.raw < holeStart
                && memory.contains(d.address, length: UInt64(d.length)) {
                #expect(try builder.bytes(d).allSatisfy { $0 == 0xEE })
            }
            #expect(try builder.bytes(status).dropLast().allSatisfy { $0 == 0xEE })
        }
        let diskUnchanged = backend.bytes == original     // a Bool, so a failure does not print 1 MiB
        #expect(diskUnchanged)
        #expect(backend.writeCount == 0)
        #expect(try memory.read(at: GuestAddress(secondRegion), count: 1 << 20).allSatisfy { $0 == 0xAB })
        // Unsupported types are the guest probing, not a problem; everything else is logged once.
        if let logged = malformed.logged {
            #expect(log.all.count == 1)
            #expect(log.all.first?.contains(logged) == true, "\(log.all)")
        } else {
            #expect(log.all.isEmpty)
        }
    }

    @Test("a request of exactly the 4 MiB limit is served, in both directions")
    func requestAtTheLimit() throws {
        let limit = Int(BlockDevice.maxRequestDataBytes)
        let backend = MemoryBlockBackend(bytes: pattern(limit + 4096, seed: 4))
        let device = BlockDevice(backend: backend)
        let memory = try makeMemory()
        var chain = BlockChainBuilder(memory: memory)
        // 128 segments of 32 KiB, as Linux would send: all of the second RAM region.
        let segments = (0..<128).map {
            Descriptor(address: GuestAddress(secondRegion + UInt64($0) * 32768), length: 32768, isWriteOnly: true)
        }
        let status = try chain.writable(1)
        let read = DescriptorChain(headIndex: 0, readable: [try chain.readable(header(0, sector: 8))],
                                   writable: segments + [status])
        #expect(device.handle(read, memory: memory) == UInt32(limit) + 1)
        #expect(try chain.status(status) == ok)
        let readMatches = try memory.read(at: GuestAddress(secondRegion), count: limit) == Array(backend.bytes[4096..<(4096 + limit)])
        #expect(readMatches)

        let readable = segments.map { Descriptor(address: $0.address, length: $0.length, isWriteOnly: false) }
        let write = DescriptorChain(headIndex: 1, readable: [try chain.readable(header(1, sector: 0))] + readable,
                                    writable: [status])
        #expect(device.handle(write, memory: memory) == 1)
        #expect(try chain.status(status) == ok)
        let writeMatches = Array(backend.bytes[0..<limit]) == Array(pattern(limit + 4096, seed: 4)[4096..<(4096 + limit)])
        #expect(writeMatches)
    }

    @Test("process serves every available chain through a real split virtqueue")
    func processThroughVirtqueue() throws {
        let backend = MemoryBlockBackend(bytes: pattern(1 << 20, seed: 6))
        let device = BlockDevice(backend: backend, serial: "Q")
        let memory = try makeMemory()
        let driver = try FakeDriver(memory: memory, size: 16, descriptorTable: 0x10000,
                                    availableRing: 0x11000, usedRing: 0x12000)
        var queue = driver.makeQueue(maxSize: BlockDevice.queueSize)
        var chain = BlockChainBuilder(memory: memory, start: 0x20000)
        #expect(try device.process(queue: 0, &queue, memory: memory) == false)

        let readHeader = try chain.readable(header(0, sector: 2))
        let data = try chain.writable(1024)
        let readStatus = try chain.writable(1)
        try driver.addChain([.readable(readHeader.address.raw, 16), .writable(data.address.raw, 1024),
                             .writable(readStatus.address.raw, 1)])
        let badHeader = try chain.readable(header(77))
        let badStatus = try chain.writable(1)
        try driver.addChain([.readable(badHeader.address.raw, 16), .writable(badStatus.address.raw, 1)])
        let noStatus = try chain.readable(header(4))
        try driver.addChain([.readable(noStatus.address.raw, 16)])

        #expect(try device.process(queue: 0, &queue, memory: memory))
        #expect(try driver.usedIndex() == 3)
        #expect(try driver.usedElement(0) == (id: 0, length: 1025))
        #expect(try driver.usedElement(1) == (id: 3, length: 1))
        #expect(try driver.usedElement(2) == (id: 5, length: 0))
        #expect(try chain.bytes(data) == Array(backend.bytes[1024..<2048]))
        #expect(try chain.status(readStatus) == ok)
        #expect(try chain.status(badStatus) == unsupported)
        #expect(try device.process(queue: 0, &queue, memory: memory) == false)
        #expect(try device.process(queue: 1, &queue, memory: memory) == false)
    }

    @Test("a guest sending only bad requests fills the log with at most 21 lines")
    func logIsRateLimited() throws {
        let log = LogLines()
        let device = BlockDevice(backend: MemoryBlockBackend(size: 512), log: log.sink)
        let memory = try makeMemory()
        var chain = BlockChainBuilder(memory: memory)
        let request = DescriptorChain(headIndex: 0, readable: [try chain.readable(header(0, sector: 99))],
                                      writable: [try chain.writable(513)])
        for _ in 0..<100 { #expect(device.handle(request, memory: memory) == 1) }
        #expect(log.all.count == ProblemLog.limit + 1)
        #expect(log.all.last == "further virtio-blk problems are not logged")
        #expect(log.all.first?.contains("past the disk") == true)
    }

    // MARK: Read-only disks

    @Test("a read-only disk offers VIRTIO_BLK_F_RO, serves reads and rejects writes with IOERR",
          arguments: BlockBackendKind.allCases)
    func readOnly(kind: BlockBackendKind) throws {
        let contents = pattern(8192, seed: 42)
        let log = LogLines()
        let device: BlockDevice
        var cleanup: () -> Void = {}
        switch kind {
        case .memory:
            device = BlockDevice(backend: MemoryBlockBackend(bytes: contents, readOnly: true), log: log.sink)
        case .file:
            let path = try temporaryImage(size: 8192, contents: contents)
            cleanup = { remove(path) }
            device = try BlockDevice(config: BlockDeviceConfig(path: path, readOnly: true), log: log.sink)
        }
        defer { cleanup() }
        #expect(device.isReadOnly)
        #expect(device.features & BlockFeature.readOnly != 0)
        #expect(device.features & BlockFeature.flush != 0)

        let memory = try makeMemory()
        var chain = BlockChainBuilder(memory: memory)
        let writeStatus = try chain.writable(1)
        let write = DescriptorChain(headIndex: 0, readable: [try chain.readable(header(1, sector: 2) + pattern(512, seed: 1))],
                                    writable: [writeStatus])
        #expect(device.handle(write, memory: memory) == 1)
        #expect(try chain.status(writeStatus) == ioError)
        #expect(log.all == ["request 0: write to a read-only disk"])   // refused before the backend

        let data = try chain.writable(1024 + 1)
        let read = DescriptorChain(headIndex: 1, readable: [try chain.readable(header(0, sector: 2))], writable: [data])
        #expect(device.handle(read, memory: memory) == 1025)
        #expect(try chain.bytes(data) == Array(contents[1024..<2048]) + [ok])

        let flushStatus = try chain.writable(1)
        let flush = DescriptorChain(headIndex: 2, readable: [try chain.readable(header(4))], writable: [flushStatus])
        #expect(device.handle(flush, memory: memory) == 1)
        #expect(try chain.status(flushStatus) == ok)

        if case .memory = kind { #expect((device.backend as! MemoryBlockBackend).bytes == contents) }
        if case .file = kind {
            let backend = device.backend as! FileBlockBackend
            #expect(throws: Errno.badFileDescriptor) {
                try [UInt8](repeating: 0, count: 512).withUnsafeBytes { try backend.write(from: $0, at: 0) }
            }
        }
    }

    @Test("a writable disk does not offer VIRTIO_BLK_F_RO")
    func writableFeatures() {
        let device = BlockDevice(backend: MemoryBlockBackend(size: 512))
        #expect(device.features == BlockFeature.flush | BlockFeature.segMax | BlockFeature.sizeMax)
        #expect(device.type == .block)
        #expect(device.queueSizes == [256])
    }

    // MARK: Backend errors

    @Test("backend I/O errors become IOERR and are logged",
          arguments: [MemoryBlockBackend.Operation.read, .write, .flush])
    func backendErrors(_ failing: MemoryBlockBackend.Operation) throws {
        let backend = MemoryBlockBackend(size: 8192)
        backend.failures[failing] = .noSpace
        let log = LogLines()
        let device = BlockDevice(backend: backend, log: log.sink)
        let memory = try makeMemory()
        var chain = BlockChainBuilder(memory: memory)
        let type: UInt32 = switch failing { case .read: 0; case .write: 1; case .flush: 4 }
        let status = try chain.writable(failing == .read ? 513 : 1)
        let payload = failing == .write ? pattern(512, seed: 5) : []
        let request = DescriptorChain(headIndex: 0, readable: [try chain.readable(header(type, sector: 1) + payload)],
                                      writable: [status])
        #expect(device.handle(request, memory: memory) == 1)
        #expect(try chain.status(status) == ioError)
        #expect(log.all.count == 1)
        #expect(log.all.first?.contains(Errno.noSpace.description) == true)

        // The same request succeeds once the backend recovers.
        backend.failures = [:]
        #expect(device.handle(request, memory: memory) == (failing == .read ? 513 : 1))
        #expect(try chain.status(status) == ok)
    }

    @Test("after an fsync failure every later FLUSH fails too, even once fsync succeeds again")
    func flushFailureIsSticky() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kite-sticky-\(getpid()).img").path
        try Data(count: 8192).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let backend = try FileBlockBackend(path: path, readOnly: false)
        try backend.flush()
        // The host's writeback failed (EIO): the kernel may have dropped the dirty pages.
        backend.sync = { _ in errno = EIO; return -1 }
        #expect(throws: Errno.ioError) { try backend.flush() }
        // fsync works again, but what the guest wrote before may be gone: flushing must not
        // say otherwise.
        backend.sync = { fsync($0) }
        #expect(throws: Errno.ioError) { try backend.flush() }
        // And the guest sees IOERR for its FLUSH request.
        let device = BlockDevice(backend: backend, log: { _ in })
        let memory = try makeMemory()
        var chain = BlockChainBuilder(memory: memory)
        let status = try chain.writable(1)
        let request = DescriptorChain(headIndex: 0, readable: [try chain.readable(header(4, sector: 0))], writable: [status])
        #expect(device.handle(request, memory: memory) == 1)
        #expect(try chain.status(status) == ioError)
    }

    @Test("a write with write-through whose flush fails reports IOERR")
    func writeThroughFlushFailure() throws {
        let backend = MemoryBlockBackend(size: 4096)
        backend.failures[.flush] = .ioError
        let device = BlockDevice(backend: backend)
        let memory = try makeMemory()
        device.activate(features: 0, memory: memory)
        var chain = BlockChainBuilder(memory: memory)
        let status = try chain.writable(1)
        let request = DescriptorChain(headIndex: 0, readable: [try chain.readable(header(1) + pattern(512, seed: 8))],
                                      writable: [status])
        #expect(device.handle(request, memory: memory) == 1)
        #expect(try chain.status(status) == ioError)
    }

    // MARK: Config space

    @Test("config space: capacity in sectors (rounded down), size_max, seg_max; the rest reads as zero")
    func configSpace() throws {
        let device = BlockDevice(backend: MemoryBlockBackend(size: 3 * 512 + 100))
        #expect(device.capacitySectors == 3)
        #expect(device.readConfig(offset: 0, count: 8) == [3, 0, 0, 0, 0, 0, 0, 0])
        #expect(device.readConfig(offset: 0, count: 4) == [3, 0, 0, 0])
        #expect(device.readConfig(offset: 8, count: 4) == [0x00, 0x80, 0, 0])     // 32 KiB
        #expect(device.readConfig(offset: 12, count: 4) == [128, 0, 0, 0])
        #expect(device.readConfig(offset: 16, count: 44) == [UInt8](repeating: 0, count: 44))
        #expect(device.readConfig(offset: 58, count: 8) == [UInt8](repeating: 0, count: 8))
        #expect(device.readConfig(offset: 0x1000, count: 4) == [0, 0, 0, 0])
        #expect(device.readConfig(offset: -2, count: 4) == [0, 0, 3, 0])
        #expect(device.readConfig(offset: Int.max, count: 4) == [0, 0, 0, 0])
        #expect(device.readConfig(offset: 0, count: -1) == [])
        device.writeConfig(offset: 0, bytes: [9, 9, 9, 9])
        #expect(device.readConfig(offset: 0, count: 1) == [3])

        let big = BlockDevice(backend: MemoryBlockBackend(size: 0))
        #expect(big.readConfig(offset: 0, count: 8) == [0, 0, 0, 0, 0, 0, 0, 0])
        #expect(BlockDevice.maxRequestDataBytes == 4 << 20)
    }

    @Test("config space capacity of a file disk")
    func fileCapacity() throws {
        let path = try temporaryImage(size: 5 << 20)
        defer { remove(path) }
        let device = try BlockDevice(config: BlockDeviceConfig(path: path))
        #expect(device.capacitySectors == 10240)
        #expect(device.readConfig(offset: 0, count: 8) == [0x00, 0x28, 0, 0, 0, 0, 0, 0])
    }
}

// MARK: File backend

@Suite("virtio-blk file backend")
struct FileBlockBackendTests {
    @Test("a second writer on the same image fails with the in-use error")
    func secondWriterFails() throws {
        let path = try temporaryImage(size: 4096)
        defer { remove(path) }
        let first = try FileBlockBackend(path: path, readOnly: false)
        #expect(first.size == 4096)
        #expect(throws: BlockBackendError.inUse(path: path)) { try FileBlockBackend(path: path, readOnly: false) }
        #expect(throws: BlockBackendError.inUse(path: path)) { try FileBlockBackend(path: path, readOnly: true) }
        #expect(BlockBackendError.inUse(path: path).description == "disk \(path) is in use by another process")
        _ = first
    }

    @Test("read-only users share an image; a writer cannot join them")
    func readersShare() throws {
        let path = try temporaryImage(size: 4096)
        defer { remove(path) }
        let a = try FileBlockBackend(path: path, readOnly: true)
        let b = try FileBlockBackend(path: path, readOnly: true)
        #expect(throws: BlockBackendError.inUse(path: path)) { try FileBlockBackend(path: path, readOnly: false) }
        _ = (a, b)
    }

    @Test("the lock goes with the backend")
    func lockReleased() throws {
        let path = try temporaryImage(size: 4096)
        defer { remove(path) }
        do { _ = try FileBlockBackend(path: path, readOnly: false) }
        let again = try FileBlockBackend(path: path, readOnly: false)
        #expect(!again.isReadOnly)
    }

    @Test("opening errors are one line: missing file, directory")
    func openErrors() throws {
        let missing = "/nonexistent/kite-disk.img"
        #expect(throws: BlockBackendError.cannotOpen(path: missing, .noSuchFileOrDirectory)) {
            try FileBlockBackend(path: missing, readOnly: false)
        }
        #expect(BlockBackendError.cannotOpen(path: missing, .noSuchFileOrDirectory).description
                == "cannot open disk \(missing): No such file or directory")
        let directory = FileManager.default.temporaryDirectory.path
        #expect(throws: BlockBackendError.notADisk(path: directory)) {
            try FileBlockBackend(path: directory, readOnly: true)
        }
        #expect(BlockBackendError.notADisk(path: directory).description
                == "disk \(directory) is not a regular file or block device")
    }

    @Test("a FIFO is refused at once, read-only or not (opening it must not wait for a writer)",
          arguments: [true, false])
    func fifoRefused(readOnly: Bool) throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kite-blk-\(UUID().uuidString).fifo").path
        #expect(mkfifo(path, 0o600) == 0)
        defer { remove(path) }
        #expect(throws: BlockBackendError.notADisk(path: path)) { try FileBlockBackend(path: path, readOnly: readOnly) }
    }

    @Test("reads and writes reach the file; out-of-range access fails with EINVAL")
    func readWrite() throws {
        let path = try temporaryImage(size: 8192, contents: pattern(8192, seed: 1))
        defer { remove(path) }
        let backend = try FileBlockBackend(path: path, readOnly: false)
        let data = pattern(3000, seed: 99)
        try data.withUnsafeBytes { try backend.write(from: $0, at: 1000) }
        var back = [UInt8](repeating: 0, count: 3000)
        try back.withUnsafeMutableBytes { try backend.read(into: $0, at: 1000) }
        #expect(back == data)
        try backend.flush()
        let onDisk = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(Array(onDisk[1000..<4000]) == data)
        #expect(Array(onDisk[0..<1000]) == Array(pattern(8192, seed: 1)[0..<1000]))

        #expect(throws: Errno.invalidArgument) {
            try back.withUnsafeMutableBytes { try backend.read(into: $0, at: 8192 - 2999) }
        }
        #expect(throws: Errno.invalidArgument) {
            try data.withUnsafeBytes { try backend.write(from: $0, at: .max) }
        }
    }

    @Test("an image that shrinks under the device gives EIO, not a crash")
    func shrunkImage() throws {
        let path = try temporaryImage(size: 8192)
        defer { remove(path) }
        let backend = try FileBlockBackend(path: path, readOnly: false)
        #expect(truncate(path, 1024) == 0)
        var buffer = [UInt8](repeating: 0, count: 4096)
        #expect(throws: Errno.ioError) {
            try buffer.withUnsafeMutableBytes { try backend.read(into: $0, at: 4096) }
        }
    }
}

// MARK: Option parsing

@Suite("virtio-blk options")
struct BlockDeviceConfigTests {
    @Test("accepted option strings", arguments: [
        ("path=disk.img", BlockDeviceConfig(path: "disk.img")),
        ("path=/a/b.raw,readonly=on", BlockDeviceConfig(path: "/a/b.raw", readOnly: true)),
        ("path=x,readonly=off", BlockDeviceConfig(path: "x", readOnly: false)),
        ("serial=ABC123,path=x", BlockDeviceConfig(path: "x", serial: "ABC123")),
        ("path=x,serial=01234567890123456789,readonly=on",
         BlockDeviceConfig(path: "x", readOnly: true, serial: "01234567890123456789")),
        ("path=x,serial=", BlockDeviceConfig(path: "x", serial: "")),
        ("path=a,,b.img", BlockDeviceConfig(path: "a,b.img")),
        ("path=a,,,readonly=on", BlockDeviceConfig(path: "a,", readOnly: true)),
        ("path=a=b", BlockDeviceConfig(path: "a=b")),
    ])
    func accepted(text: String, expected: BlockDeviceConfig) throws {
        #expect(try BlockDeviceConfig.parse(text) == expected)
    }

    @Test("rejected option strings, each with a one-line message", arguments: [
        ("", "disk needs path=FILE"),
        (",path=x", "empty disk option in ',path=x'"),
        ("readonly=on", "disk needs path=FILE"),
        ("path=", "disk path is empty"),
        ("disk.img", "disk option 'disk.img' is not key=value"),
        ("path=x,", "empty disk option in 'path=x,'"),
        ("path=x,size=10G", "unknown disk option 'size' (known: path, readonly, serial)"),
        ("path=x,readonly=yes", "disk option readonly must be on or off, not 'yes'"),
        ("path=x,readonly=", "disk option readonly must be on or off, not ''"),
        ("path=x,path=y", "disk option path is given twice"),
        ("path=x,readonly=on,readonly=off", "disk option readonly is given twice"),
        ("path=x,serial=012345678901234567890", "disk serial '012345678901234567890' is 21 bytes; the most is 20"),
        ("path=x,serial=caf\u{E9}", "disk serial must be printable ASCII"),
        ("path=x,serial=a\tb", "disk serial must be printable ASCII"),
    ])
    func rejected(text: String, message: String) {
        #expect(throws: BlockDeviceConfigError(message)) { try BlockDeviceConfig.parse(text) }
        #expect(!message.contains("\n"))
    }
}
