import GuestMemory
import Synchronization
import SystemPackage
import Virtio

/// virtio-net feature bits (virtio 1.2, section 5.1.3) that Kite offers.
public enum NetworkFeature {
    /// VIRTIO_NET_F_MAC: the config space holds the device's MAC address.
    public static let mac: UInt64 = 1 << 5
    /// VIRTIO_NET_F_STATUS: the config space holds a link status (always up).
    public static let status: UInt64 = 1 << 16
}

/// Frame counters, for diagnostics, tests and Firecracker's metrics. Bytes are the frames'
/// own, without the virtio-net header.
public struct NetworkDeviceCounters: Equatable, Sendable {
    public var framesSent = 0
    public var bytesSent = 0
    public var transmitDropped = 0
    public var framesReceived = 0
    public var bytesReceived = 0
    public var receiveDropped = 0
}

/// A virtio-net NIC (virtio 1.2, section 5.1) with one receive queue (0) and one transmit
/// queue (1), no offloads, no mergeable receive buffers and no control queue, served from a
/// `NetworkBackend`. Frames cross in both directions with their 12-byte virtio_net_hdr_v1,
/// which the backend (a tap with IFF_VNET_HDR) understands as is.
///
/// Transmit: each chain's readable bytes are one header + frame, at most
/// `maxPacketSize`; anything longer, shorter than header + Ethernet header, or with a
/// checksum/GSO request the driver did not negotiate is dropped (and logged once per
/// kind). Every chain completes with 0 bytes written.
///
/// Receive: frames are read from the backend one at a time into a device buffer, checked
/// and copied into the next receive chain. When the driver has no chain posted, the frame
/// just read is kept (one frame at most) and the rest wait in the backend (tap's own
/// queue); nothing is lost, and the kept frame goes first once the driver adds buffers. A
/// frame larger than the chain is dropped, touching no guest memory; the chain is kept
/// (not completed) for the next frame, unless it is below the spec's recommended 1526
/// bytes, in which case it is returned with 0 bytes so a driver posting tiny buffers cannot
/// stall reception forever.
///
/// Threads: every `VirtioDevice` call runs under the transport's device lock. The counters
/// and `isWaitingForReceiveBuffers` may be read from any thread.
public final class NetworkDevice: VirtioDevice, @unchecked Sendable {
    public static let receiveQueue = 0
    public static let transmitQueue = 1
    public static let queueSize: UInt16 = 256
    /// sizeof(struct virtio_net_hdr_v1) (VERSION_1 always has num_buffers).
    public static let headerSize = 12
    public static let ethernetHeaderSize = 14
    /// The largest Ethernet frame (without vnet header) carried: 64 KiB + Ethernet/VLAN headers.
    public static let maxFrameSize = 65550
    /// The largest header + frame in either direction.
    public static let maxPacketSize = headerSize + maxFrameSize
    /// What the spec says each receive chain should hold without MRG_RXBUF or GUEST_TSO:
    /// the header plus a 1514-byte frame.
    public static let minimumReceiveBuffer = headerSize + 1514
    /// The most frames one `receivePending` call reads, so a flooding host cannot hold the
    /// device thread; the backend's fd stays readable and the event loop comes back.
    public static let maxFramesPerReceive = 256
    /// VIRTIO_NET_S_LINK_UP.
    public static let linkUp: UInt16 = 1
    /// mac (6), status (2); later fields (max_virtqueue_pairs, mtu, ...) read as zero.
    public static let configSpaceSize = 8

    // virtio_net_hdr flags and gso types.
    static let headerFlagNeedsChecksum: UInt8 = 1
    static let gsoNone: UInt8 = 0

    public let backend: any NetworkBackend
    public let mac: MACAddress
    /// Features the driver accepted; 0 before activation and after a reset.
    public private(set) var negotiatedFeatures: UInt64 = 0

