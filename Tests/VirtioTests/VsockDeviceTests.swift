import GuestMemory
import Synchronization
import Testing
import Virtio
@testable import VirtioDevices

// MARK: Fixtures

private final class VsockLog: Sendable {
    private let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }
    var sink: @Sendable (String) -> Void { { line in self.lines.withLock { $0.append(line) } } }
}

private final class Counter: Sendable {
    private let value = Mutex(0)
    var count: Int { value.withLock { $0 } }
    func bump() { value.withLock { $0 += 1 } }
}

/// A host stream in memory: `incoming` is what the host peer sent (read by the device),
/// `written` what the device wrote; `writeRoom` limits how much `write` takes (nil: all).
private final class MemoryStream: VsockHostStream {
    var incoming: [UInt8] = []
    var ended = false
    var written: [UInt8] = []
    var writeRoom: Int?
    var broken = false
    var readInterest = false
    var writeInterest = false
    var acceptedPort: UInt32?
    var closeCount = 0
    var wroteShutdown = false
    var largestRead = 0

    func write(_ bytes: ArraySlice<UInt8>) -> Int? {
        if broken { return nil }
        let n = min(bytes.count, writeRoom ?? Int.max)
        written += bytes.prefix(n)
        if let room = writeRoom { writeRoom = room - n }
        return n
    }
    func read(max: Int) -> [UInt8]? {
        largestRead = Swift.max(largestRead, max)
        if incoming.isEmpty { return ended ? nil : [] }
        let n = min(max, incoming.count)
        defer { incoming.removeFirst(n) }
        return Array(incoming.prefix(n))
    }
    func shutdownWrite() { wroteShutdown = true }
    func setReadInterest(_ enabled: Bool) { readInterest = enabled }
    func setWriteInterest(_ enabled: Bool) { writeInterest = enabled }
    func accepted(localPort: UInt32) { acceptedPort = localPort }
    func close() { closeCount += 1 }
}

/// Accepts connections to the ports in `listening` (all ports when nil).
private final class MemoryHost: VsockHost {
    var listening: Set<UInt32>? = []
    var streams: [UInt32: [MemoryStream]] = [:]
    var connectCount = 0
    func connect(hostPort: UInt32) -> (any VsockHostStream)? {
        connectCount += 1
        if let listening, !listening.contains(hostPort) { return nil }
        let stream = MemoryStream()
        streams[hostPort, default: []].append(stream)
        return stream
    }
}

private let guestCID: UInt64 = 42

/// What the guest received: one rx packet.
private struct Received {
    var header: VsockHeader
    var payload: [UInt8]
}

/// A device with a driver per queue in 2 MiB of RAM: rx rings at 0x1000, tx at 0x5000,
/// event at 0x9000; buffers from 0x10000 up, each followed by 64 canary bytes of 0xCC.
private struct VsockFixture {
    let memory: GuestMemory
    let host = MemoryHost()
    let device: VsockDevice
    let log = VsockLog()
    let work = Counter()
    let rxDriver: FakeDriver
    let txDriver: FakeDriver
    var rxQueue: Virtqueue
    var txQueue: Virtqueue
    var next: UInt64 = 0x10000
    /// rx buffers posted, by head index.
    var rxBuffers: [UInt16: FakeDriver.Buffer] = [:]
    var allBuffers: [FakeDriver.Buffer] = []
    var rxSeen: UInt16 = 0
    var txSeen: UInt16 = 0

    init(queueSize: UInt16 = 64) throws {
        memory = try GuestMemory(layout: [(base: 0, size: 2 << 20)])
        let counter = work
        device = VsockDevice(guestCID: guestCID, host: host, receiveWork: { counter.bump() }, log: log.sink)
        rxDriver = try FakeDriver(memory: memory, size: queueSize, descriptorTable: 0x1000, availableRing: 0x2000, usedRing: 0x3000)
        txDriver = try FakeDriver(memory: memory, size: queueSize, descriptorTable: 0x5000, availableRing: 0x6000, usedRing: 0x7000)
        rxQueue = rxDriver.makeQueue()
        txQueue = txDriver.makeQueue()
        device.activate(features: VirtioFeature.version1, memory: memory)
    }

