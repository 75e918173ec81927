import GuestMemory
import Synchronization
import Virtio

/// virtio-vsock (virtio 1.2, section 5.10), stream sockets only, with the host side done
/// the way Firecracker does it: each guest connection is bridged to one host stream (a
/// Unix socket) supplied by a `VsockHost`.
///
/// Queues: 0 rx (device -> guest packets), 1 tx (guest -> device), 2 event (buffers are
/// left there; Kite never sends transport events). Config: guest_cid (le64) at offset 0.
///
/// Connections are keyed by (host port, guest port). Guest REQUEST -> `host.connect` ->
/// RESPONSE, or RST when refused, at `maxConnections`, or for a duplicate. Host-initiated:
/// `hostConnected` queues a REQUEST; the guest's RESPONSE calls `stream.accepted`, its RST
/// closes the stream. Guest data goes to the stream (partial writes are buffered, at most
/// our `bufferAllocation` per connection; a guest exceeding the credit it was given is
/// reset); `fwd_cnt` counts bytes taken by the stream, and a CREDIT_UPDATE goes out when
/// the guest asks or once `creditUpdateThreshold` bytes were forwarded unreported. Host
/// data is read straight into rx buffers, never more than the guest's credit
/// (peer_buf_alloc - (tx_cnt - peer_fwd_cnt)). Host end of stream -> SHUTDOWN(both), then
/// the guest's RST ends it; guest SHUTDOWN(SEND) -> `shutdownWrite` once flushed; guest
/// SHUTDOWN(both) -> flush, RST, close.
///
/// Packets for the guest other than data (RESPONSE, RST, SHUTDOWN, REQUEST, credit) wait
/// in a FIFO of at most `maxPendingControl` entries until the guest posts rx buffers; data
/// stays in the host stream meanwhile (its read interest is off, so a level-triggered
/// event loop does not spin).
///
/// Malformed tx packets (shorter than the header, `len` beyond the chain or above
/// `maxPacketData`, wrong CIDs) are dropped, logged once per kind; a bad type or op is
/// answered with RST. No tx packet makes `process` throw: only virtqueue protocol errors do.
///
/// Threads: every public method takes the device's own lock, so the event loop may call
/// the `host…` methods while a vCPU resets the device. Stream and host callbacks run under
/// that lock; `receiveWork` is called after it is released.
public final class VsockDevice: VirtioDevice, @unchecked Sendable {
    public static let receiveQueue = 0
    public static let transmitQueue = 1
    public static let eventQueue = 2
    public static let queueSize: UInt16 = 256
    /// VMADDR_CID_HOST.
    public static let hostCID: UInt64 = 2
    /// The largest payload of one packet in either direction.
    public static let maxPacketData = 64 * 1024
    /// Our buf_alloc: how much guest data each connection may buffer before the host takes it.
    public static let bufferAllocation: UInt32 = 256 * 1024
    /// Forwarded-but-unreported bytes after which a CREDIT_UPDATE goes out unasked.
    public static let creditUpdateThreshold: UInt32 = 64 * 1024
    public static let maxConnections = 1024
    public static let maxPendingControl = 4 * maxConnections
    /// Local ports of host-initiated connections count up from here (as in Firecracker).
    public static let firstLocalPort: UInt32 = 1 << 30
    /// The most packets one rx service writes, so a busy host cannot hold the device thread.
    public static let maxPacketsPerReceive = 1024

    public let guestCID: UInt64
    public let host: any VsockHost

    struct Key: Hashable {
        var hostPort: UInt32
        var guestPort: UInt32
    }

    enum State {
        /// Host-initiated: REQUEST queued or sent, waiting for the guest's RESPONSE.
        case connecting
        case established
        /// The guest sent SHUTDOWN(both): RST once the buffered guest data is written.
        case closing
    }

    final class Connection {
        let id: UInt64
        let key: Key
        let stream: any VsockHostStream
        var state: State
        var peerBufAlloc: UInt32 = 0
        var peerFwdCnt: UInt32 = 0
        /// Payload bytes sent to the guest.
        var txCnt: UInt32 = 0
        /// Guest payload bytes the host stream took.
        var fwdCnt: UInt32 = 0
        /// The fwd_cnt the guest last saw from us.
        var reportedFwdCnt: UInt32 = 0
        /// Guest data not yet taken by the stream: `writeBuffer[writeOffset...]`.
        var writeBuffer: [UInt8] = []
        var writeOffset = 0
        /// The host said the stream is readable and we have not seen EAGAIN since.
        var hostReadable = false
        var hostEnded = false
        var guestShutdown: UInt32 = 0
        var wroteShutdown = false
        var readInterest = false
        var writeInterest = false
        var creditUpdateQueued = false
        var creditRequestQueued = false