    /// A receive chain taken from the queue but not yet used (see the type comment).
    private var heldChain: DescriptorChain?
    /// A frame read from the backend while the driver had no buffer: its length; the bytes
    /// are in `receiveBuffer`. At most one, so frames beyond it wait in the backend.
    private var pendingFrameLength: Int?
    private let receiveBuffer: UnsafeMutableRawBufferPointer
    private let transmitBuffer: UnsafeMutableRawBufferPointer
    private let counterState = Mutex(NetworkDeviceCounters())
    private let waitingForBuffers = Atomic<Bool>(false)
    private var problems: OncePerKindLog

    /// `log` receives one line the first time each kind of problem happens (oversized or
    /// malformed frames, backend errors), so a guest cannot flood the host log.
    public init(backend: any NetworkBackend, mac: MACAddress,
                log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.backend = backend
        self.mac = mac
        self.problems = OncePerKindLog(sink: log)
        receiveBuffer = .allocate(byteCount: Self.maxPacketSize, alignment: 16)
        transmitBuffer = .allocate(byteCount: Self.maxPacketSize, alignment: 16)
    }

    /// Opens the tap `config` names and builds the device on it.
    public convenience init(config: NetworkDeviceConfig,
                            log: @escaping @Sendable (String) -> Void = { _ in }) throws(NetworkBackendError) {
        self.init(backend: try TapBackend(name: config.tapName), mac: config.mac, log: log)
    }

    deinit {
        receiveBuffer.deallocate()
        transmitBuffer.deallocate()
    }

    public var counters: NetworkDeviceCounters { counterState.withLock { $0 } }

    /// True when the last receive attempt stopped with a frame in hand and no receive buffer
    /// to put it in. The event loop should then stop watching `backend.fd` (which may stay
    /// readable) until the driver notifies the receive queue; serving that notification
    /// delivers the kept frame first and clears this.
    public var isWaitingForReceiveBuffers: Bool { waitingForBuffers.load(ordering: .acquiring) }

    /// True after the backend's last receive failed (e.g. the tap was deleted): its fd may
    /// stay readable, so whoever polls it should pause until the next receive succeeds.
    public var isReceiveFailing: Bool { receiveFailing.load(ordering: .acquiring) }
    private let receiveFailing = Atomic<Bool>(false)

    // MARK: VirtioDevice

    public var type: VirtioDeviceType { .network }
    public var features: UInt64 { NetworkFeature.mac | NetworkFeature.status }
    public var queueSizes: [UInt16] { [Self.queueSize, Self.queueSize] }

    /// `struct virtio_net_config`: mac at 0, status (le16) at 6.
    public var configSpace: [UInt8] {
        var bytes = mac.bytes + [0, 0]
        bytes.put(Self.linkUp, at: 6)
        return bytes
    }

    /// Bytes past the structure, or at a negative offset, read as zero.
    public func readConfig(offset: Int, count: Int) -> [UInt8] {
        VirtioConfigSpace.read(configSpace, offset: offset, count: count)
    }

    /// The driver must not write the config space (VERSION_1); writes are ignored.
    public func writeConfig(offset: Int, bytes: [UInt8]) {}

    public func activate(features: UInt64, memory: GuestMemory) {
        negotiatedFeatures = features
    }

    public func reset() {
        negotiatedFeatures = 0
        heldChain = nil
        pendingFrameLength = nil
        waitingForBuffers.store(false, ordering: .releasing)
    }

    public func process(queue index: Int, _ queue: inout Virtqueue, memory: GuestMemory) throws -> Bool {
        switch index {
        case Self.receiveQueue: try receivePending(queue: &queue, memory: memory)
        case Self.transmitQueue: try transmit(queue: &queue, memory: memory)
        default: false
        }
    }

    // MARK: Transmit

