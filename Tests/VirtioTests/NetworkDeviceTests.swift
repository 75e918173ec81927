import GuestMemory
import Synchronization
import SystemPackage
import Testing
import Virtio
@testable import VirtioDevices

// MARK: Fixtures

/// Collects log lines from the device (the callback must be Sendable).
private final class NetLog: Sendable {
    private let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }
    var sink: @Sendable (String) -> Void { { line in self.lines.withLock { $0.append(line) } } }
}

private let testMAC = MACAddress("52:54:00:12:34:56")!

/// A device on a `MemoryNetworkBackend`, with a driver for each queue laid out in 1 MiB of
/// guest RAM: receiveq rings at 0x1000-0x3FFF, transmitq rings at 0x5000-0x7FFF, buffers
/// from 0x10000 up (each followed by 64 canary bytes of 0xCC).
private struct NetFixture {
    let memory: GuestMemory
    let backend: MemoryNetworkBackend
    let device: NetworkDevice
    let log = NetLog()
    let rxDriver: FakeDriver
    let txDriver: FakeDriver
    var rxQueue: Virtqueue
    var txQueue: Virtqueue
    var next: UInt64 = 0x10000

    init(loopback: Bool = false) throws {
        memory = try GuestMemory(layout: [(base: 0, size: 1 << 20)])
        backend = MemoryNetworkBackend(loopback: loopback)
        device = NetworkDevice(backend: backend, mac: testMAC, log: log.sink)
        rxDriver = try FakeDriver(memory: memory, size: 16, descriptorTable: 0x1000, availableRing: 0x2000, usedRing: 0x3000)
        txDriver = try FakeDriver(memory: memory, size: 16, descriptorTable: 0x5000, availableRing: 0x6000, usedRing: 0x7000)
        rxQueue = rxDriver.makeQueue()
        txQueue = txDriver.makeQueue()
        device.activate(features: device.features | VirtioFeature.version1, memory: memory)
    }

    /// Places `bytes` in RAM, followed by a canary.
    mutating func place(_ bytes: [UInt8]) throws -> FakeDriver.Buffer {
        let address = next
        try memory.write(bytes, at: GuestAddress(address))
        try memory.write([UInt8](repeating: 0xCC, count: 64), at: GuestAddress(address + UInt64(bytes.count)))
        next += UInt64(bytes.count + 64 + 15) & ~15
        return .readable(address, UInt32(bytes.count))
    }

    /// A device-writable buffer of `length` bytes filled with 0xEE, followed by a canary.
    mutating func receiveBuffer(_ length: Int) throws -> FakeDriver.Buffer {
        var buffer = try place([UInt8](repeating: 0xEE, count: length))
        buffer.isWritable = true
        return buffer
    }

    func bytes(_ b: FakeDriver.Buffer) throws -> [UInt8] { try memory.read(at: GuestAddress(b.address), count: Int(b.length)) }
    func canaryIntact(_ b: FakeDriver.Buffer) throws -> Bool {
        try memory.read(at: GuestAddress(b.address + UInt64(b.length)), count: 64).allSatisfy { $0 == 0xCC }
    }

    mutating func serveTransmit() throws -> Bool {
        try device.process(queue: NetworkDevice.transmitQueue, &txQueue, memory: memory)
    }
    mutating func serveReceive() throws -> Bool {
        try device.process(queue: NetworkDevice.receiveQueue, &rxQueue, memory: memory)
    }
}

/// A 12-byte virtio_net_hdr_v1 with the given flags and gso type (num_buffers 0).
private func vnetHeader(flags: UInt8 = 0, gso: UInt8 = 0) -> [UInt8] {
    [flags, gso] + [UInt8](repeating: 0, count: 10)
}

/// An Ethernet frame of `length` bytes: broadcast destination, the test MAC as source,
/// EtherType 0x88B5 (local experimental), then a pattern.
private func ethernetFrame(_ length: Int, seed: UInt8 = 1) -> [UInt8] {
    var frame = [UInt8](repeating: 0xFF, count: 6) + testMAC.bytes + [0x88, 0xB5]
    frame += (0..<(length - 14)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(seed)) }
    return frame
}

/// What the guest should find in its receive buffer for `packet` (header + frame): the
/// device clears the flags and sets num_buffers to 1.
private func expectedDelivery(_ packet: [UInt8]) -> [UInt8] {
    var out = packet
    out[0] = 0
    out[10] = 1
    out[11] = 0
    return out
}