        init(id: UInt64, key: Key, stream: any VsockHostStream, state: State) {
            self.id = id
            self.key = key
            self.stream = stream
            self.state = state
        }

        var buffered: Int { writeBuffer.count - writeOffset }

        /// What the guest lets us send now.
        var peerCredit: UInt32 {
            let inFlight = txCnt &- peerFwdCnt
            return inFlight >= peerBufAlloc ? 0 : peerBufAlloc - inFlight
        }

        var mayRead: Bool {
            state == .established && !hostEnded && guestShutdown & VsockShutdownFlag.receive == 0
        }

        /// Host data can go to the guest now (given an rx buffer).
        var canSend: Bool { mayRead && hostReadable && peerCredit > 0 }
    }

    /// A packet waiting for an rx buffer. Except for RST, it is sent only if connection
    /// `connectionID` still exists (its header fields are filled in at delivery).
    struct Pending {
        var key: Key
        var op: VsockOp
        var flags: UInt32 = 0
        var connectionID: UInt64?
    }

    private let lock = Mutex<Void>(())
    private var connections: [Key: Connection] = [:]
    private var byStream: [ObjectIdentifier: Key] = [:]
    private var pending: [Pending] = []
    private var pendingHead = 0
    private var heldChain: DescriptorChain?
    private var nextConnectionID: UInt64 = 0
    private var nextLocalPort = VsockDevice.firstLocalPort
    private var isActive = false
    private var receiveWork: (@Sendable () -> Void)?
    private var problems: ProblemLog

    /// `guestCID` must be in `VsockDeviceConfig.validCIDs`. `log` receives one line the
    /// first time each kind of guest or host problem happens. `receiveWork` is called
    /// (without the device lock) whenever packets for the guest became pending outside an
    /// rx service; wire it to the rx queue's notification so the transport serves queue 0.
    public init(guestCID: UInt64, host: any VsockHost,
                receiveWork: (@Sendable () -> Void)? = nil,
                log: @escaping @Sendable (String) -> Void = { _ in }) {
        precondition(VsockDeviceConfig.validCIDs.contains(guestCID), "vsock guest CID \(guestCID) out of range")
        self.guestCID = guestCID
        self.host = host
        self.receiveWork = receiveWork
        self.problems = ProblemLog(sink: log)
    }

    /// Replaces the `receiveWork` callback (the transport's notifier exists only after the device).
    public func setReceiveWork(_ handler: (@Sendable () -> Void)?) {
        lock.withLock { _ in receiveWork = handler }
    }

    // MARK: Diagnostics

    public var connectionCount: Int { lock.withLock { _ in connections.count } }
    public var pendingPacketCount: Int { lock.withLock { _ in pending.count - pendingHead } }

    // MARK: VirtioDevice

    public var type: VirtioDeviceType { .vsock }
    public var features: UInt64 { 0 }
    public var queueSizes: [UInt16] { [Self.queueSize, Self.queueSize, Self.queueSize] }

    /// `struct virtio_vsock_config`: guest_cid (le64).
    public func readConfig(offset: Int, count: Int) -> [UInt8] {
        let space = (0..<8).map { UInt8(truncatingIfNeeded: guestCID >> (8 * $0)) }
        return VirtioConfigSpace.read(space, offset: offset, count: count)
    }

    public func writeConfig(offset: Int, bytes: [UInt8]) {}

    public func activate(features: UInt64, memory: GuestMemory) {
        lock.withLock { _ in isActive = true }
    }

    /// Closes every host stream and forgets all state.
    public func reset() {
        lock.withLock { _ in
            isActive = false
            for connection in connections.values { connection.stream.close() }
            connections.removeAll()
            byStream.removeAll()
            pending.removeAll()
            pendingHead = 0
            heldChain = nil
        }
    }