    mutating func place(_ bytes: [UInt8]) throws -> FakeDriver.Buffer {
        let address = next
        try memory.write(bytes, at: GuestAddress(address))
        try memory.write([UInt8](repeating: 0xCC, count: 64), at: GuestAddress(address + UInt64(bytes.count)))
        next += UInt64(bytes.count + 64 + 15) & ~15
        let buffer = FakeDriver.Buffer.readable(address, UInt32(bytes.count))
        allBuffers.append(buffer)
        return buffer
    }

    func canariesIntact() throws -> Bool {
        try allBuffers.allSatisfy { b in
            try memory.read(at: GuestAddress(b.address + UInt64(b.length)), count: 64).allSatisfy { $0 == 0xCC }
        }
    }

    /// Sends raw bytes as one tx chain (optionally split into descriptors) and serves tx.
    mutating func sendRaw(_ bytes: [UInt8], split: Int? = nil) throws {
        if let split, split < bytes.count {
            try txDriver.addChain([try place(Array(bytes[..<split])), try place(Array(bytes[split...]))])
        } else {
            try txDriver.addChain([try place(bytes)])
        }
        _ = try device.process(queue: VsockDevice.transmitQueue, &txQueue, memory: memory)
        while txSeen != (try txDriver.usedIndex()) {
            #expect(try txDriver.usedElement(txSeen).length == 0)
            txSeen &+= 1
        }
    }

    /// A guest packet from `guestPort` to host `hostPort`.
    mutating func send(_ op: VsockOp, guestPort: UInt32 = 5000, hostPort: UInt32 = 1234, payload: [UInt8] = [],
                       flags: UInt32 = 0, bufAlloc: UInt32 = 64 * 1024, fwdCnt: UInt32 = 0) throws {
        let header = VsockHeader(srcCID: guestCID, dstCID: VsockDevice.hostCID, srcPort: guestPort, dstPort: hostPort,
                                 len: UInt32(payload.count), op: op, flags: flags, bufAlloc: bufAlloc, fwdCnt: fwdCnt)
        try sendRaw(header.bytes + payload)
    }

    /// Posts `count` rx buffers of `size` bytes.
    mutating func postReceive(_ count: Int, size: Int = VsockHeader.size + 4096) throws {
        for _ in 0..<count {
            var buffer = try place([UInt8](repeating: 0xEE, count: size))
            buffer.isWritable = true
            let head = try rxDriver.addChain([buffer])
            rxBuffers[head] = buffer
        }
    }

    /// Serves rx and returns the packets the guest got since the last call.
    mutating func receive() throws -> [Received] {
        _ = try device.process(queue: VsockDevice.receiveQueue, &rxQueue, memory: memory)
        var out: [Received] = []
        while rxSeen != (try rxDriver.usedIndex()) {
            let used = try rxDriver.usedElement(rxSeen)
            rxSeen &+= 1
            let buffer = try #require(rxBuffers[UInt16(used.id)])
            #expect(used.length <= buffer.length)
            if used.length == 0 { continue }
            let bytes = try memory.read(at: GuestAddress(buffer.address), count: Int(used.length))
            let header = try #require(VsockHeader(bytes))
            #expect(Int(header.len) == bytes.count - VsockHeader.size)
            #expect(header.srcCID == VsockDevice.hostCID && header.dstCID == guestCID && header.type == 1)
            out.append(Received(header: header, payload: Array(bytes[VsockHeader.size...])))
        }
        return out
    }

    /// Opens a guest-initiated connection from `guestPort` to `hostPort` and consumes the RESPONSE.
    mutating func connect(guestPort: UInt32 = 5000, hostPort: UInt32 = 1234, bufAlloc: UInt32 = 64 * 1024) throws -> MemoryStream {
        host.listening?.insert(hostPort)
        try send(.request, guestPort: guestPort, hostPort: hostPort, bufAlloc: bufAlloc)
        try postReceive(1)
        let got = try receive()
        #expect(got.map(\.header.operation) == [.response])
        return try #require(host.streams[hostPort]?.last)
    }
}

