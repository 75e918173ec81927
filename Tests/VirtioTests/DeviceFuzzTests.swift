#if canImport(Glibc)
import Glibc
#endif
import GuestMemory
import Synchronization
import Testing
import Virtio
@testable import VirtioDevices

// In-process fuzzing of every device's request parsing, in the spirit of
// `fuzzedQueuesNeverEscapeGuestMemory`: a hostile driver posts well-formed descriptor
// chains whose buffers hold random bytes (random headers, lengths, types, ops, CIDs,
// ports, sectors), with random buffer counts, sizes and readable/writable splits, some
// placed against the edges of a RAM region or (rarely) in the hole. After every
// `process` call:
//   - it returned, or threw a `VirtqueueError`, and only if a chain had a buffer outside RAM;
//   - no byte of guest RAM changed outside the writable buffers posted and the used rings
//     (readable buffers, gaps between buffers, descriptor tables and avail rings are all
//     guard bytes);
//   - every used element names a chain that was outstanding, and its length is at most
//     that chain's writable length.
// Deterministic: each test has a fixed seed, so a failure names a reproducible iteration.

// MARK: Random numbers

/// xorshift64*: small, fast, and the same sequence on every run.
private struct Xorshift: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }
    mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 2_685_821_657_736_338_717
    }
    mutating func below(_ n: Int) -> Int { n <= 1 ? 0 : Int(next() % UInt64(n)) }
    mutating func inRange(_ range: ClosedRange<Int>) -> Int { range.lowerBound + below(range.count) }
    /// True with probability `percent` / 100.
    mutating func chance(_ percent: Int) -> Bool { below(100) < percent }
    mutating func pick<T>(_ values: [T]) -> T { values[below(values.count)] }
    mutating func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        out.withUnsafeMutableBytes { raw in
            var i = 0
            while i + 8 <= raw.count { raw.storeBytes(of: next(), toByteOffset: i, as: UInt64.self); i += 8 }
            while i < raw.count { raw[i] = UInt8(truncatingIfNeeded: next()); i += 1 }
        }
        return out
    }
}

private struct FuzzFailure: Error, CustomStringConvertible {
    var description: String
}

// MARK: Harness

/// Guest RAM with a hole: region A [0, 64 KiB), hole [64, 128 KiB), region B [128, 192 KiB).
/// Queue q has its rings at q * 0x800 (descriptors +0, avail +0x400, used +0x500); buffers
/// live in [0x2000, 64 KiB) of A and anywhere in B.
private final class DeviceFuzzHarness {
    static let regionA: (base: UInt64, size: UInt64) = (0, 0x10000)
    static let hole: (base: UInt64, size: UInt64) = (0x10000, 0x10000)
    static let regionB: (base: UInt64, size: UInt64) = (0x20000, 0x10000)
    static let queueSize: UInt16 = 64
    static let dataStartA: UInt64 = 0x2000
    static func ringBase(_ queue: Int) -> UInt64 { UInt64(queue) * 0x800 }
    static let usedRingLength = 6 + 8 * UInt64(queueSize)

    struct Chain {
        var buffers: [FakeDriver.Buffer]
        var readableLength: UInt64
        var writableLength: UInt64
    }

    let memory: GuestMemory
    var rng: Xorshift
    let name: String
    var iteration = 0

    private var drivers: [FakeDriver] = []
    var queues: [Virtqueue] = []
    /// A queue that threw (a buffer outside RAM) is not used again this iteration.
    private var dead: [Bool] = []
    /// Chains posted and not yet used, by queue and head.
    private var outstanding: [[UInt16: Chain]] = []
    /// Queues that hold a chain with a buffer outside RAM (so may legitimately throw).
    private var hasBadChain: [Bool] = []
    private var usedSeen: [UInt16] = []
    private var descriptorsUsed: [Int] = []
    /// Every writable buffer posted this iteration: the device may write there.
    private var writableRanges: [(UInt64, UInt64)] = []
    private var nextA = dataStartA
    private var nextB = regionB.base
    private let saved: [UnsafeMutableRawBufferPointer]