    public func process(queue index: Int, _ queue: inout Virtqueue, memory: GuestMemory) throws -> Bool {
        var used = false
        var signal: (@Sendable () -> Void)?
        try lock.withLock { _ in
            switch index {
            case Self.transmitQueue:
                used = try transmit(&queue, memory)
                signal = hasReceiveWork ? receiveWork : nil
            case Self.receiveQueue:
                let (didUse, more) = try receive(&queue, memory)
                used = didUse
                signal = more ? receiveWork : nil
            default:
                break     // event queue: keep the buffers
            }
        }
        signal?()
        return used
    }

    // MARK: Host side

    /// A host peer asked (`CONNECT <guestPort>`) for a connection to the guest. Queues a
    /// REQUEST and returns the local (host) port; the stream's `accepted` follows once the
    /// guest answers, or `close` if it refuses. Nil (the stream is not used) before the
    /// driver is ready or at `maxConnections`.
    public func hostConnected(stream: any VsockHostStream, guestPort: UInt32) -> UInt32? {
        let (port, signal) = lock.withLock { _ -> (UInt32?, (@Sendable () -> Void)?) in
            guard isActive, connections.count < Self.maxConnections,
                  byStream[ObjectIdentifier(stream)] == nil else { return (nil, nil) }
            var key = Key(hostPort: nextLocalPort, guestPort: guestPort)
            while connections[key] != nil { key.hostPort = advanceLocalPort() }
            _ = advanceLocalPort()
            let connection = add(key: key, stream: stream, state: .connecting)
            guard enqueue(Pending(key: key, op: .request, connectionID: connection.id)) else {
                forget(connection)
                return (nil, nil)
            }
            return (key.hostPort, receiveWork)
        }
        signal?()
        return port
    }

    /// The host stream became readable: its data goes to the guest at the next rx service
    /// (credit permitting). Unknown streams are ignored.
    public func hostReadable(_ stream: any VsockHostStream) {
        hostEvent(stream) { connection in
            connection.hostReadable = true
            updateInterest(connection)
        }
    }

    /// The host stream became writable: buffered guest data is written to it.
    public func hostWritable(_ stream: any VsockHostStream) {
        hostEvent(stream) { connection in flush(connection) }
    }

    /// The host gives up on the stream (hang-up, timeout): the guest gets RST, the stream `close`.
    public func hostClosed(_ stream: any VsockHostStream) {
        hostEvent(stream) { connection in remove(connection, reset: true) }
    }

    private func hostEvent(_ stream: any VsockHostStream, _ body: (Connection) -> Void) {
        let signal = lock.withLock { _ -> (@Sendable () -> Void)? in
            guard let key = byStream[ObjectIdentifier(stream)], let connection = connections[key] else { return nil }
            body(connection)
            return hasReceiveWork ? receiveWork : nil
        }
        signal?()
    }

    // MARK: Transmit (guest -> host)

    private func transmit(_ queue: inout Virtqueue, _ memory: GuestMemory) throws -> Bool {
        var used = false
        while let chain = try queue.nextChain(memory: memory) {
            handle(chain, memory)
            try queue.complete(headIndex: chain.headIndex, writtenLength: 0, memory: memory)
            used = true
        }
        return used
    }