// MARK: Header

@Suite("virtio-vsock header")
struct VsockHeaderTests {
    @Test("encodes little-endian at the spec's offsets and decodes back")
    func roundTrip() throws {
        let header = VsockHeader(srcCID: 0x0102_0304_0506_0708, dstCID: 2, srcPort: 0xAABB_CCDD, dstPort: 7,
                                 len: 300, op: .rw, flags: 3, bufAlloc: 0x1000, fwdCnt: 0x2000)
        let bytes = header.bytes
        #expect(bytes.count == 44)
        #expect(Array(bytes[0..<8]) == [8, 7, 6, 5, 4, 3, 2, 1])
        #expect(Array(bytes[16..<20]) == [0xDD, 0xCC, 0xBB, 0xAA])
        #expect(Array(bytes[24..<28]) == [0x2C, 1, 0, 0])
        #expect(Array(bytes[28..<32]) == [1, 0, 5, 0])
        #expect(Array(bytes[40..<44]) == [0, 0x20, 0, 0])
        #expect(VsockHeader(bytes) == header)
        #expect(VsockHeader(Array(bytes[0..<43])) == nil)
    }

    @Test("device identity and config space")
    func identity() throws {
        let f = try VsockFixture()
        #expect(f.device.type == .vsock)
        #expect(f.device.features == 0)
        #expect(f.device.queueSizes == [256, 256, 256])
        #expect(f.device.readConfig(offset: 0, count: 8) == [42, 0, 0, 0, 0, 0, 0, 0])
        #expect(f.device.readConfig(offset: 4, count: 8) == [0, 0, 0, 0, 0, 0, 0, 0])
    }
}

// MARK: Connections

@Suite("virtio-vsock connections")
struct VsockConnectionTests {
    @Test("guest-initiated: connect, data both ways, guest shutdown closes with RST")
    func guestInitiated() throws {
        var f = try VsockFixture()
        f.host.listening = [1234]
        try f.send(.request, guestPort: 5000, hostPort: 1234)
        #expect(f.device.connectionCount == 1)
        #expect(f.work.count == 1)                       // a RESPONSE is pending
        let stream = try #require(f.host.streams[1234]?.first)
        try f.postReceive(4)
        let response = try f.receive()
        #expect(response.count == 1)
        let r = try #require(response.first).header
        #expect(r.operation == .response && r.srcPort == 1234 && r.dstPort == 5000)
        #expect(r.bufAlloc == VsockDevice.bufferAllocation && r.fwdCnt == 0)
        #expect(stream.readInterest)

        // Guest -> host.
        try f.send(.rw, payload: Array("hello".utf8))
        #expect(stream.written == Array("hello".utf8))

        // Host -> guest.
        stream.incoming = Array("world".utf8)
        f.device.hostReadable(stream)
        #expect(!stream.readInterest)                    // the device reads it now
        #expect(f.work.count == 2)
        let data = try f.receive()
        #expect(data.count == 1)
        #expect(data.first?.header.operation == .rw)
        #expect(data.first?.payload == Array("world".utf8))
        #expect(data.first?.header.fwdCnt == 5)          // the 5 bytes the host took
        #expect(stream.readInterest)                     // drained: watch again

        // Guest closes: SHUTDOWN(both) -> RST, stream closed.
        try f.send(.shutdown, flags: VsockShutdownFlag.both)
        let end = try f.receive()
        #expect(end.map(\.header.operation) == [.rst])
        #expect(stream.closeCount == 1)
        #expect(f.device.connectionCount == 0)
        #expect(try f.canariesIntact())
        #expect(f.log.all.isEmpty)
    }