    init(name: String, seed: UInt64) throws {
        self.name = name
        rng = Xorshift(seed: seed)
        memory = try GuestMemory(layout: [Self.regionA, Self.regionB])
        saved = memory.regions.map { .allocate(byteCount: Int($0.size), alignment: 16) }
        for region in memory.regions {
            try memory.write(rng.bytes(Int(region.size)), at: region.base)
        }
    }

    deinit { saved.forEach { $0.deallocate() } }

    func fail(_ message: String) -> FuzzFailure {
        FuzzFailure(description: "\(name) iteration \(iteration): \(message)")
    }

    /// Fresh drivers and queues for `count` queues; RAM outside the rings keeps its bytes.
    func startIteration(_ number: Int, queueCount: Int) throws {
        iteration = number
        drivers = try (0..<queueCount).map { q in
            let base = Self.ringBase(q)
            return try FakeDriver(memory: memory, size: Self.queueSize, descriptorTable: base,
                                  availableRing: base + 0x400, usedRing: base + 0x500)
        }
        queues = drivers.map { $0.makeQueue(eventIndex: rng.chance(50)) }
        dead = Array(repeating: false, count: queueCount)
        outstanding = Array(repeating: [:], count: queueCount)
        hasBadChain = Array(repeating: false, count: queueCount)
        usedSeen = Array(repeating: 0, count: queueCount)
        descriptorsUsed = Array(repeating: 0, count: queueCount)
        writableRanges = []
    }

    func isDead(_ queue: Int) -> Bool { dead[queue] }

    // MARK: Building chains

    /// A buffer length a fuzzer would try: empty, tiny, around header sizes, sector
    /// multiples, medium, and (rarely) large.
    func fuzzLength() -> UInt32 {
        switch rng.below(100) {
        case 0..<12: return 0
        case 12..<30: return UInt32(rng.inRange(1...16))
        case 30..<50:
            let base = rng.pick([1, 12, 16, 26, 44, 45, 88, 512, 1024, 1526, 2048])
            return UInt32(max(0, base + rng.inRange(-1...1)))
        case 50..<78: return UInt32(rng.inRange(1...600))
        case 78..<97: return UInt32(rng.inRange(600...3000))
        default: return UInt32(rng.inRange(3000...60000))
        }
    }

    /// Random counts: 1 to 4 buffers, a random number of them readable (first).
    func randomSplit() -> (readable: Int, writable: Int) {
        let total = rng.inRange(1...4)
        let readable = rng.inRange(0...total)
        return (readable, total - readable)
    }

    /// Where to put a buffer of `length` bytes: usually the next free spot of A or B (with
    /// a random gap of guard bytes), sometimes flush against a region edge, and with
    /// `badPerMille` / 1000 chance somewhere that is usually not (wholly) in RAM.
    private func place(_ length: UInt32, badPerMille: Int) -> UInt64 {
        let len = UInt64(length)
        if rng.below(1000) < badPerMille {
            switch rng.below(4) {
            case 0: return Self.hole.base + UInt64(rng.below(Int(Self.hole.size)))              // in the hole
            case 1: return Self.regionA.base + Self.regionA.size - UInt64(rng.inRange(1...Int(max(len / 2, 1))))
            case 2: return Self.regionB.base + Self.regionB.size - UInt64(rng.inRange(1...Int(max(len / 2, 1))))
            default: return Self.regionB.base - 1 - UInt64(rng.below(8))                     // starts in the hole
            }
        }
        switch rng.below(100) {
        case 0..<6 where len <= Self.regionA.size - Self.dataStartA:
            return Self.regionA.base + Self.regionA.size - len     // ends at A's end
        case 6..<12:
            return Self.regionB.base + Self.regionB.size - len     // ends at B's end
        case 12..<16:
            return Self.regionB.base                               // starts at B's start
        default:
            let gap = UInt64(rng.below(32))
            if rng.chance(50), len <= Self.regionA.size - Self.dataStartA {
                if nextA + gap + len > Self.regionA.size { nextA = Self.dataStartA }
                let address = nextA + gap
                nextA = address + len
                return address
            }
            if nextB + gap + len > Self.regionB.base + Self.regionB.size { nextB = Self.regionB.base }
            let address = nextB + gap
            nextB = address + len
            return address
        }
    }