    private func handle(_ chain: DescriptorChain, _ memory: GuestMemory) {
        guard chain.readableLength >= UInt64(VsockHeader.size),
              let raw = try? chain.read(from: memory, count: VsockHeader.size), let header = VsockHeader(raw) else {
            return problems.report("short", "dropped a \(chain.readableLength)-byte tx packet (shorter than the \(VsockHeader.size)-byte header)")
        }
        guard header.srcCID == guestCID else {
            return problems.report("srcCID", "dropped a tx packet from CID \(header.srcCID) (the guest is CID \(guestCID))")
        }
        guard header.dstCID == Self.hostCID else {
            return problems.report("dstCID", "dropped a tx packet for CID \(header.dstCID) (only the host, CID 2, is reachable)")
        }
        let key = Key(hostPort: header.dstPort, guestPort: header.srcPort)
        guard header.len <= UInt32(Self.maxPacketData),
              UInt64(header.len) <= chain.readableLength - UInt64(VsockHeader.size) else {
            problems.report("len", "dropped a tx packet with len \(header.len) (chain holds \(chain.readableLength - UInt64(VsockHeader.size)) payload bytes, the most is \(Self.maxPacketData)); its connection is reset")
            if let connection = connections[key] { remove(connection, reset: true) }
            return
        }
        guard header.type == VsockHeader.typeStream, let op = header.operation else {
            problems.report("type", "answered a tx packet of type \(header.type), op \(header.op) with RST (only stream sockets are supported)")
            if header.op != VsockOp.rst.rawValue {
                if let connection = connections[key] { remove(connection, reset: true) } else { sendReset(key) }
            }
            return
        }
        if op == .request { return accept(header, key: key) }
        guard let connection = connections[key] else {
            if op != .rst { sendReset(key) }
            return
        }
        connection.peerBufAlloc = header.bufAlloc
        connection.peerFwdCnt = header.fwdCnt
        if connection.peerCredit > 0 { connection.creditRequestQueued = false }
        switch op {
        case .request:
            break
        case .response:
            guard connection.state == .connecting else { return remove(connection, reset: true) }
            connection.state = .established
            connection.stream.accepted(localPort: key.hostPort)
            updateInterest(connection)
        case .rst:
            remove(connection, reset: false)
        case .shutdown:
            guard connection.state != .connecting else { return remove(connection, reset: true) }
            connection.guestShutdown |= header.flags & VsockShutdownFlag.both
            if connection.guestShutdown == VsockShutdownFlag.both {
                connection.state = .closing
            }
            updateInterest(connection)
            flush(connection)
        case .rw:
            guard connection.state != .connecting, connection.guestShutdown & VsockShutdownFlag.send == 0 else {
                return remove(connection, reset: true)
            }
            guard header.len > 0 else { return }
            guard connection.buffered + Int(header.len) <= Int(Self.bufferAllocation) else {
                problems.report("credit", "reset a connection whose guest sent more than the \(Self.bufferAllocation) bytes of credit it had")
                return remove(connection, reset: true)
            }
            guard let data = try? chain.read(from: memory, offset: UInt64(VsockHeader.size), count: Int(header.len)) else {
                return remove(connection, reset: true)
            }
            connection.writeBuffer += data
            flush(connection)
        case .creditUpdate:
            break
        case .creditRequest:
            queueCreditUpdate(connection)
        }
    }

    /// A guest REQUEST: connect through the host, answer RESPONSE or RST.
    private func accept(_ header: VsockHeader, key: Key) {
        if let existing = connections[key] {
            problems.report("duplicate", "reset a duplicate connection request (host port \(key.hostPort), guest port \(key.guestPort))")
            return remove(existing, reset: true)
        }
        guard connections.count < Self.maxConnections else {
            problems.report("tooMany", "refused a guest connection: \(Self.maxConnections) are open")
            return sendReset(key)
        }
        guard isActive, let stream = host.connect(hostPort: key.hostPort) else { return sendReset(key) }
        guard byStream[ObjectIdentifier(stream)] == nil else {
            problems.report("sameStream", "the host returned a stream already in use; refused the connection")
            return sendReset(key)
        }
        let connection = add(key: key, stream: stream, state: .established)
        connection.peerBufAlloc = header.bufAlloc
        connection.peerFwdCnt = header.fwdCnt
        guard enqueue(Pending(key: key, op: .response, connectionID: connection.id)) else {
            return forget(connection)
        }
        updateInterest(connection)
    }

    /// Writes buffered guest data to the stream as far as it takes it, then follows up:
    /// credit update, write shutdown, close.
    private func flush(_ connection: Connection) {
        while connection.buffered > 0 {
            guard let n = connection.stream.write(connection.writeBuffer[connection.writeOffset...]) else {
                return remove(connection, reset: true)
            }
            guard n > 0 else { break }
            let taken = min(n, connection.buffered)
            connection.writeOffset += taken
            connection.fwdCnt &+= UInt32(taken)
        }
        if connection.buffered == 0 {
            connection.writeBuffer.removeAll(keepingCapacity: connection.writeBuffer.count <= 64 * 1024)
            connection.writeOffset = 0
        } else if connection.writeOffset >= 64 * 1024 {
            connection.writeBuffer.removeFirst(connection.writeOffset)
            connection.writeOffset = 0
        }
        if connection.fwdCnt &- connection.reportedFwdCnt >= Self.creditUpdateThreshold {
            queueCreditUpdate(connection)
        }
        if connection.buffered == 0 {
            if connection.state == .closing { return remove(connection, reset: true) }
            if connection.guestShutdown & VsockShutdownFlag.send != 0, !connection.wroteShutdown {
                connection.wroteShutdown = true
                connection.stream.shutdownWrite()
            }
        }
        updateInterest(connection)
    }