// MARK: Transmit

@Suite("virtio-net NetworkDevice transmit")
struct NetworkDeviceTransmitTests {
    @Test("a single-descriptor frame reaches the backend intact, header included")
    func singleDescriptor() throws {
        var f = try NetFixture()
        let packet = vnetHeader() + ethernetFrame(60)
        let head = try f.txDriver.addChain([try f.place(packet)])
        #expect(try f.serveTransmit())
        #expect(f.backend.sent == [packet])
        #expect(try f.txDriver.usedIndex() == 1)
        let used = try f.txDriver.usedElement(0)
        #expect(used.id == UInt32(head))
        #expect(used.length == 0)
        #expect(f.device.counters.framesSent == 1)
        #expect(f.device.counters.bytesSent == 60, "the frame's bytes, without the virtio-net header")
        #expect(f.log.all.isEmpty)
    }

    @Test("multi-descriptor and indirect frames are gathered in order")
    func multiDescriptor() throws {
        var f = try NetFixture()
        let frame = ethernetFrame(1514, seed: 3)
        let packet = vnetHeader() + frame
        // Header alone, then the frame split unevenly (incl. an empty descriptor).
        let a = try f.place(vnetHeader())
        let b = try f.place(Array(frame[0..<100]))
        let c = try f.place([])
        let d = try f.place(Array(frame[100..<1000]))
        let e = try f.place(Array(frame[1000...]))
        try f.txDriver.addChain([a, b, c, d, e])
        // Indirect: header and the start of the frame share a descriptor.
        let packet2 = vnetHeader() + ethernetFrame(200, seed: 9)
        let g = try f.place(Array(packet2[0..<50]))
        let h = try f.place(Array(packet2[50...]))
        try f.txDriver.addIndirectChain([g, h], tableAddress: 0x9000)
        #expect(try f.serveTransmit())
        #expect(f.backend.sent == [packet, packet2])
        #expect(try f.txDriver.usedIndex() == 2)
    }

    @Test("a frame of exactly the maximum size is sent; one byte more is dropped and logged once")
    func sizeLimit() throws {
        var f = try NetFixture()
        let biggest = vnetHeader() + ethernetFrame(NetworkDevice.maxFrameSize)
        #expect(biggest.count == 12 + 65550)
        let tooBig = biggest + [0]
        try f.txDriver.addChain([try f.place(biggest)])
        // The oversized one split over two descriptors, twice: logged only once.
        try f.txDriver.addChain([try f.place(Array(tooBig[0..<40000])), try f.place(Array(tooBig[40000...]))])
        try f.txDriver.addChain([try f.place(tooBig)])
        #expect(try f.serveTransmit())
        #expect(f.backend.sent == [biggest])
        #expect(try f.txDriver.usedIndex() == 3)
        for i: UInt16 in 0..<3 { #expect(try f.txDriver.usedElement(i).length == 0) }
        #expect(f.device.counters.transmitDropped == 2)
        #expect(f.log.all.count == 1)
        #expect(f.log.all.first?.contains("65563-byte transmit frame") == true)
        // The device's own lines do not name it: the log Kite gives it already does.
        #expect(f.log.all.first?.hasPrefix("virtio-net") == false, "\(f.log.all)")
    }

    @Test("frames shorter than header + Ethernet header are dropped, completed with 0")
    func tooShort() throws {
        var f = try NetFixture()
        try f.txDriver.addChain([try f.place([0, 0, 0])])
        try f.txDriver.addChain([try f.place(vnetHeader() + [1, 2, 3])])
        try f.txDriver.addChain([.writable(0x20000, 64)])      // no readable bytes at all
        #expect(try f.serveTransmit())
        #expect(f.backend.sent.isEmpty)
        #expect(try f.txDriver.usedIndex() == 3)
        #expect(f.device.counters.transmitDropped == 3)
        #expect(f.log.all.count == 1)
    }

    @Test("checksum or GSO requests (not negotiated) are dropped")
    func offloadRequestsDropped() throws {
        var f = try NetFixture()
        try f.txDriver.addChain([try f.place(vnetHeader(flags: 1) + ethernetFrame(60))])
        try f.txDriver.addChain([try f.place(vnetHeader(gso: 1) + ethernetFrame(60))])
        let fine = vnetHeader() + ethernetFrame(60, seed: 5)
        try f.txDriver.addChain([try f.place(fine)])
        #expect(try f.serveTransmit())
        #expect(f.backend.sent == [fine])
        #expect(f.device.counters.transmitDropped == 2)
    }

    @Test("a backend send failure drops the frame and still completes the chain")
    func sendFailure() throws {
        var f = try NetFixture()
        f.backend.sendFailure = .ioError
        try f.txDriver.addChain([try f.place(vnetHeader() + ethernetFrame(60))])
        try f.txDriver.addChain([try f.place(vnetHeader() + ethernetFrame(60))])
        #expect(try f.serveTransmit())
        #expect(try f.txDriver.usedIndex() == 2)
        #expect(f.device.counters.transmitDropped == 2)
        #expect(f.log.all.count == 1)
        f.backend.sendFailure = nil
        try f.txDriver.addChain([try f.place(vnetHeader() + ethernetFrame(60))])
        #expect(try f.serveTransmit())
        #expect(f.backend.sent.count == 1)
    }

    @Test("an empty transmit queue uses nothing")
    func emptyQueue() throws {
        var f = try NetFixture()
        #expect(try f.serveTransmit() == false)
        #expect(try f.device.process(queue: 2, &f.txQueue, memory: f.memory) == false)
    }
}

// MARK: Receive

@Suite("virtio-net NetworkDevice receive")
struct NetworkDeviceReceiveTests {
    @Test("a failing backend is reported until a receive succeeds again")
    func receiveFailureIsVisible() throws {
        var f = try NetFixture()
        _ = try f.rxDriver.addChain([try f.receiveBuffer(NetworkDevice.minimumReceiveBuffer)])
        f.backend.receiveFailure = Errno.ioError
        #expect(try !f.serveReceive())
        #expect(f.device.isReceiveFailing)
        f.backend.receiveFailure = nil
        f.backend.deliver(vnetHeader(flags: 0) + ethernetFrame(60))
        #expect(try f.serveReceive())
        #expect(!f.device.isReceiveFailing)
    }