    /// Posts a chain of the given buffer lengths on `queue`. The readable buffers hold
    /// `stream` scattered across them in order (then random bytes); writable buffers hold
    /// random bytes. Returns nil when the queue is out of descriptors or dead.
    @discardableResult
    func post(queue: Int, readable: [UInt32], writable: [UInt32], stream: [UInt8] = [],
              badPerMille: Int = 5) throws -> Chain? {
        let count = readable.count + writable.count
        guard count > 0, !dead[queue], descriptorsUsed[queue] + count <= Int(Self.queueSize) else { return nil }
        var buffers: [FakeDriver.Buffer] = []
        var bad = false
        var offset = 0
        for (i, length) in (readable + writable).enumerated() {
            let isWritable = i >= readable.count
            let address = place(length, badPerMille: badPerMille)
            if memory.contains(GuestAddress(address), length: UInt64(length)) {
                var content = rng.bytes(Int(length))
                if !isWritable, offset < stream.count {
                    let n = min(Int(length), stream.count - offset)
                    content.replaceSubrange(0..<n, with: stream[offset..<offset + n])
                    offset += n
                }
                try memory.write(content, at: GuestAddress(address))
            } else {
                bad = true
            }
            buffers.append(FakeDriver.Buffer(address: address, length: length, isWritable: isWritable))
            if isWritable { writableRanges.append((address, UInt64(length))) }
        }
        let head = try drivers[queue].addChain(buffers)
        descriptorsUsed[queue] += count
        let chain = Chain(buffers: buffers,
                          readableLength: readable.reduce(0) { $0 + UInt64($1) },
                          writableLength: writable.reduce(0) { $0 + UInt64($1) })
        outstanding[queue][head] = chain
        if bad { hasBadChain[queue] = true }
        return chain
    }

    // MARK: Running and checking

    /// Runs `body` (a `process` call on `queue`) and checks everything the header promises.
    /// Returns what body returned, or nil when it threw (acceptably).
    @discardableResult
    func run<T>(queue: Int, _ body: (inout Virtqueue) throws -> T) throws -> T? {
        guard !dead[queue] else { return nil }
        snapshot()
        var result: T?
        do {
            result = try body(&queues[queue])
        } catch let error as VirtqueueError {
            guard hasBadChain[queue] else { throw fail("queue \(queue) threw \(error) but every buffer was in RAM") }
            dead[queue] = true
        } catch {
            throw fail("queue \(queue) threw \(type(of: error)) \(error), not a VirtqueueError")
        }
        try checkGuardBytes()
        for q in drivers.indices { try checkUsed(q) }
        return result
    }

    private func snapshot() {
        for (i, region) in memory.regions.enumerated() {
            let host = try! memory.hostBuffer(at: region.base, length: region.size)
            saved[i].copyMemory(from: UnsafeRawBufferPointer(host))
        }
    }

