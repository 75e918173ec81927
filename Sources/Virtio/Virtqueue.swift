import GuestMemory
import Synchronization

/// The device side of one split virtqueue (virtio 1.2, section 2.7). Everything the guest
/// wrote is checked before use: ring placement, indices, descriptor chains and every
/// buffer, which must lie entirely inside guest RAM. Each guest field is read once, so a
/// guest rewriting memory underneath cannot make a checked value change afterwards.
///
/// A value type: the transport keeps it under its lock and hands it to the device, which
/// calls `nextChain` until nil, `complete` for each chain, then `needsInterrupt`.
public struct Virtqueue: Sendable {
    /// Largest indirect table accepted, in descriptors: the largest split queue size.
    public static let maxIndirectEntries = 32768

    /// What the transport reports as QueueNumMax.
    public let maxSize: UInt16
    /// QueueNum, chosen by the driver.
    public var size: UInt16 { didSet { isValidated = false } }
    /// QueueDesc: guest address of the descriptor table.
    public var descriptorTable: GuestAddress { didSet { isValidated = false } }
    /// QueueDriver: guest address of the available ring.
    public var availableRing: GuestAddress { didSet { isValidated = false } }
    /// QueueDevice: guest address of the used ring.
    public var usedRing: GuestAddress { didSet { isValidated = false } }
    /// QueueReady.
    public var isReady: Bool { didSet { isValidated = false } }
    /// VIRTIO_F_EVENT_IDX was negotiated: use used_event / avail_event instead of flags.
    public var eventIndexEnabled: Bool

    /// Free-running index of the next available ring entry to consume.
    public private(set) var nextAvailableIndex: UInt16 = 0
    /// Free-running index of the next used ring entry to fill (the published used idx).
    public private(set) var nextUsedIndex: UInt16 = 0
    /// Used buffers published since `needsInterrupt` last ran.
    private var completedSinceInterruptCheck = 0
    /// The configuration passed `validate` since it last changed.
    private var isValidated = false

    public init(maxSize: UInt16) {
        self.maxSize = maxSize
        size = maxSize
        descriptorTable = GuestAddress(0)
        availableRing = GuestAddress(0)
        usedRing = GuestAddress(0)
        isReady = false
        eventIndexEnabled = false
    }

    /// Back to the state after `init` (the driver reset the device); keeps `maxSize`.
    public mutating func reset() {
        self = Virtqueue(maxSize: maxSize)
    }

    /// Checks the configuration the driver wrote: size a power of two in 1...maxSize, desc
    /// table 16-byte aligned, avail ring 2-byte, used ring 4-byte aligned, all three areas
    /// entirely inside guest RAM (sizes per spec incl. the event-idx fields). Call when the
    /// driver sets QueueReady / DRIVER_OK. `nextChain`, `complete` and `needsInterrupt`
    /// also run it after any configuration change, so an unchecked queue is never used.
    public func validate(memory: GuestMemory) throws(VirtqueueError) {
        guard isReady else { throw .notReady }
        guard size != 0, size <= maxSize, size & (size - 1) == 0 else {
            throw .invalidSize(size: size, maxSize: maxSize)
        }
        let entries = UInt64(size)
        let areas: [(VirtqueueError.Area, GuestAddress, alignment: UInt64, length: UInt64)] = [
            (.descriptorTable, descriptorTable, 16, 16 * entries),
            (.availableRing, availableRing, 2, 6 + 2 * entries),   // flags, idx, ring, used_event
            (.usedRing, usedRing, 4, 6 + 8 * entries),             // flags, idx, ring, avail_event
        ]
        for (area, address, alignment, length) in areas {
            guard address.raw % alignment == 0 else {
                throw .misaligned(area, address: address.raw, alignment: alignment)
            }
            guard memory.contains(address, length: length) else {
                throw .areaOutsideMemory(area, address: address.raw, length: length)
            }
        }
    }