    @Test("host end of stream: SHUTDOWN(SEND) to the guest, which may still answer; its RST closes")
    func hostEnds() throws {
        var f = try VsockFixture()
        let stream = try f.connect()
        stream.incoming = [1, 2, 3]
        stream.ended = true
        f.device.hostReadable(stream)
        try f.postReceive(2)
        let got = try f.receive()
        #expect(got.map(\.header.operation) == [.rw, .shutdown])
        #expect(got.first?.payload == [1, 2, 3])
        #expect(got.last?.header.flags == VsockShutdownFlag.send)
        #expect(stream.closeCount == 0)
        // A half-closed host still reads the guest's answer.
        try f.send(.rw, payload: [9, 8])
        #expect(stream.written == [9, 8])
        #expect(stream.closeCount == 0)
        try f.send(.rst)
        #expect(stream.closeCount == 1)
        #expect(f.device.connectionCount == 0)
        try f.postReceive(1)
        #expect(try f.receive().isEmpty)                 // no RST for a RST
    }

    @Test("guest SHUTDOWN(SEND) half-closes the host stream once its data is written")
    func halfClose() throws {
        var f = try VsockFixture()
        let stream = try f.connect()
        stream.writeRoom = 2
        try f.send(.rw, payload: [1, 2, 3, 4])
        #expect(stream.written == [1, 2])
        #expect(stream.writeInterest)
        try f.send(.shutdown, flags: VsockShutdownFlag.send)
        #expect(!stream.wroteShutdown)
        stream.writeRoom = nil
        f.device.hostWritable(stream)
        #expect(stream.written == [1, 2, 3, 4])
        #expect(!stream.writeInterest)
        #expect(stream.wroteShutdown)
        #expect(f.device.connectionCount == 1)
        // Data after SHUTDOWN(SEND) is a protocol error: reset.
        try f.send(.rw, payload: [9])
        #expect(stream.closeCount == 1)
        try f.postReceive(1)
        #expect(try f.receive().map(\.header.operation) == [.rst])
    }

    @Test("a refused connection gets RST with the ports swapped")
    func refused() throws {
        var f = try VsockFixture()
        f.host.listening = [1]
        try f.send(.request, guestPort: 7000, hostPort: 99)
        #expect(f.host.connectCount == 1)
        #expect(f.device.connectionCount == 0)
        try f.postReceive(1)
        let got = try f.receive()
        #expect(got.count == 1)
        let h = try #require(got.first).header
        #expect(h.operation == .rst && h.srcPort == 99 && h.dstPort == 7000)
    }

    @Test("packets for unknown connections get RST; RST for unknown ones is ignored")
    func unknownConnection() throws {
        var f = try VsockFixture()
        try f.send(.rw, payload: [1])
        try f.send(.rst)
        try f.send(.creditRequest)
        try f.postReceive(4)
        #expect(try f.receive().map(\.header.operation) == [.rst, .rst])
    }

    @Test("host-initiated: REQUEST to the guest, RESPONSE completes it, RST refuses it")
    func hostInitiated() throws {
        var f = try VsockFixture()
        let stream = MemoryStream()
        let port = try #require(f.device.hostConnected(stream: stream, guestPort: 52))
        #expect(port == VsockDevice.firstLocalPort)
        #expect(f.work.count == 1)
        #expect(f.device.hostConnected(stream: stream, guestPort: 52) == nil)   // same stream twice
        try f.postReceive(2)
        let got = try f.receive()
        #expect(got.count == 1)
        let request = try #require(got.first).header
        #expect(request.operation == .request && request.srcPort == port && request.dstPort == 52)
        #expect(request.bufAlloc == VsockDevice.bufferAllocation)
        #expect(!stream.readInterest)
        try f.send(.response, guestPort: 52, hostPort: port)
        #expect(stream.acceptedPort == port)
        #expect(stream.readInterest)
        try f.send(.rw, guestPort: 52, hostPort: port, payload: [7, 7])
        #expect(stream.written == [7, 7])

        // A second one, refused by the guest.
        let other = MemoryStream()
        let port2 = try #require(f.device.hostConnected(stream: other, guestPort: 52))
        #expect(port2 == port + 1)
        try f.postReceive(1)
        #expect(try f.receive().map(\.header.operation) == [.request])
        try f.send(.rst, guestPort: 52, hostPort: port2)
        #expect(other.closeCount == 1)
        #expect(other.acceptedPort == nil)
        #expect(f.device.connectionCount == 1)
    }