    private func checkGuardBytes() throws {
        var exempt = writableRanges
        for q in drivers.indices { exempt.append((Self.ringBase(q) + 0x500, Self.usedRingLength)) }
        for (i, region) in memory.regions.enumerated() {
            let host = try memory.hostBuffer(at: region.base, length: region.size)
            for (address, length) in exempt {
                let start = max(address, region.base.raw)
                let (sum, overflow) = address.addingReportingOverflow(length)
                let end = min(overflow ? UInt64.max : sum, region.end)
                guard start < end else { continue }
                let offset = Int(start - region.base.raw)
                UnsafeMutableRawBufferPointer(rebasing: saved[i][offset..<offset + Int(end - start)])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: host[offset..<offset + Int(end - start)]))
            }
            if memcmp(saved[i].baseAddress!, host.baseAddress!, host.count) != 0 {
                let first = (0..<host.count).first { saved[i][$0] != host[$0] }!
                throw fail("guard byte at guest address 0x\(String(region.base.raw + UInt64(first), radix: 16)) changed from \(saved[i][first]) to \(host[first])")
            }
        }
    }

    /// Every new used element names an outstanding chain and stays within its writable length.
    private func checkUsed(_ q: Int) throws {
        let published = try drivers[q].usedIndex()
        while usedSeen[q] != published {
            let element = try drivers[q].usedElement(usedSeen[q])
            guard element.id < UInt32(Self.queueSize),
                  let chain = outstanding[q].removeValue(forKey: UInt16(element.id)) else {
                throw fail("queue \(q) used element \(usedSeen[q]) names head \(element.id), which was not outstanding")
            }
            guard UInt64(element.length) <= chain.writableLength else {
                throw fail("queue \(q) head \(element.id): used length \(element.length) > writable length \(chain.writableLength)")
            }
            usedSeen[q] &+= 1
        }
    }

    /// The bytes the device wrote to a used chain: the first `count` writable bytes. Nil when
    /// a writable buffer of the chain overlaps another one posted this iteration (a later
    /// chain may then have overwritten them).
    func writtenBytes(_ chain: Chain, count: Int) throws -> [UInt8]? {
        for buffer in chain.buffers where buffer.isWritable && buffer.length > 0 {
            let end = buffer.address + UInt64(buffer.length)
            let overlapping = writableRanges.filter { $0.0 < end && buffer.address < $0.0 + $0.1 }
            if overlapping.count > 1 { return nil }
        }
        var out: [UInt8] = []
        for buffer in chain.buffers where buffer.isWritable && out.count < count {
            let take = min(Int(buffer.length), count - out.count)
            out += try memory.read(at: GuestAddress(buffer.address), count: take)
        }
        return out
    }

    /// `run`, then the used elements it published on `queue`, each with its chain.
    func runCollecting<T>(queue: Int, _ body: (inout Virtqueue) throws -> T) throws -> [(Chain, UInt32)] {
        let before = outstanding[queue]
        let start = usedSeen[queue]
        try run(queue: queue, body)
        var out: [(Chain, UInt32)] = []
        var position = start
        while position != usedSeen[queue] {
            let element = try drivers[queue].usedElement(position)
            out.append((before[UInt16(element.id)]!, element.length))
            position &+= 1
        }
        return out
    }
}