    /// The next available chain, or nil when the driver has made nothing new available.
    /// On error nothing is consumed and nothing in guest memory is written (except
    /// avail_event with EVENT_IDX).
    public mutating func nextChain(memory: GuestMemory) throws(VirtqueueError) -> DescriptorChain? {
        try requireValidated(memory: memory)
        if eventIndexEnabled {
            // avail_event: notify us once entry `nextAvailableIndex` is available. The full
            // fence orders this store before the idx load below, so a driver that missed it
            // published before our load and we see its entry now.
            try store(nextAvailableIndex, at: availableEventAddress, memory)
            atomicMemoryFence(ordering: .sequentiallyConsistent)
        }
        let published = try load(UInt16.self, at: availableRing.adding(2), memory)
        let pending = published &- nextAvailableIndex
        guard pending != 0 else { return nil }
        guard pending <= size else {
            throw .availableIndexJump(nextToConsume: nextAvailableIndex, published: published, size: size)
        }
        // Ring entries and descriptors are read only after the idx that published them.
        atomicMemoryFence(ordering: .acquiring)
        let slot = UInt64(nextAvailableIndex % size)
        let head = try load(UInt16.self, at: availableRing.adding(4 + 2 * slot), memory)
        guard head < size else { throw .headIndexOutOfRange(index: head, size: size) }
        let chain = try readChain(head: head, memory: memory)
        nextAvailableIndex &+= 1
        return chain
    }

    /// Puts (head, written length) in the used ring and publishes the new used idx.
    public mutating func complete(headIndex: UInt16, writtenLength: UInt32, memory: GuestMemory) throws(VirtqueueError) {
        try requireValidated(memory: memory)
        guard headIndex < size else { throw .invalidCompletion(head: headIndex, size: size) }
        let element = usedRing.adding(4 + 8 * UInt64(nextUsedIndex % size))
        try store(UInt32(headIndex), at: element, memory)
        try store(writtenLength, at: element.adding(4), memory)
        // The element must be visible before the idx that hands it to the driver.
        atomicMemoryFence(ordering: .releasing)
        try store(nextUsedIndex &+ 1, at: usedRing.adding(2), memory)
        nextUsedIndex &+= 1
        completedSinceInterruptCheck += 1
    }

    /// Whether the driver wants an interrupt for what was completed since the last call
    /// (VIRTQ_AVAIL_F_NO_INTERRUPT, or used_event with EVENT_IDX). Conservative: when unsure, true.
    public mutating func needsInterrupt(memory: GuestMemory) throws(VirtqueueError) -> Bool {
        try requireValidated(memory: memory)
        let completed = completedSinceInterruptCheck
        completedSinceInterruptCheck = 0
        guard completed > 0 else { return false }
        // More than 2^16 completions make the old used idx ambiguous.
        guard completed <= Int(UInt16.max) else { return true }
        // The used idx store must be visible before we read what the driver asked for,
        // or a driver re-enabling interrupts meanwhile could miss this batch.
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        if eventIndexEnabled {
            let usedEvent = try load(UInt16.self, at: usedEventAddress, memory)
            let previous = nextUsedIndex &- UInt16(completed)
            // vring_need_event: interrupt when used_event lies in [previous, nextUsedIndex).
            return nextUsedIndex &- usedEvent &- 1 < nextUsedIndex &- previous
        }
        let flags = try load(UInt16.self, at: availableRing, memory)
        return flags & Self.availableFlagNoInterrupt == 0
    }

    // MARK: Chains

    static let descriptorFlagNext: UInt16 = 1
    static let descriptorFlagWrite: UInt16 = 2
    static let descriptorFlagIndirect: UInt16 = 4
    static let availableFlagNoInterrupt: UInt16 = 1

    /// One descriptor exactly as the guest wrote it (virtq_desc), not yet checked.
    private struct RawDescriptor {
        var address: UInt64
        var length: UInt32
        var flags: UInt16
        var next: UInt16
        func has(_ flag: UInt16) -> Bool { flags & flag != 0 }
    }

    /// A table being walked: the ring's descriptor table or one indirect table.
    private struct Table {
        var address: GuestAddress
        var entries: Int
        var isIndirect: Bool
    }