    // MARK: Receive (host -> guest)

    /// Delivers pending packets, then host data, until the guest runs out of rx buffers or
    /// nothing is left. Returns (used any chain, stopped at `maxPacketsPerReceive` with work left).
    private func receive(_ queue: inout Virtqueue, _ memory: GuestMemory) throws -> (Bool, Bool) {
        var used = false
        var packets = 0
        while packets < Self.maxPacketsPerReceive {
            if pendingHead < pending.count {
                let entry = pending[pendingHead]
                guard let header = header(for: entry) else { popPending(); continue }
                guard let chain = try nextReceiveChain(&queue, memory, used: &used) else { return (used, false) }
                try chain.write(header.bytes, to: memory)
                try queue.complete(headIndex: chain.headIndex, writtenLength: UInt32(VsockHeader.size), memory: memory)
                popPending()
                used = true
                packets += 1
                continue
            }
            var progress = false
            for connection in Array(connections.values) where connection.canSend && packets < Self.maxPacketsPerReceive {
                guard connections[connection.key] === connection else { continue }
                guard let chain = try nextReceiveChain(&queue, memory, used: &used) else { return (used, false) }
                let room = min(Int(min(chain.writableLength - UInt64(VsockHeader.size), UInt64(Self.maxPacketData))),
                               Int(connection.peerCredit))
                guard room > 0 else {
                    // A header-only buffer cannot carry data: give it back empty.
                    problems.report("rxSmall", "returned a \(chain.writableLength)-byte rx buffer unused (too small for data)")
                    try queue.complete(headIndex: chain.headIndex, writtenLength: 0, memory: memory)
                    used = true
                    progress = true
                    continue
                }
                guard let data = connection.stream.read(max: room) else {
                    heldChain = chain
                    hostEnded(connection)
                    progress = true
                    continue
                }
                guard !data.isEmpty else {
                    heldChain = chain
                    connection.hostReadable = false
                    updateInterest(connection)
                    continue
                }
                let count = min(data.count, room)
                var header = packetHeader(connection.key, .rw, connection)
                header.len = UInt32(count)
                try chain.write(header.bytes + data.prefix(count), to: memory)
                try queue.complete(headIndex: chain.headIndex, writtenLength: UInt32(VsockHeader.size + count), memory: memory)
                connection.txCnt &+= UInt32(count)
                if connection.peerCredit == 0, connection.hostReadable, !connection.creditRequestQueued {
                    connection.creditRequestQueued = true
                    _ = enqueue(Pending(key: connection.key, op: .creditRequest, connectionID: connection.id))
                }
                used = true
                progress = true
                packets += 1
            }
            if !progress && pendingHead >= pending.count { return (used, false) }
        }
        return (used, hasReceiveWork)
    }

    /// The held chain or the next one from the queue; chains too small for a header are
    /// returned empty (logged once).
    private func nextReceiveChain(_ queue: inout Virtqueue, _ memory: GuestMemory, used: inout Bool) throws -> DescriptorChain? {
        if let chain = heldChain {
            heldChain = nil
            return chain
        }
        while let chain = try queue.nextChain(memory: memory) {
            if chain.writableLength >= UInt64(VsockHeader.size) { return chain }
            problems.report("rxTiny", "returned a \(chain.writableLength)-byte rx buffer unused (shorter than the \(VsockHeader.size)-byte header)")
            try queue.complete(headIndex: chain.headIndex, writtenLength: 0, memory: memory)
            used = true
        }
        return nil
    }

    /// The header for a pending packet, or nil when it is stale (its connection is gone).
    private func header(for entry: Pending) -> VsockHeader? {
        if entry.op == .rst {
            return VsockHeader(srcCID: Self.hostCID, dstCID: guestCID, srcPort: entry.key.hostPort,
                               dstPort: entry.key.guestPort, op: .rst)
        }
        guard let connection = connections[entry.key], connection.id == entry.connectionID else { return nil }
        if entry.op == .creditUpdate { connection.creditUpdateQueued = false }
        if entry.op == .creditRequest {
            guard connection.peerCredit == 0 else { connection.creditRequestQueued = false; return nil }
        }
        var header = packetHeader(entry.key, entry.op, connection)
        header.flags = entry.flags
        return header
    }