    @Test("a frame fills the guest buffer with header + frame; used length is exact")
    func singleBuffer() throws {
        var f = try NetFixture()
        let buffer = try f.receiveBuffer(NetworkDevice.minimumReceiveBuffer)
        let head = try f.rxDriver.addChain([buffer])
        // DATA_VALID (2) set by the host, num_buffers garbage: both fixed up.
        var packet = vnetHeader(flags: 2) + ethernetFrame(100)
        packet[10] = 0x77
        f.backend.deliver(packet)
        #expect(try f.serveReceive())
        #expect(try f.rxDriver.usedIndex() == 1)
        let used = try f.rxDriver.usedElement(0)
        #expect(used.id == UInt32(head))
        #expect(used.length == 112)
        let got = try f.bytes(buffer)
        #expect(Array(got[0..<112]) == expectedDelivery(packet))
        #expect(got[112...].allSatisfy { $0 == 0xEE })      // the rest of the buffer untouched
        #expect(try f.canaryIntact(buffer))
        #expect(f.device.counters.framesReceived == 1)
        #expect(!f.device.isWaitingForReceiveBuffers)
    }

    @Test("a full-size frame is scattered over a multi-descriptor chain")
    func scatter() throws {
        var f = try NetFixture()
        let parts = [try f.receiveBuffer(12), try f.receiveBuffer(700), try f.receiveBuffer(1000)]
        try f.rxDriver.addChain(parts)
        let packet = vnetHeader() + ethernetFrame(1514, seed: 4)
        f.backend.deliver(packet)
        #expect(try f.serveReceive())
        #expect(try f.rxDriver.usedElement(0).length == 1526)
        let got = try f.bytes(parts[0]) + f.bytes(parts[1]) + f.bytes(parts[2])
        #expect(Array(got[0..<1526]) == expectedDelivery(packet))
        #expect(got[1526...].allSatisfy { $0 == 0xEE })
        for p in parts { #expect(try f.canaryIntact(p)) }
    }

    @Test("several frames go to several chains in order")
    func severalFrames() throws {
        var f = try NetFixture()
        let buffers = try (0..<3).map { _ in try f.receiveBuffer(1526) }
        for b in buffers { try f.rxDriver.addChain([b]) }
        let packets = (0..<3).map { vnetHeader() + ethernetFrame(60 + 10 * $0, seed: UInt8($0)) }
        for p in packets { f.backend.deliver(p) }
        #expect(try f.serveReceive())
        #expect(try f.rxDriver.usedIndex() == 3)
        for i in 0..<3 {
            let used = try f.rxDriver.usedElement(UInt16(i))
            #expect(used.length == UInt32(packets[i].count))
            #expect(Array(try f.bytes(buffers[i]).prefix(packets[i].count)) == expectedDelivery(packets[i]))
        }
        #expect(f.backend.pendingCount == 0)
    }

    @Test("a frame bigger than the buffer is dropped without touching guest memory; the buffer serves the next frame")
    func oversizedDropped() throws {
        var f = try NetFixture()
        let buffer = try f.receiveBuffer(1526)
        let head = try f.rxDriver.addChain([buffer])
        let before = try f.memory.read(at: GuestAddress(0x10000), count: 0x10000)
        f.backend.deliver(vnetHeader() + ethernetFrame(3000))
        #expect(try f.serveReceive() == false)
        #expect(try f.rxDriver.usedIndex() == 0)
        #expect(try f.memory.read(at: GuestAddress(0x10000), count: 0x10000) == before)
        #expect(f.device.counters.receiveDropped == 1)
        #expect(f.log.all.count == 1)
        #expect(f.log.all.first?.contains("3012-byte frame") == true)

        let small = vnetHeader() + ethernetFrame(64)
        f.backend.deliver(small)
        #expect(try f.serveReceive())
        #expect(try f.rxDriver.usedIndex() == 1)
        #expect(try f.rxDriver.usedElement(0).id == UInt32(head))
        #expect(try f.rxDriver.usedElement(0).length == 76)
        #expect(Array(try f.bytes(buffer).prefix(76)) == expectedDelivery(small))
        #expect(try f.canaryIntact(buffer))
    }

    @Test("a buffer below the spec minimum that cannot hold a frame is returned unused")
    func undersizedBufferReturned() throws {
        var f = try NetFixture()
        let tiny = try f.receiveBuffer(100)
        let head = try f.rxDriver.addChain([tiny])
        // A small frame fits the small buffer and is delivered.
        let small = vnetHeader() + ethernetFrame(60)
        f.backend.deliver(small)
        #expect(try f.serveReceive())
        #expect(try f.rxDriver.usedElement(0).length == 72)
        // A larger one does not: dropped, and the next tiny buffer is completed with 0.
        let tiny2 = try f.receiveBuffer(100)
        let head2 = try f.rxDriver.addChain([tiny2])
        f.backend.deliver(vnetHeader() + ethernetFrame(200))
        #expect(try f.serveReceive())
        #expect(try f.rxDriver.usedIndex() == 2)
        #expect(try f.rxDriver.usedElement(1).id == UInt32(head2))
        #expect(try f.rxDriver.usedElement(1).length == 0)
        #expect(try f.bytes(tiny2).allSatisfy { $0 == 0xEE })
        #expect(try f.canaryIntact(tiny2))
        #expect(head != head2)
    }

    @Test("with no receive buffers one frame is kept, the rest stay in the backend; all arrive once buffers appear")
    func noBuffersThenBuffers() throws {
        var f = try NetFixture()
        let first = vnetHeader() + ethernetFrame(80, seed: 1)
        let second = vnetHeader() + ethernetFrame(90, seed: 2)
        f.backend.deliver(first)
        f.backend.deliver(second)
        #expect(try f.serveReceive() == false)
        #expect(f.backend.pendingCount == 1)          // one kept by the device, one in the backend
        #expect(f.device.isWaitingForReceiveBuffers)
        // receivePending directly (what an event loop on backend.fd would reach) does the same.
        #expect(try f.device.receivePending(queue: &f.rxQueue, memory: f.memory) == false)
        #expect(f.backend.pendingCount == 1)
        #expect(f.device.isWaitingForReceiveBuffers)

        let a = try f.receiveBuffer(1526)
        try f.rxDriver.addChain([a])
        #expect(try f.serveReceive())
        #expect(try f.rxDriver.usedIndex() == 1)
        #expect(try f.rxDriver.usedElement(0).length == UInt32(first.count))
        #expect(Array(try f.bytes(a).prefix(first.count)) == expectedDelivery(first))
        #expect(f.device.isWaitingForReceiveBuffers)  // the second frame now waits
        #expect(f.backend.pendingCount == 0)

        let b = try f.receiveBuffer(1526)
        try f.rxDriver.addChain([b])
        #expect(try f.serveReceive())
        #expect(Array(try f.bytes(b).prefix(second.count)) == expectedDelivery(second))
        #expect(!f.device.isWaitingForReceiveBuffers)
        #expect(f.device.counters.framesReceived == 2)
        #expect(f.device.counters.receiveDropped == 0)
    }

    @Test("reset drops the kept frame")
    func resetDropsPendingFrame() throws {
        var f = try NetFixture()
        f.backend.deliver(vnetHeader() + ethernetFrame(80))
        #expect(try f.serveReceive() == false)
        #expect(f.device.isWaitingForReceiveBuffers)
        f.device.reset()
        #expect(!f.device.isWaitingForReceiveBuffers)
        try f.rxDriver.addChain([try f.receiveBuffer(1526)])
        #expect(try f.serveReceive() == false)
        #expect(try f.rxDriver.usedIndex() == 0)
    }

    @Test("a flood is served in batches of maxFramesPerReceive")
    func batchLimit() throws {
        var f = try NetFixture()
        // Oversized frames against one kept buffer: each is read and dropped.
        try f.rxDriver.addChain([try f.receiveBuffer(1526)])
        for _ in 0..<(NetworkDevice.maxFramesPerReceive + 5) { f.backend.deliver(vnetHeader() + ethernetFrame(2000)) }
        #expect(try f.serveReceive() == false)
        #expect(f.backend.pendingCount == 5)
        #expect(f.device.counters.receiveDropped == NetworkDevice.maxFramesPerReceive)
        #expect(!f.device.isWaitingForReceiveBuffers)
    }

    @Test("a buffer posted while nothing is pending is kept for the next frame")
    func bufferBeforeFrame() throws {
        var f = try NetFixture()
        let buffer = try f.receiveBuffer(1526)
        let head = try f.rxDriver.addChain([buffer])
        #expect(try f.serveReceive() == false)
        #expect(!f.device.isWaitingForReceiveBuffers)
        #expect(try f.rxDriver.usedIndex() == 0)
        let packet = vnetHeader() + ethernetFrame(90)
        f.backend.deliver(packet)
        #expect(try f.device.receivePending(queue: &f.rxQueue, memory: f.memory))
        #expect(try f.rxDriver.usedElement(0).id == UInt32(head))
        #expect(Array(try f.bytes(buffer).prefix(packet.count)) == expectedDelivery(packet))
    }

    @Test("reset forgets a buffer kept after an oversized frame")
    func resetDropsHeldChain() throws {
        var f = try NetFixture()
        try f.rxDriver.addChain([try f.receiveBuffer(1526)])
        f.backend.deliver(vnetHeader() + ethernetFrame(2000))
        #expect(try f.serveReceive() == false)       // dropped; the buffer is kept
        f.device.reset()
        #expect(f.device.negotiatedFeatures == 0)
        f.backend.deliver(vnetHeader() + ethernetFrame(60))
        // The queue (not reset here) has nothing new, so the frame waits for a buffer.
        #expect(try f.serveReceive() == false)
        #expect(try f.rxDriver.usedIndex() == 0)
        #expect(f.device.isWaitingForReceiveBuffers)
    }

    @Test("runt frames and offload requests from the backend are dropped; the buffer is kept")
    func badBackendFrames() throws {
        var f = try NetFixture()
        let buffer = try f.receiveBuffer(1526)
        try f.rxDriver.addChain([buffer])
        f.backend.deliver([1, 2, 3])
        f.backend.deliver(vnetHeader(flags: 1) + ethernetFrame(60))
        f.backend.deliver(vnetHeader(gso: 3) + ethernetFrame(60))
        let good = vnetHeader() + ethernetFrame(60, seed: 8)
        f.backend.deliver(good)
        #expect(try f.serveReceive())
        #expect(try f.rxDriver.usedIndex() == 1)
        #expect(Array(try f.bytes(buffer).prefix(good.count)) == expectedDelivery(good))
        #expect(f.device.counters.receiveDropped == 3)
    }

    @Test("a backend receive error is logged and the buffer kept")
    func receiveError() throws {
        var f = try NetFixture()
        try f.rxDriver.addChain([try f.receiveBuffer(1526)])
        f.backend.deliver(vnetHeader() + ethernetFrame(60))
        f.backend.receiveFailure = .ioError
        #expect(try f.serveReceive() == false)
        #expect(f.log.all.count == 1)
        f.backend.receiveFailure = nil
        #expect(try f.serveReceive())
        #expect(try f.rxDriver.usedIndex() == 1)
    }

    @Test("loopback: what the guest sends comes back on the receive queue")
    func loopbackRoundTrip() throws {
        var f = try NetFixture(loopback: true)
        let buffer = try f.receiveBuffer(1526)
        try f.rxDriver.addChain([buffer])
        let packet = vnetHeader() + ethernetFrame(300, seed: 42)
        try f.txDriver.addChain([try f.place(packet)])
        #expect(f.backend.fd >= 0)
        #expect(try f.serveTransmit())
        #expect(try f.serveReceive())
        #expect(Array(try f.bytes(buffer).prefix(packet.count)) == expectedDelivery(packet))
    }
}

// MARK: Config space, features, options

@Suite("virtio-net NetworkDevice configuration")
struct NetworkDeviceConfigTests {
    @Test("device type, features and queues")
    func identity() throws {
        let device = NetworkDevice(backend: MemoryNetworkBackend(), mac: testMAC)
        #expect(device.type == .network)
        #expect(device.features == (1 << 5) | (1 << 16))
        #expect(device.queueSizes == [256, 256])
    }