    /// Follows the chain starting at `head`, checking every descriptor.
    private func readChain(head: UInt16, memory: GuestMemory) throws(VirtqueueError) -> DescriptorChain {
        var table = Table(address: descriptorTable, entries: Int(size), isIndirect: false)
        var index = head
        var visited = 0
        var readable: [Descriptor] = []
        var writable: [Descriptor] = []
        var totalLength: UInt64 = 0
        while true {
            visited += 1
            guard visited <= table.entries else { throw .chainTooLong(head: head, tableEntries: table.entries) }
            let raw = try readDescriptor(index, in: table, memory)
            if raw.has(Self.descriptorFlagIndirect) {
                guard !table.isIndirect else { throw .nestedIndirect(head: head) }
                guard !raw.has(Self.descriptorFlagNext) else { throw .indirectWithNext(head: head) }
                table = try indirectTable(raw, head: head, memory: memory)
                index = 0
                visited = 0
                continue
            }
            guard !raw.address.addingReportingOverflow(UInt64(raw.length)).overflow else {
                throw .bufferAddressOverflow(head: head, address: raw.address, length: raw.length)
            }
            guard memory.contains(GuestAddress(raw.address), length: UInt64(raw.length)) else {
                throw .bufferOutsideMemory(head: head, address: raw.address, length: raw.length)
            }
            let isWriteOnly = raw.has(Self.descriptorFlagWrite)
            guard isWriteOnly || writable.isEmpty else { throw .readableAfterWritable(head: head) }
            totalLength += UInt64(raw.length)
            guard totalLength <= UInt64(UInt32.max) else { throw .chainLengthOverflow(head: head) }
            let descriptor = Descriptor(address: GuestAddress(raw.address), length: raw.length, isWriteOnly: isWriteOnly)
            if isWriteOnly { writable.append(descriptor) } else { readable.append(descriptor) }
            guard raw.has(Self.descriptorFlagNext) else { break }
            guard Int(raw.next) < table.entries else {
                throw .nextIndexOutOfRange(head: head, next: raw.next, tableEntries: table.entries)
            }
            index = raw.next
        }
        return DescriptorChain(headIndex: head, readable: readable, writable: writable)
    }

    /// The indirect table a descriptor with VIRTQ_DESC_F_INDIRECT points to, once checked.
    private func indirectTable(_ raw: RawDescriptor, head: UInt16, memory: GuestMemory) throws(VirtqueueError) -> Table {
        let entries = Int(raw.length / 16)
        guard raw.length != 0, raw.length % 16 == 0, entries <= Self.maxIndirectEntries else {
            throw .invalidIndirectTableLength(head: head, length: raw.length)
        }
        guard memory.contains(GuestAddress(raw.address), length: UInt64(raw.length)) else {
            throw .indirectTableOutsideMemory(head: head, address: raw.address, length: raw.length)
        }
        return Table(address: GuestAddress(raw.address), entries: entries, isIndirect: true)
    }

    /// Reads entry `index` (already checked to be < `table.entries`) of `table`.
    private func readDescriptor(_ index: UInt16, in table: Table, _ memory: GuestMemory) throws(VirtqueueError) -> RawDescriptor {
        let base = table.address.adding(16 * UInt64(index))
        return RawDescriptor(
            address: try load(UInt64.self, at: base, memory),
            length: try load(UInt32.self, at: base.adding(8), memory),
            flags: try load(UInt16.self, at: base.adding(12), memory),
            next: try load(UInt16.self, at: base.adding(14), memory))
    }

    // MARK: Ring access

    /// used_event, at the end of the available ring.
    private var usedEventAddress: GuestAddress { availableRing.adding(4 + 2 * UInt64(size)) }
    /// avail_event, at the end of the used ring.
    private var availableEventAddress: GuestAddress { usedRing.adding(4 + 8 * UInt64(size)) }

    private mutating func requireValidated(memory: GuestMemory) throws(VirtqueueError) {
        guard !isValidated else { return }
        try validate(memory: memory)
        isValidated = true
    }

    private func load<T: FixedWidthInteger>(_: T.Type, at address: GuestAddress, _ memory: GuestMemory) throws(VirtqueueError) -> T {
        do { return try memory.load(T.self, at: address) } catch {
            throw .memoryAccess(address: address.raw, length: UInt64(MemoryLayout<T>.size))
        }
    }

    private func store<T: FixedWidthInteger>(_ value: T, at address: GuestAddress, _ memory: GuestMemory) throws(VirtqueueError) {
        do { try memory.store(value, at: address) } catch {
            throw .memoryAccess(address: address.raw, length: UInt64(MemoryLayout<T>.size))
        }
    }
}