    private func packetHeader(_ key: Key, _ op: VsockOp, _ connection: Connection) -> VsockHeader {
        connection.reportedFwdCnt = connection.fwdCnt
        return VsockHeader(srcCID: Self.hostCID, dstCID: guestCID, srcPort: key.hostPort, dstPort: key.guestPort,
                           op: op, bufAlloc: Self.bufferAllocation, fwdCnt: connection.fwdCnt)
    }

    /// The host stream ended (EOF on read): the host will send no more. Tell the guest with
    /// SHUTDOWN(SEND) and keep the connection open for the guest's data: the host may only
    /// have half-closed (a client that sends its request, shuts down writing, then reads the
    /// answer). A host that closed completely makes the next write fail, which resets it.
    private func hostEnded(_ connection: Connection) {
        connection.hostEnded = true
        connection.hostReadable = false
        if connection.guestShutdown == VsockShutdownFlag.both || connection.state == .closing {
            return remove(connection, reset: true)
        }
        if !enqueue(Pending(key: connection.key, op: .shutdown, flags: VsockShutdownFlag.send, connectionID: connection.id)) {
            return remove(connection, reset: true)
        }
        updateInterest(connection)
    }

    // MARK: Bookkeeping

    private var hasReceiveWork: Bool {
        pendingHead < pending.count || connections.values.contains { $0.canSend }
    }

    private func advanceLocalPort() -> UInt32 {
        nextLocalPort = nextLocalPort == UInt32.max ? Self.firstLocalPort : nextLocalPort + 1
        return nextLocalPort
    }

    private func add(key: Key, stream: any VsockHostStream, state: State) -> Connection {
        nextConnectionID += 1
        let connection = Connection(id: nextConnectionID, key: key, stream: stream, state: state)
        connections[key] = connection
        byStream[ObjectIdentifier(stream)] = key
        return connection
    }

    /// Drops a connection without telling the guest; closes its stream.
    private func forget(_ connection: Connection) {
        guard connections[connection.key] === connection else { return }
        connections[connection.key] = nil
        byStream[ObjectIdentifier(connection.stream)] = nil
        connection.stream.close()
    }

    private func remove(_ connection: Connection, reset: Bool) {
        guard connections[connection.key] === connection else { return }
        forget(connection)
        if reset { sendReset(connection.key) }
    }

    private func sendReset(_ key: Key) {
        _ = enqueue(Pending(key: key, op: .rst))
    }

    private func queueCreditUpdate(_ connection: Connection) {
        guard !connection.creditUpdateQueued else { return }
        if enqueue(Pending(key: connection.key, op: .creditUpdate, connectionID: connection.id)) {
            connection.creditUpdateQueued = true
        }
    }

    /// False (logged once) when the queue is full; the packet is dropped.
    private func enqueue(_ entry: Pending) -> Bool {
        guard pending.count - pendingHead < Self.maxPendingControl else {
            problems.report("pendingFull", "dropped a \(entry.op) packet: \(Self.maxPendingControl) packets already wait for rx buffers")
            return false
        }
        pending.append(entry)
        return true
    }

    private func popPending() {
        pendingHead += 1
        if pendingHead == pending.count {
            pending.removeAll(keepingCapacity: true)
            pendingHead = 0
        } else if pendingHead >= 1024 {
            pending.removeFirst(pendingHead)
            pendingHead = 0
        }
    }

    private func updateInterest(_ connection: Connection) {
        guard connections[connection.key] === connection else { return }
        let read = connection.mayRead && !connection.hostReadable
        if read != connection.readInterest {
            connection.readInterest = read
            connection.stream.setReadInterest(read)
        }
        let write = connection.buffered > 0
        if write != connection.writeInterest {
            connection.writeInterest = write
            connection.stream.setWriteInterest(write)
        }
    }

    /// Logs the first problem of each kind, saying that later ones are not logged.
    struct ProblemLog {
        private let sink: @Sendable (String) -> Void
        private var seen: Set<String> = []

        init(sink: @escaping @Sendable (String) -> Void) { self.sink = sink }

        mutating func report(_ kind: String, _ message: String) {
            guard seen.insert(kind).inserted else { return }
            sink("\(message) (further such problems are not logged)")   // the caller's log names the device
        }
    }
}