    @Test("config space: MAC at 0, status LINK_UP at 6, zero beyond")
    func configSpace() throws {
        let device = NetworkDevice(backend: MemoryNetworkBackend(), mac: testMAC)
        #expect(device.readConfig(offset: 0, count: 6) == [0x52, 0x54, 0x00, 0x12, 0x34, 0x56])
        #expect(device.readConfig(offset: 6, count: 2) == [1, 0])
        #expect(device.readConfig(offset: 4, count: 4) == [0x34, 0x56, 1, 0])
        #expect(device.readConfig(offset: 8, count: 4) == [0, 0, 0, 0])
        #expect(device.readConfig(offset: -1, count: 2) == [0, 0x52])
        #expect(device.readConfig(offset: 0, count: 0) == [])
        device.writeConfig(offset: 0, bytes: [1, 2, 3, 4, 5, 6])
        #expect(device.readConfig(offset: 0, count: 6) == testMAC.bytes)
    }

    @Test("parse accepts tap and mac", arguments: [
        ("tap=tap0", "tap0", nil),
        ("tap=kite%d", "kite%d", nil),
        ("tap=tap0,mac=52:54:00:AB:cd:EF", "tap0", "52:54:00:ab:cd:ef"),
        ("mac=02:00:00:00:00:01,tap=very-long-name1", "very-long-name1", "02:00:00:00:00:01"),
    ] as [(String, String, String?)])
    func parseAccepts(text: String, tap: String, mac: String?) throws {
        let config = try NetworkDeviceConfig.parse(text)
        #expect(config.tapName == tap)
        if let mac {
            #expect(config.mac.description == mac)
        } else {
            #expect(config.mac == MACAddress.derived(from: tap))
        }
    }