    /// Sends every available transmit chain to the backend; true when any was completed.
    public func transmit(queue: inout Virtqueue, memory: GuestMemory) throws -> Bool {
        var used = false
        while let chain = try queue.nextChain(memory: memory) {
            send(chain, memory: memory)
            try queue.complete(headIndex: chain.headIndex, writtenLength: 0, memory: memory)
            used = true
        }
        return used
    }

    private func send(_ chain: DescriptorChain, memory: GuestMemory) {
        let length = chain.readableLength
        guard length <= UInt64(Self.maxPacketSize) else {
            return dropTransmit(.transmitTooLarge, "dropped a \(length)-byte transmit frame (the most is \(Self.maxPacketSize) bytes incl. the \(Self.headerSize)-byte header)")
        }
        guard length >= UInt64(Self.headerSize + Self.ethernetHeaderSize) else {
            return dropTransmit(.transmitTooShort, "dropped a \(length)-byte transmit frame (shorter than the \(Self.headerSize)-byte header + Ethernet header)")
        }
        var copied = 0
        for descriptor in chain.readable where descriptor.length > 0 {
            // Sound: the queue checked every descriptor lies inside one RAM region.
            guard let source = try? memory.hostBuffer(at: descriptor.address, length: UInt64(descriptor.length)) else {
                return dropTransmit(.transmitUnreadable, "dropped a transmit frame whose buffer at \(descriptor.address) is outside RAM")
            }
            // Sound: copied + source.count <= length <= transmitBuffer.count.
            UnsafeMutableRawBufferPointer(rebasing: transmitBuffer[copied..<copied + source.count])
                .copyMemory(from: UnsafeRawBufferPointer(source))
            copied += source.count
        }
        let flags = transmitBuffer[0]
        let gsoType = transmitBuffer[1]
        guard flags & Self.headerFlagNeedsChecksum == 0, gsoType == Self.gsoNone else {
            return dropTransmit(.transmitOffload, "dropped a transmit frame asking for checksum or segmentation offload (flags \(flags), gso_type \(gsoType)), which was not negotiated")
        }
        do {
            try backend.sendFrame(UnsafeRawBufferPointer(rebasing: transmitBuffer[0..<copied]))
            counterState.withLock { $0.framesSent += 1; $0.bytesSent += copied - Self.headerSize }
        } catch {
            dropTransmit(.sendFailed, "backend refused a transmit frame: \(error)")
        }
    }

    private func dropTransmit(_ kind: ProblemKind, _ message: String) {
        counterState.withLock { $0.transmitDropped += 1 }
        problems.report(kind, message)
    }

    // MARK: Receive

    /// Moves frames from the backend into the driver's receive buffers until the backend
    /// is empty, the driver has no more buffers, or `maxFramesPerReceive` frames were read.
    /// Returns true when any chain was completed (the transport then interrupts the driver).
    /// Throws only when the guest broke the virtqueue protocol.
    public func receivePending(queue: inout Virtqueue, memory: GuestMemory) throws -> Bool {
        var used = false
        for _ in 0..<Self.maxFramesPerReceive {
            guard let count = try nextFrame() else { break }
            guard checkFrame(count: count) else { continue }
            guard let chain = try heldChain ?? queue.nextChain(memory: memory) else {
                // Keep the frame (it is still in receiveBuffer) until the driver adds buffers.
                pendingFrameLength = count
                waitingForBuffers.store(true, ordering: .releasing)
                return used
            }
            heldChain = nil
            guard UInt64(count) <= chain.writableLength else {
                dropReceive(.receiveTooLarge, "dropped a \(count)-byte frame: the guest's receive buffer holds \(chain.writableLength) bytes")
                if chain.writableLength < UInt64(Self.minimumReceiveBuffer) {
                    problems.report(.receiveBufferTooSmall, "the guest posted a \(chain.writableLength)-byte receive buffer (under \(Self.minimumReceiveBuffer) bytes); returned unused")
                    try queue.complete(headIndex: chain.headIndex, writtenLength: 0, memory: memory)
                    used = true
                } else {
                    heldChain = chain          // a conforming buffer: keep it for the next frame
                }
                continue
            }
            try copyFrame(count: count, into: chain, memory: memory)
            try queue.complete(headIndex: chain.headIndex, writtenLength: UInt32(count), memory: memory)
            used = true
        }
        waitingForBuffers.store(false, ordering: .releasing)
        return used
    }