    @Test("host connections are refused before the driver is ready and after reset")
    func hostConnectInactive() throws {
        let memoryHost = MemoryHost()
        let device = VsockDevice(guestCID: 3, host: memoryHost)
        #expect(device.hostConnected(stream: MemoryStream(), guestPort: 1) == nil)
        var f = try VsockFixture()
        let stream = try f.connect()
        f.device.reset()
        #expect(stream.closeCount == 1)
        #expect(f.device.connectionCount == 0)
        #expect(f.device.hostConnected(stream: MemoryStream(), guestPort: 1) == nil)
    }

    @Test("more than maxConnections: RST")
    func tooMany() throws {
        var f = try VsockFixture()
        f.host.listening = nil
        for i in 0..<VsockDevice.maxConnections {
            try f.send(.request, guestPort: UInt32(10_000 + i), hostPort: 80)
        }
        #expect(f.device.connectionCount == VsockDevice.maxConnections)
        #expect(f.device.pendingPacketCount == VsockDevice.maxConnections)
        try f.send(.request, guestPort: 1, hostPort: 80)
        #expect(f.host.connectCount == VsockDevice.maxConnections)
        #expect(f.device.connectionCount == VsockDevice.maxConnections)
        // Drain: 1024 RESPONSEs, then one RST.
        var ops: [VsockOp?] = []
        while ops.count < VsockDevice.maxConnections + 1 {
            try f.postReceive(32, size: VsockHeader.size)
            let got = try f.receive()
            if got.isEmpty { break }
            ops += got.map(\.header.operation)
        }
        #expect(ops.count == VsockDevice.maxConnections + 1)
        #expect(ops.dropLast().allSatisfy { $0 == .response })
        #expect(ops.last == .rst)
        #expect(f.log.all.contains { $0.contains("1024 are open") })
    }

    @Test("packets waiting for rx buffers are bounded")
    func pendingBound() throws {
        var f = try VsockFixture()
        for i in 0..<(VsockDevice.maxPendingControl + 10) {
            try f.send(.rw, guestPort: UInt32(i), hostPort: 9, payload: [0])
        }
        #expect(f.device.pendingPacketCount == VsockDevice.maxPendingControl)
        #expect(f.log.all.filter { $0.contains("wait for rx buffers") }.count == 1)
        // The device's own lines do not name it: the log Kite gives it already does.
        #expect(!f.log.all.contains { $0.hasPrefix("virtio-vsock") }, "\(f.log.all)")
    }
}

// MARK: Credit

@Suite("virtio-vsock credit")
struct VsockCreditTests {
    @Test("host data stops at the guest's buf_alloc and resumes after a CREDIT_UPDATE")
    func guestCredit() throws {
        var f = try VsockFixture()
        let stream = try f.connect(bufAlloc: 10)
        stream.incoming = (0..<25).map { UInt8($0) }
        f.device.hostReadable(stream)
        try f.postReceive(4)
        var got = try f.receive()
        // 10 bytes of data, then a CREDIT_REQUEST; nothing more.
        #expect(got.map(\.header.operation) == [.rw, .creditRequest])
        #expect(got.first?.payload == Array(0..<10))
        #expect(stream.largestRead <= 10)
        #expect(try f.receive().isEmpty)
        #expect(!stream.readInterest)                    // still readable, no credit: don't watch

        // The guest read 4 bytes: credit for 4 more.
        let before = f.work.count
        try f.send(.creditUpdate, bufAlloc: 10, fwdCnt: 4)
        #expect(f.work.count == before + 1)
        got = try f.receive()
        #expect(got.map(\.header.operation) == [.rw, .creditRequest])
        #expect(got.first?.payload == Array(10..<14))

        // All consumed: the rest (11 bytes) fits in the new window of 10 + 10 ... in two packets.
        try f.postReceive(4)
        try f.send(.creditUpdate, bufAlloc: 100, fwdCnt: 14)
        got = try f.receive()
        #expect(got.map(\.header.operation) == [.rw])
        #expect(got.first?.payload == Array(14..<25))
        #expect(stream.readInterest)
    }