extension Array where Element == UInt8 {
    fileprivate mutating func putLE<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        for i in 0..<(T.bitWidth / 8) { self[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
    }
}

// MARK: Hostile vsock host

/// A host stream that behaves randomly: partial writes, EAGAIN, breakage, short and
/// oversized reads, end of stream.
private final class FuzzStream: VsockHostStream {
    var rng: Xorshift
    var closed = 0
    init(seed: UInt64) { rng = Xorshift(seed: seed) }
    func write(_ bytes: ArraySlice<UInt8>) -> Int? {
        switch rng.below(100) {
        case 0..<5: return nil
        case 5..<20: return 0
        case 20..<40: return rng.below(bytes.count + 1)
        default: return bytes.count
        }
    }
    func read(max: Int) -> [UInt8]? {
        switch rng.below(100) {
        case 0..<5: return nil
        case 5..<25: return []
        case 25..<28: return rng.bytes(max + rng.inRange(1...100))     // more than asked
        default: return rng.bytes(rng.inRange(1...Swift.max(1, Swift.min(max, 3000))))
        }
    }
    func shutdownWrite() {}
    func setReadInterest(_ enabled: Bool) {}
    func setWriteInterest(_ enabled: Bool) {}
    func accepted(localPort: UInt32) {}
    func close() { closed += 1 }
}

private final class FuzzHost: VsockHost {
    var rng: Xorshift
    var streams: [FuzzStream] = []
    init(seed: UInt64) { rng = Xorshift(seed: seed) }
    func connect(hostPort: UInt32) -> (any VsockHostStream)? {
        if rng.chance(25) { return nil }
        // A stream still in use (a misbehaving host; the device must refuse it). Never one
        // the device closed: its contract is one close per stream handed out.
        if rng.chance(5), let old = streams.last, old.closed == 0 { return old }
        let stream = FuzzStream(seed: rng.next())
        streams.append(stream)
        return stream
    }
}

private final class Lines: Sendable {
    private let lines = Mutex<[[UInt8]]>([])
    var all: [[UInt8]] { lines.withLock { $0 } }
    func append(_ line: [UInt8]) { lines.withLock { $0.append(line) } }
}

// MARK: Tests

@Suite struct DeviceFuzzTests {
    @Test func blockRequestsStayInTheirChains() throws {
        let h = try DeviceFuzzHarness(name: "virtio-blk", seed: 0xB10C)
        let writable = MemoryBlockBackend(size: 64 * 512)
        let readOnly = MemoryBlockBackend(size: 64 * 512 + 100, readOnly: true)
        let capacity: UInt64 = 64
        for iteration in 0..<8000 {
            try h.startIteration(iteration, queueCount: 1)
            let backend = h.rng.chance(20) ? readOnly : writable
            backend.failures = [:]
            if h.rng.chance(10) {
                backend.failures[h.rng.pick([.read, .write, .flush])] = h.rng.pick([.ioError, .noSpace, .badFileDescriptor])
            }
            let device = BlockDevice(backend: backend, serial: h.rng.chance(50) ? "fuzz-serial-0123456789" : nil)
            device.activate(features: h.rng.chance(50) ? BlockFeature.flush : 0, memory: h.memory)
            for _ in 0..<h.rng.inRange(1...8) {
                var header = [UInt8](repeating: 0, count: 16)
                let type = h.rng.chance(85) ? h.rng.pick([0, 1, 4, 8] as [UInt32]) : UInt32(truncatingIfNeeded: h.rng.next())
                header.putLE(type, at: 0)
                header.putLE(UInt32(truncatingIfNeeded: h.rng.next()), at: 4)
                let sector: UInt64 = h.rng.pick([0, UInt64(h.rng.below(Int(capacity) + 2)), capacity - 1, capacity,
                                                  capacity - 8, UInt64.max / 512, UInt64.max / 512 + 1, UInt64.max, h.rng.next()])
                header.putLE(sector, at: 8)
                let stream = header + h.rng.bytes(h.rng.below(64))
                if h.rng.chance(50) {
                    // Shaped like a real request: header, sector-sized data, status byte.
                    let isWrite = h.rng.chance(85) ? type == BlockRequestType.write : h.rng.chance(50)
                    var data: [UInt32] = (0..<h.rng.inRange(0...3)).map { _ in UInt32(512 * h.rng.inRange(0...4)) }
                    if h.rng.chance(15), !data.isEmpty { data[0] = UInt32(max(0, Int(data[0]) + h.rng.pick([-1, 1]))) }
                    let headerSplit: [UInt32] = h.rng.chance(80) ? [16] : [UInt32(h.rng.inRange(0...16)), UInt32(h.rng.inRange(0...16))]
                    let status: [UInt32] = [h.rng.chance(85) ? 1 : UInt32(h.rng.pick([0, 2, 16]))]
                    try h.post(queue: 0, readable: headerSplit + (isWrite ? data : []),
                               writable: (isWrite ? [] : data) + status, stream: stream)
                } else {
                    let split = h.randomSplit()
                    try h.post(queue: 0, readable: (0..<split.readable).map { _ in h.fuzzLength() },
                               writable: (0..<split.writable).map { _ in h.fuzzLength() }, stream: stream)
                }
            }
            try h.run(queue: 0) { try device.process(queue: 0, &$0, memory: h.memory) }
            #expect(writable.bytes.count == 64 * 512 && readOnly.bytes.count == 64 * 512 + 100)
            #expect(readOnly.writeCount == 0)
        }
    }