    @Test("parse rejects with one-line errors", arguments: [
        ("", "network needs tap=NAME"),
        ("mac=52:54:00:00:00:01", "network needs tap=NAME"),
        ("tap=", "tap name '' is not a valid"),
        ("tap=sixteen-chars-xx", "tap name 'sixteen-chars-xx' is not a valid"),
        ("tap=a/b", "tap name 'a/b' is not a valid"),
        ("tap=a:b", "tap name 'a:b' is not a valid"),
        ("tap=a b", "tap name 'a b' is not a valid"),
        ("tap=..", "tap name '..' is not a valid"),
        ("tap=t0,tap=t1", "network option tap is given twice"),
        ("tap=t0,mac=52:54:00:00:00:01,mac=52:54:00:00:00:02", "network option mac is given twice"),
        ("tap=t0,mac=52:54:00:00:00", "network mac '52:54:00:00:00' is not of the form"),
        ("tap=t0,mac=52:54:00:00:00:1", "is not of the form"),
        ("tap=t0,mac=52-54-00-00-00-01", "is not of the form"),
        ("tap=t0,mac=52:54:00:00:00:0g", "is not of the form"),
        ("tap=t0,mac=+2:54:00:00:00:01", "is not of the form"),
        ("tap=t0,mac=01:00:5e:00:00:01", "network mac 01:00:5e:00:00:01 is a multicast address"),
        ("tap=t0,mac=ff:ff:ff:ff:ff:ff", "is a multicast address"),
        ("tap=t0,mac=00:00:00:00:00:00", "network mac must not be all zeroes"),
        ("tap=t0,speed=10", "unknown network option 'speed' (known: tap, mac)"),
        ("tap=t0,", "empty network option in 'tap=t0,'"),
        ("tap", "network option 'tap' is not key=value"),
    ] as [(String, String)])
    func parseRejects(text: String, message: String) {
        do {
            let config = try NetworkDeviceConfig.parse(text)
            Issue.record("accepted '\(text)' as \(config)")
        } catch {
            #expect(error.description.contains(message), "\(error.description)")
            #expect(!error.description.contains("\n"))
        }
    }