    /// The length of the next frame, now in `receiveBuffer`: the pending one, else one read
    /// from the backend. Nil when the backend has nothing (or failed, which is logged).
    private func nextFrame() throws -> Int? {
        if let pending = pendingFrameLength {
            pendingFrameLength = nil
            return pending
        }
        do {
            let count = try backend.receiveFrame(into: receiveBuffer)
            receiveFailing.store(false, ordering: .releasing)
            return count
        } catch {
            receiveFailing.store(true, ordering: .releasing)
            problems.report(.receiveFailed, "backend receive failed: \(error)")
            return nil
        }
    }

    /// Whether the frame of `count` bytes in `receiveBuffer` may go to the guest (it is
    /// dropped and logged otherwise). Without GUEST_CSUM the header flags must be 0 (this
    /// clears DATA_VALID); without MRG_RXBUF num_buffers is 1.
    private func checkFrame(count: Int) -> Bool {
        guard count >= Self.headerSize + Self.ethernetHeaderSize, count <= Self.maxPacketSize else {
            dropReceive(.receiveTooShort, "dropped a \(count)-byte frame from the backend (shorter than the \(Self.headerSize)-byte header + Ethernet header)")
            return false
        }
        guard receiveBuffer[0] & Self.headerFlagNeedsChecksum == 0, receiveBuffer[1] == Self.gsoNone else {
            dropReceive(.receiveOffload, "dropped a frame from the backend that needs checksum or segmentation offload (flags \(receiveBuffer[0]), gso_type \(receiveBuffer[1]))")
            return false
        }
        receiveBuffer[0] = 0
        receiveBuffer.storeBytes(of: UInt16(1).littleEndian, toByteOffset: 10, as: UInt16.self)
        return true
    }

    /// Copies the first `count` bytes of `receiveBuffer` into `chain`'s writable buffers,
    /// which hold at least `count` bytes.
    private func copyFrame(count: Int, into chain: DescriptorChain, memory: GuestMemory) throws {
        var done = 0
        for descriptor in chain.writable where done < count && descriptor.length > 0 {
            let take = min(Int(descriptor.length), count - done)
            // Sound: the queue checked every descriptor lies inside one RAM region.
            let target = try memory.hostBuffer(at: descriptor.address, length: UInt64(take))
            // Sound: done + take <= count <= receiveBuffer.count.
            target.copyMemory(from: UnsafeRawBufferPointer(rebasing: receiveBuffer[done..<done + take]))
            done += take
        }
        counterState.withLock { $0.framesReceived += 1; $0.bytesReceived += count - Self.headerSize }
    }

    private func dropReceive(_ kind: ProblemKind, _ message: String) {
        counterState.withLock { $0.receiveDropped += 1 }
        problems.report(kind, message)
    }

    // MARK: Problems

    enum ProblemKind: Hashable {
        case transmitTooLarge, transmitTooShort, transmitUnreadable, transmitOffload, sendFailed
        case receiveTooShort, receiveOffload, receiveTooLarge, receiveBufferTooSmall, receiveFailed
    }

    /// Logs the first problem of each kind, saying that later ones are not logged.
    struct OncePerKindLog {
        private let sink: @Sendable (String) -> Void
        private var seen: Set<ProblemKind> = []

        init(sink: @escaping @Sendable (String) -> Void) { self.sink = sink }

        mutating func report(_ kind: ProblemKind, _ message: String) {
            guard seen.insert(kind).inserted else { return }
            sink("\(message) (further such problems are not logged)")   // the caller's log names the device
        }
    }
}