    @Test func networkTransmitStaysInItsChains() throws {
        let h = try DeviceFuzzHarness(name: "virtio-net tx", seed: 0x7E7)
        for iteration in 0..<8000 {
            try h.startIteration(iteration, queueCount: 2)
            let backend = MemoryNetworkBackend()
            if h.rng.chance(5) { backend.sendFailure = .noBufferSpace }
            let device = NetworkDevice(backend: backend, mac: MACAddress("52:54:00:12:34:56")!)
            device.activate(features: VirtioFeature.version1 | NetworkFeature.mac, memory: h.memory)
            var posted = 0
            for _ in 0..<h.rng.inRange(1...8) {
                var header = h.rng.bytes(NetworkDevice.headerSize)
                if h.rng.chance(70) { header[0] = 0 }
                if h.rng.chance(80) { header[1] = 0 }
                let split = h.randomSplit()
                var readable = (0..<max(split.readable, 1)).map { _ in h.fuzzLength() }
                if h.rng.chance(3) { readable = [60000, 8000] }                  // over maxPacketSize
                if try h.post(queue: 1, readable: readable,
                              writable: (0..<split.writable).map { _ in h.fuzzLength() },
                              stream: header + h.rng.bytes(64)) != nil { posted += 1 }
            }
            try h.run(queue: 1) { try device.process(queue: 1, &$0, memory: h.memory) }
            let counters = device.counters
            #expect(counters.framesSent + counters.transmitDropped <= posted)
            for frame in backend.sent {
                guard frame.count >= NetworkDevice.headerSize + NetworkDevice.ethernetHeaderSize,
                      frame.count <= NetworkDevice.maxPacketSize, frame[0] & 1 == 0, frame[1] == 0 else {
                    throw h.fail("sent a \(frame.count)-byte frame with flags \(frame.first ?? 0)")
                }
            }
        }
    }

    @Test func networkReceiveStaysInItsChains() throws {
        let h = try DeviceFuzzHarness(name: "virtio-net rx", seed: 0x4C7)
        for iteration in 0..<6000 {
            try h.startIteration(iteration, queueCount: 2)
            let backend = MemoryNetworkBackend()
            let device = NetworkDevice(backend: backend, mac: MACAddress("52:54:00:12:34:56")!)
            device.activate(features: VirtioFeature.version1 | NetworkFeature.mac, memory: h.memory)
            for _ in 0..<h.rng.inRange(1...3) {
                for _ in 0..<h.rng.below(5) {
                    let length = switch h.rng.below(100) {
                    case 0..<60: h.rng.inRange(26...1600)
                    case 60..<75: h.rng.inRange(0...25)
                    case 75..<95: h.rng.inRange(1600...66000)
                    default: h.rng.inRange(NetworkDevice.maxPacketSize...NetworkDevice.maxPacketSize + 2000)
                    }
                    var frame = h.rng.bytes(length)
                    if length > 0, h.rng.chance(80) { frame[0] &= ~1 }
                    if length > 1, h.rng.chance(80) { frame[1] = 0 }
                    backend.deliver(frame)
                }
                backend.receiveFailure = h.rng.chance(5) ? .ioError : nil
                for _ in 0..<h.rng.below(5) {
                    if h.rng.chance(40) {
                        let size = UInt32(h.rng.pick([NetworkDevice.minimumReceiveBuffer, 2048, 100, NetworkDevice.maxPacketSize]))
                        try h.post(queue: 0, readable: [], writable: [size])
                    } else {
                        let split = h.randomSplit()
                        let readableCount = h.rng.chance(85) ? 0 : split.readable
                        try h.post(queue: 0, readable: (0..<readableCount).map { _ in h.fuzzLength() },
                                   writable: (0..<max(split.writable, 1)).map { _ in h.fuzzLength() })
                    }
                }
                let used = try h.runCollecting(queue: 0) { try device.process(queue: 0, &$0, memory: h.memory) }
                for (chain, length) in used where length > 0 {
                    guard let written = try h.writtenBytes(chain, count: Int(length)) else { continue }
                    // Without GUEST_CSUM / MRG_RXBUF: flags 0, gso none, num_buffers 1.
                    guard written.count >= NetworkDevice.headerSize, written[0] == 0, written[1] == 0,
                          written[10] == 1, written[11] == 0 else {
                        throw h.fail("received a frame with header \(written.prefix(12))")
                    }
                }
                if h.rng.chance(5) { device.reset() }
            }
        }
    }

