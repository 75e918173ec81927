import GuestMemory
import Virtio

/// The guest side of one split virtqueue, for tests: lays the rings out in guest RAM and
/// fills them the way Linux's virtio_ring does. The `write…`/`set…` methods are escape
/// hatches that write any value a broken or hostile driver could.
final class FakeDriver {
    /// One buffer to put in a chain.
    struct Buffer {
        var address: UInt64
        var length: UInt32
        var isWritable: Bool
        static func readable(_ address: UInt64, _ length: UInt32) -> Buffer { Buffer(address: address, length: length, isWritable: false) }
        static func writable(_ address: UInt64, _ length: UInt32) -> Buffer { Buffer(address: address, length: length, isWritable: true) }
    }

    static let flagNext: UInt16 = 1
    static let flagWrite: UInt16 = 2
    static let flagIndirect: UInt16 = 4
    static let availableFlagNoInterrupt: UInt16 = 1

    let memory: GuestMemory
    let size: UInt16
    let descriptorTable: GuestAddress
    let availableRing: GuestAddress
    let usedRing: GuestAddress
    /// The driver's avail idx: entries added so far (published or not).
    private(set) var availableIndex: UInt16 = 0
    /// Next descriptor handed out, round robin (tests complete chains before reuse).
    private var nextFreeDescriptor: UInt16 = 0

    /// Zeroes and claims the three ring areas, as a driver does before QueueReady.
    init(memory: GuestMemory, size: UInt16, descriptorTable: UInt64, availableRing: UInt64, usedRing: UInt64) throws {
        self.memory = memory
        self.size = size
        self.descriptorTable = GuestAddress(descriptorTable)
        self.availableRing = GuestAddress(availableRing)
        self.usedRing = GuestAddress(usedRing)
        try memory.zero(at: self.descriptorTable, length: 16 * UInt64(size))
        try memory.zero(at: self.availableRing, length: 6 + 2 * UInt64(size))
        try memory.zero(at: self.usedRing, length: 6 + 8 * UInt64(size))
    }

    /// A device-side queue configured with this driver's layout and marked ready.
    func makeQueue(maxSize: UInt16 = 256, eventIndex: Bool = false) -> Virtqueue {
        var queue = Virtqueue(maxSize: maxSize)
        queue.size = size
        queue.descriptorTable = descriptorTable
        queue.availableRing = availableRing
        queue.usedRing = usedRing
        queue.eventIndexEnabled = eventIndex
        queue.isReady = true
        return queue
    }

    // MARK: Well-formed requests

    /// Writes `buffers` as a linked chain of descriptors, makes it available and publishes
    /// the avail idx. Returns the head index.
    @discardableResult
    func addChain(_ buffers: [Buffer], publish: Bool = true) throws -> UInt16 {
        let indices = buffers.map { _ in allocateDescriptor() }
        for (i, buffer) in buffers.enumerated() {
            let isLast = i == buffers.count - 1
            try writeDescriptor(indices[i], address: buffer.address, length: buffer.length,
                                flags: (buffer.isWritable ? Self.flagWrite : 0) | (isLast ? 0 : Self.flagNext),
                                next: isLast ? 0 : indices[i + 1])
        }
        try makeAvailable(head: indices[0], publish: publish)
        return indices[0]
    }

    /// Writes `buffers` as an indirect table at `tableAddress` and makes available one ring
    /// descriptor pointing to it. Returns the head index.
    @discardableResult
    func addIndirectChain(_ buffers: [Buffer], tableAddress: UInt64) throws -> UInt16 {
        let table = GuestAddress(tableAddress)
        for (i, buffer) in buffers.enumerated() {
            let isLast = i == buffers.count - 1
            try writeDescriptor(UInt16(i), address: buffer.address, length: buffer.length,
                                flags: (buffer.isWritable ? Self.flagWrite : 0) | (isLast ? 0 : Self.flagNext),
                                next: isLast ? 0 : UInt16(i + 1), table: table)
        }
        let head = allocateDescriptor()
        try writeDescriptor(head, address: tableAddress, length: UInt32(16 * buffers.count), flags: Self.flagIndirect, next: 0)
        try makeAvailable(head: head)
        return head
    }

    // MARK: Escape hatches

    /// Writes descriptor `index` of the ring's table, or of the indirect table at `table`.
    func writeDescriptor(_ index: UInt16, address: UInt64, length: UInt32, flags: UInt16, next: UInt16,
                         table: GuestAddress? = nil) throws {
        let base = (table ?? descriptorTable).adding(16 * UInt64(index))
        try memory.store(address, at: base)
        try memory.store(length, at: base.adding(8))
        try memory.store(flags, at: base.adding(12))
        try memory.store(next, at: base.adding(14))
    }

    /// Puts any `head` value in the next available ring slot; publishes the idx if asked.
    func makeAvailable(head: UInt16, publish: Bool = true) throws {
        try memory.store(head, at: availableRing.adding(4 + 2 * UInt64(availableIndex % size)))
        availableIndex &+= 1
        if publish { try self.publish() }
    }

    /// Writes the driver's avail idx to the ring.
    func publish() throws { try setPublishedAvailableIndex(availableIndex) }

    /// Writes any value as the avail idx (leaves the driver's own count alone).
    func setPublishedAvailableIndex(_ index: UInt16) throws {
        try memory.store(index, at: availableRing.adding(2))
    }

    /// Writes the avail ring flags (VIRTQ_AVAIL_F_NO_INTERRUPT = 1).
    func setAvailableFlags(_ flags: UInt16) throws { try memory.store(flags, at: availableRing) }

    /// Writes used_event (EVENT_IDX): interrupt me once the used idx passes this value.
    func setUsedEvent(_ index: UInt16) throws {
        try memory.store(index, at: availableRing.adding(4 + 2 * UInt64(size)))
    }

    // MARK: Reading what the device wrote

    /// The used idx the device published.
    func usedIndex() throws -> UInt16 { try memory.load(at: usedRing.adding(2)) }

    /// Used ring element `position` (a free-running index, taken modulo the size).
    func usedElement(_ position: UInt16) throws -> (id: UInt32, length: UInt32) {
        let element = usedRing.adding(4 + 8 * UInt64(position % size))
        return (try memory.load(at: element), try memory.load(at: element.adding(4)))
    }

    /// avail_event the device wrote (EVENT_IDX): notify it once avail idx passes this value.
    func availableEvent() throws -> UInt16 { try memory.load(at: usedRing.adding(4 + 8 * UInt64(size))) }

    private func allocateDescriptor() -> UInt16 {
        defer { nextFreeDescriptor = (nextFreeDescriptor + 1) % size }
        return nextFreeDescriptor
    }
}