    @Test("a CREDIT_REQUEST is answered with our buf_alloc and fwd_cnt")
    func creditRequest() throws {
        var f = try VsockFixture()
        let stream = try f.connect()
        try f.send(.rw, payload: [1, 2, 3])
        #expect(stream.written == [1, 2, 3])
        try f.send(.creditRequest)
        try f.send(.creditRequest)                       // coalesced
        try f.postReceive(2)
        let got = try f.receive()
        #expect(got.count == 1)
        #expect(got.first?.header.operation == .creditUpdate)
        #expect(got.first?.header.bufAlloc == VsockDevice.bufferAllocation)
        #expect(got.first?.header.fwdCnt == 3)
    }

    @Test("partial host writes are buffered; a CREDIT_UPDATE follows large forwarding; overrunning our buf_alloc resets")
    func ourCredit() throws {
        var f = try VsockFixture()
        let stream = try f.connect()
        stream.writeRoom = 0
        let chunk = [UInt8](repeating: 0x5A, count: 32 * 1024)
        for _ in 0..<8 { try f.send(.rw, payload: chunk) }          // exactly 256 KiB buffered
        #expect(stream.written.isEmpty)
        #expect(stream.writeInterest)
        #expect(f.device.connectionCount == 1)
        stream.writeRoom = 100 * 1024
        f.device.hostWritable(stream)
        #expect(stream.written.count == 100 * 1024)
        try f.postReceive(2)
        var got = try f.receive()
        #expect(got.map(\.header.operation) == [.creditUpdate])
        #expect(got.first?.header.fwdCnt == UInt32(100 * 1024))
        // 100 KiB free again: 100 KiB more is fine, one byte more resets.
        for _ in 0..<3 { try f.send(.rw, payload: chunk) }
        try f.send(.rw, payload: Array(chunk[0..<(4 * 1024)]))
        #expect(f.device.connectionCount == 1)
        try f.send(.rw, payload: [1])
        #expect(f.device.connectionCount == 0)
        #expect(stream.closeCount == 1)
        got = try f.receive()
        #expect(got.map(\.header.operation) == [.rst])
        #expect(f.log.all.contains { $0.contains("credit") })
    }

    @Test("a broken host stream resets the connection")
    func brokenStream() throws {
        var f = try VsockFixture()
        let stream = try f.connect()
        stream.broken = true
        try f.send(.rw, payload: [1])
        #expect(stream.closeCount == 1)
        try f.postReceive(1)
        #expect(try f.receive().map(\.header.operation) == [.rst])
    }
}

// MARK: Malformed

@Suite("virtio-vsock malformed packets")
struct VsockMalformedTests {
    @Test("short, truncated, oversized and misaddressed packets are dropped without touching other memory")
    func dropped() throws {
        var f = try VsockFixture()
        let stream = try f.connect()
        let good = VsockHeader(srcCID: guestCID, dstCID: 2, srcPort: 5000, dstPort: 1234, len: 0, op: .rw)
        // Shorter than a header (also split over two descriptors).
        try f.sendRaw(Array(good.bytes[0..<20]))
        try f.sendRaw(Array(good.bytes[0..<43]), split: 10)
        // len beyond the chain.
        var h = good
        h.len = 100
        try f.sendRaw(h.bytes + [1, 2, 3])
        #expect(stream.written.isEmpty)
        #expect(stream.closeCount == 1)                  // the connection it named is reset
        // len above the maximum, even with a chain that long.
        h.len = UInt32(VsockDevice.maxPacketData + 1)
        try f.sendRaw(h.bytes + [UInt8](repeating: 0, count: VsockDevice.maxPacketData + 1))
        // Wrong source CID (twice: logged once), wrong destination CID.
        var wrong = good
        wrong.srcCID = 3
        try f.sendRaw(wrong.bytes)
        try f.sendRaw(wrong.bytes)
        wrong = good
        wrong.dstCID = 7
        try f.sendRaw(wrong.bytes)
        #expect(try f.txDriver.usedIndex() == 1 + 7)     // connect + 7 malformed: all returned
        let lines = f.log.all
        #expect(lines.filter { $0.contains("from CID 3") }.count == 1)
        #expect(lines.contains { $0.contains("for CID 7") })
        #expect(lines.contains { $0.contains("shorter than the 44-byte header") })
        #expect(lines.contains { $0.contains("len 100") })
        try f.postReceive(4)
        #expect(try f.receive().map(\.header.operation) == [.rst])   // only for the reset connection
        #expect(try f.canariesIntact())
    }