    @Test func vsockPacketsStayInTheirChains() throws {
        let h = try DeviceFuzzHarness(name: "virtio-vsock", seed: 0x50C)
        let guestCID: UInt64 = 42
        let hostPorts: [UInt32] = [1, 2, 3, VsockDevice.firstLocalPort, VsockDevice.firstLocalPort + 1]
        let guestPorts: [UInt32] = [1000, 1001, 1002]
        for iteration in 0..<6000 {
            try h.startIteration(iteration, queueCount: 3)
            let host = FuzzHost(seed: h.rng.next())
            let device = VsockDevice(guestCID: guestCID, host: host)
            device.activate(features: VirtioFeature.version1, memory: h.memory)
            var hostStreams: [FuzzStream] = []
            for _ in 0..<h.rng.inRange(1...4) {
                // Guest -> host packets.
                for _ in 0..<h.rng.below(5) {
                    let split = h.randomSplit()
                    var readable = (0..<split.readable).map { _ in h.fuzzLength() }
                    if h.rng.chance(60) { readable = [44] + (h.rng.chance(50) ? [UInt32(h.rng.below(600))] : []) }
                    let payload = readable.reduce(0) { $0 + Int($1) } - 44
                    let len: UInt32 = switch h.rng.below(10) {
                    case 0..<5: UInt32(max(payload, 0))
                    case 5: 0
                    case 6: UInt32(max(payload + 1, 0))
                    case 7: UInt32(VsockDevice.maxPacketData + h.rng.below(2))
                    case 8: UInt32.max
                    default: UInt32(truncatingIfNeeded: h.rng.next())
                    }
                    let header = VsockHeader(
                        srcCID: h.rng.chance(90) ? guestCID : h.rng.pick([2, 0, UInt64.max, h.rng.next()]),
                        dstCID: h.rng.chance(90) ? VsockDevice.hostCID : h.rng.pick([42, 1, UInt64.max, h.rng.next()]),
                        srcPort: h.rng.chance(90) ? h.rng.pick(guestPorts) : UInt32(truncatingIfNeeded: h.rng.next()),
                        dstPort: h.rng.chance(90) ? h.rng.pick(hostPorts) : UInt32(truncatingIfNeeded: h.rng.next()),
                        len: len,
                        type: h.rng.chance(92) ? VsockHeader.typeStream : UInt16(truncatingIfNeeded: h.rng.next()),
                        rawOp: h.rng.chance(92) ? UInt16(h.rng.inRange(1...7)) : UInt16(truncatingIfNeeded: h.rng.next() % 12),
                        flags: h.rng.chance(80) ? UInt32(h.rng.below(4)) : UInt32(truncatingIfNeeded: h.rng.next()),
                        bufAlloc: h.rng.pick([0, VsockDevice.bufferAllocation, 100, UInt32(truncatingIfNeeded: h.rng.next())]),
                        fwdCnt: h.rng.pick([0, 100, UInt32(truncatingIfNeeded: h.rng.next())]))
                    try h.post(queue: 1, readable: readable, writable: (0..<split.writable).map { _ in h.fuzzLength() },
                               stream: header.bytes + h.rng.bytes(64))
                }
                try h.run(queue: 1) { try device.process(queue: 1, &$0, memory: h.memory) }

                // Host events.
                let streams = host.streams + hostStreams
                for _ in 0..<h.rng.inRange(0...6) where !streams.isEmpty {
                    let stream = h.rng.pick(streams)
                    switch h.rng.below(10) {
                    case 0..<5: device.hostReadable(stream)
                    case 5..<8: device.hostWritable(stream)
                    default: device.hostClosed(stream)
                    }
                }
                if h.rng.chance(20) {
                    let stream = FuzzStream(seed: h.rng.next())
                    hostStreams.append(stream)
                    _ = device.hostConnected(stream: stream, guestPort: h.rng.pick(guestPorts))
                }

                // Host -> guest packets.
                for _ in 0..<h.rng.below(5) {
                    let split = h.randomSplit()
                    var writable = (0..<max(split.writable, 1)).map { _ in h.fuzzLength() }
                    if h.rng.chance(40) { writable = [UInt32(44 + h.rng.pick([0, 1, 100, 4096]))] }
                    try h.post(queue: 0, readable: h.rng.chance(90) ? [] : [h.fuzzLength()], writable: writable)
                }
                let used = try h.runCollecting(queue: 0) { try device.process(queue: 0, &$0, memory: h.memory) }
                for (chain, length) in used where length > 0 {
                    guard let written = try h.writtenBytes(chain, count: Int(length)) else { continue }
                    guard let header = VsockHeader(written), header.srcCID == VsockDevice.hostCID,
                          header.dstCID == guestCID, UInt64(header.len) + 44 == UInt64(length),
                          header.type == VsockHeader.typeStream, header.operation != nil else {
                        throw h.fail("rx packet of \(length) bytes with header \(String(describing: VsockHeader(written)))")
                    }
                }

                // The event queue keeps its buffers.
                if h.rng.chance(20) {
                    try h.post(queue: 2, readable: [], writable: [h.fuzzLength()])
                    try h.run(queue: 2) { try device.process(queue: 2, &$0, memory: h.memory) }
                }
                if h.rng.chance(3) { device.reset(); device.activate(features: VirtioFeature.version1, memory: h.memory) }
            }
            device.reset()
            for stream in host.streams + hostStreams where stream.closed > 1 {
                throw h.fail("a host stream was closed \(stream.closed) times")
            }
        }
    }