    @Test("the default MAC is 06:00 + a hash of the tap name: unicast, local, stable")
    func defaultMAC() {
        let a = MACAddress.derived(from: "tap0")
        #expect(a.bytes.prefix(2) == [0x06, 0x00])
        #expect(!a.isMulticast)
        #expect(a.isLocallyAdministered)
        #expect(a == MACAddress.derived(from: "tap0"))
        #expect(a != MACAddress.derived(from: "tap1"))
        #expect(NetworkDeviceConfig(tapName: "tap0").mac == a)
    }

    @Test("MAC text round trip")
    func macText() {
        #expect(MACAddress("0A:1b:2C:3d:4E:5f")?.description == "0a:1b:2c:3d:4e:5f")
        #expect(MACAddress(bytes: [1, 2, 3]) == nil)
        #expect(MACAddress(":::::") == nil)
    }
}

// MARK: Tap

@Suite("virtio-net TapBackend")
struct NetworkDeviceTapTests {
    @Test("a missing tun device gives the one-line error")
    func missingDevice() {
        do {
            _ = try TapBackend(name: "kitetest0", devicePath: "/nonexistent/net/tun")
            Issue.record("opened a tap through a nonexistent path")
        } catch {
            #expect(error == .cannotOpenTun(path: "/nonexistent/net/tun", .noSuchFileOrDirectory))
            #expect(error.description.hasPrefix("/nonexistent/net/tun: "))
            #expect(error.description.hasSuffix("(need CAP_NET_ADMIN / the tun module)"))
        }
    }