    @Test("a bad type or op is answered with RST")
    func badTypeAndOp() throws {
        var f = try VsockFixture()
        var h = VsockHeader(srcCID: guestCID, dstCID: 2, srcPort: 1, dstPort: 2, op: .request)
        h.type = 2                                       // SEQPACKET
        try f.sendRaw(h.bytes)
        var o = VsockHeader(srcCID: guestCID, dstCID: 2, srcPort: 3, dstPort: 4, op: .rw)
        o.op = 99
        try f.sendRaw(o.bytes)
        #expect(f.host.connectCount == 0)
        try f.postReceive(4)
        let got = try f.receive()
        #expect(got.map(\.header.operation) == [.rst, .rst])
        #expect(got.map(\.header.dstPort) == [1, 3])
    }

    @Test("rx buffers too small for a header are returned empty; data never overruns a buffer")
    func smallReceiveBuffers() throws {
        var f = try VsockFixture()
        let stream = try f.connect()
        try f.postReceive(1, size: 10)
        stream.incoming = [UInt8](repeating: 9, count: 300)
        f.device.hostReadable(stream)
        try f.postReceive(1, size: VsockHeader.size + 100)
        try f.postReceive(1, size: VsockHeader.size + 250)
        let got = try f.receive()
        #expect(got.map(\.payload.count) == [100, 200])
        #expect(try f.canariesIntact())
        #expect(f.log.all.contains { $0.contains("10-byte rx buffer") })
    }

    @Test("the event queue keeps its buffers")
    func eventQueue() throws {
        let f = try VsockFixture()
        let driver = try FakeDriver(memory: f.memory, size: 8, descriptorTable: 0x9000, availableRing: 0xA000, usedRing: 0xB000)
        var queue = driver.makeQueue()
        try driver.addChain([.writable(0x80000, 8)])
        #expect(try f.device.process(queue: VsockDevice.eventQueue, &queue, memory: f.memory) == false)
        #expect(try driver.usedIndex() == 0)
    }
}

// MARK: Config

@Suite("virtio-vsock config")
struct VsockConfigTests {
    @Test("accepts cid and socket in any order")
    func accepts() throws {
        #expect(try VsockDeviceConfig.parse("cid=3,socket=/tmp/v.sock") == VsockDeviceConfig(guestCID: 3, socketPath: "/tmp/v.sock"))
        #expect(try VsockDeviceConfig.parse("socket=a,,b,cid=4294967294") == VsockDeviceConfig(guestCID: 4_294_967_294, socketPath: "a,b"))
    }

    @Test("rejects bad input with one-line messages", arguments: [
        ("", "vsock needs cid=N,socket=PATH"),
        ("cid=3", "vsock needs socket=PATH"),
        ("socket=/x", "vsock needs cid=N"),
        ("cid=2,socket=/x", "vsock cid '2' is not a number in 3...4294967294"),
        ("cid=4294967295,socket=/x", "vsock cid '4294967295' is not a number in 3...4294967294"),
        ("cid=+5,socket=/x", "vsock cid '+5' is not a number in 3...4294967294"),
        ("cid=abc,socket=/x", "vsock cid 'abc' is not a number in 3...4294967294"),
        ("cid=3,socket=", "vsock socket path is empty"),
        ("cid=3,cid=4,socket=/x", "vsock option cid is given twice"),
        ("cid=3,socket=/x,port=1", "unknown vsock option 'port' (known: cid, socket)"),
        ("cid=3,socket", "vsock option 'socket' is not key=value"),
        ("cid=3,socket=/" + String(repeating: "a", count: 107), "vsock socket path is 108 bytes (a Unix socket path holds at most 107)"),
    ])
    func rejects(input: String, message: String) {
        #expect(throws: VsockDeviceConfigError(message)) { try VsockDeviceConfig.parse(input) }
    }
}