    @Test func consoleStaysInItsChains() throws {
        let h = try DeviceFuzzHarness(name: "virtio-console", seed: 0xC05)
        for iteration in 0..<6000 {
            try h.startIteration(iteration, queueCount: 2)
            let output = Lines()
            let device = ConsoleDevice(output: { output.append($0) })
            var input: [UInt8] = []
            for _ in 0..<h.rng.inRange(1...3) {
                let bytes = h.rng.bytes(h.rng.chance(5) ? ConsoleDevice.maxPendingInput + 10 : h.rng.below(3000))
                input += bytes.prefix(device.enqueueInput(bytes))
                for _ in 0..<h.rng.below(4) {
                    let split = h.randomSplit()
                    try h.post(queue: 1, readable: (0..<split.readable).map { _ in h.fuzzLength() },
                               writable: (0..<split.writable).map { _ in h.fuzzLength() })
                }
                try h.run(queue: 1) { try device.process(queue: 1, &$0, memory: h.memory) }
                for _ in 0..<h.rng.below(4) {
                    let split = h.randomSplit()
                    try h.post(queue: 0, readable: (0..<split.readable).map { _ in h.fuzzLength() },
                               writable: (0..<split.writable).map { _ in h.fuzzLength() })
                }
                let used = try h.runCollecting(queue: 0) { try device.process(queue: 0, &$0, memory: h.memory) }
                for (chain, length) in used {
                    guard Int(length) <= input.count else { throw h.fail("console delivered \(length) of \(input.count) pending bytes") }
                    if let written = try h.writtenBytes(chain, count: Int(length)), !input.starts(with: written) {
                        throw h.fail("console delivered bytes out of order")
                    }
                    input.removeFirst(Int(length))
                }
            }
            for line in output.all where line.isEmpty || line.count > ConsoleDevice.maxOutputPerChain {
                throw h.fail("console output chunk of \(line.count) bytes")
            }
        }
    }

    @Test func entropyStaysInItsChains() throws {
        let h = try DeviceFuzzHarness(name: "virtio-rng", seed: 0xE27)
        let device = EntropyDevice()
        for iteration in 0..<6000 {
            try h.startIteration(iteration, queueCount: 1)
            for _ in 0..<h.rng.inRange(1...8) {
                let split = h.randomSplit()
                try h.post(queue: 0, readable: (0..<split.readable).map { _ in h.fuzzLength() },
                           writable: (0..<split.writable).map { _ in h.fuzzLength() })
            }
            let used = try h.runCollecting(queue: 0) { try device.process(queue: 0, &$0, memory: h.memory) }
            for (chain, length) in used where UInt64(length) != min(chain.writableLength, UInt64(EntropyDevice.maxBytesPerRequest)) {
                throw h.fail("rng filled \(length) of \(chain.writableLength) writable bytes")
            }
        }
    }
}