    @Test("a path that is not the tun device fails at TUNSETIFF with the tap name")
    func notTunDevice() {
        do {
            _ = try TapBackend(name: "kitetest0", devicePath: "/dev/null")
            Issue.record("/dev/null accepted TUNSETIFF")
        } catch {
            guard case .cannotAttach(let name, _) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(name == "kitetest0")
            #expect(error.description.hasPrefix("tap kitetest0: "))
        }
    }

    @Test("an invalid name is refused before opening anything")
    func invalidName() {
        #expect(throws: NetworkBackendError.invalidName("a/b")) {
            try TapBackend(name: "a/b", devicePath: "/nonexistent")
        }
    }

    /// Creates tap kitetest0 when this host allows it; otherwise the error must be the
    /// documented one-line message (so a host without tun does not pass silently).
    @Test("opening /dev/net/tun creates the tap, or fails with the one-line error")
    func realTap() throws {
        do {
            let tap = try TapBackend(name: "kitetest0")
            #expect(tap.name == "kitetest0")
            #expect(tap.fd >= 0)
            // The interface is down and nothing is pending: no frame, no blocking.
            var buffer = [UInt8](repeating: 0, count: 2048)
            let got = try buffer.withUnsafeMutableBytes { b throws(Errno) in try tap.receiveFrame(into: b) }
            #expect(got == nil)
            // A kernel-chosen name comes back resolved.
            let numbered = try TapBackend(name: "kitet%d")
            #expect(numbered.name.hasPrefix("kitet"))
            #expect(numbered.name != "kitet%d")
        } catch let error as NetworkBackendError {
            switch error {
            case .cannotOpenTun:
                #expect(error.description.hasPrefix("/dev/net/tun: "))
                #expect(error.description.hasSuffix("(need CAP_NET_ADMIN / the tun module)"))
            case .cannotAttach(let name, _):
                #expect(name == "kitetest0")
                #expect(error.description.hasPrefix("tap kitetest0: "))
            case .invalidName:
                Issue.record("valid name refused: \(error)")
            }
        }
    }
}
