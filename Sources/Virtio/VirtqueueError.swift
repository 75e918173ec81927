/// Why a split virtqueue refused what the driver wrote. Every case is a guest protocol
/// violation (or a device bug for `invalidCompletion`); the transport answers with
/// DEVICE_NEEDS_RESET. Descriptions are one line and name the offending values.
public enum VirtqueueError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The three guest areas that make up a split virtqueue (virtio 1.2, section 2.7).
    public enum Area: String, Equatable, Sendable {
        case descriptorTable = "descriptor table"
        case availableRing = "available ring"
        case usedRing = "used ring"
    }

    /// The driver has not set QueueReady.
    case notReady
    /// QueueNum is 0, not a power of two, or above QueueNumMax.
    case invalidSize(size: UInt16, maxSize: UInt16)
    /// A ring address lacks the alignment the spec requires (16, 2 and 4 bytes).
    case misaligned(Area, address: UInt64, alignment: UInt64)
    /// A ring area is not entirely inside one region of guest RAM.
    case areaOutsideMemory(Area, address: UInt64, length: UInt64)
    /// The available index ran more than `size` entries ahead of the next one to consume.
    case availableIndexJump(nextToConsume: UInt16, published: UInt16, size: UInt16)
    /// An available ring entry names a descriptor beyond the table.
    case headIndexOutOfRange(index: UInt16, size: UInt16)
    /// A descriptor's `next` names an entry beyond its table (the ring or an indirect table).
    case nextIndexOutOfRange(head: UInt16, next: UInt16, tableEntries: Int)
    /// The chain visits more descriptors than its table holds, so it loops.
    case chainTooLong(head: UInt16, tableEntries: Int)
    /// A device-readable descriptor follows a device-writable one.
    case readableAfterWritable(head: UInt16)
    /// A descriptor sets both VIRTQ_DESC_F_INDIRECT and VIRTQ_DESC_F_NEXT.
    case indirectWithNext(head: UInt16)
    /// An indirect table contains another indirect descriptor.
    case nestedIndirect(head: UInt16)
    /// An indirect table length is 0, not a multiple of 16, or above `maxIndirectEntries`.
    case invalidIndirectTableLength(head: UInt16, length: UInt32)
    /// An indirect table is not entirely inside one region of guest RAM.
    case indirectTableOutsideMemory(head: UInt16, address: UInt64, length: UInt32)
    /// A buffer's address plus length wraps past 2^64.
    case bufferAddressOverflow(head: UInt16, address: UInt64, length: UInt32)
    /// A buffer is not entirely inside one region of guest RAM.
    case bufferOutsideMemory(head: UInt16, address: UInt64, length: UInt32)
    /// The chain's buffers add up to more than UInt32.max bytes.
    case chainLengthOverflow(head: UInt16)
    /// The device completed a head index beyond the queue (a device bug, not the guest's).
    case invalidCompletion(head: UInt16, size: UInt16)
    /// A ring access failed although the rings were validated (cannot happen; kept so
    /// guest-memory errors stay typed).
    case memoryAccess(address: UInt64, length: UInt64)

    public var description: String {
        switch self {
        case .notReady:
            "virtqueue used before the driver set QueueReady"
        case .invalidSize(let size, let maxSize):
            "virtqueue size \(size) is not a power of two in 1...\(maxSize)"
        case .misaligned(let area, let address, let alignment):
            "virtqueue \(area.rawValue) at \(hex(address)) is not \(alignment)-byte aligned"
        case .areaOutsideMemory(let area, let address, let length):
            "virtqueue \(area.rawValue) at \(hex(address)) + \(length) bytes is outside guest RAM"
        case .availableIndexJump(let next, let published, let size):
            "available index \(published) is more than \(size) entries ahead of \(next)"
        case .headIndexOutOfRange(let index, let size):
            "available ring names descriptor \(index), queue size is \(size)"
        case .nextIndexOutOfRange(let head, let next, let entries):
            "chain \(head): next descriptor \(next) is outside a table of \(entries) entries"
        case .chainTooLong(let head, let entries):
            "chain \(head) is longer than its table of \(entries) descriptors (loop)"
        case .readableAfterWritable(let head):
            "chain \(head): device-readable descriptor after a device-writable one"
        case .indirectWithNext(let head):
            "chain \(head): descriptor sets both INDIRECT and NEXT"
        case .nestedIndirect(let head):
            "chain \(head): indirect descriptor inside an indirect table"
        case .invalidIndirectTableLength(let head, let length):
            "chain \(head): indirect table length \(length) is not a non-zero multiple of 16 "
                + "up to \(Virtqueue.maxIndirectEntries) entries"
        case .indirectTableOutsideMemory(let head, let address, let length):
            "chain \(head): indirect table at \(hex(address)) + \(length) bytes is outside guest RAM"
        case .bufferAddressOverflow(let head, let address, let length):
            "chain \(head): buffer at \(hex(address)) + \(length) bytes wraps the address space"
        case .bufferOutsideMemory(let head, let address, let length):
            "chain \(head): buffer at \(hex(address)) + \(length) bytes is outside guest RAM"
        case .chainLengthOverflow(let head):
            "chain \(head): buffers add up to more than \(UInt32.max) bytes"
        case .invalidCompletion(let head, let size):
            "device completed descriptor \(head), queue size is \(size)"
        case .memoryAccess(let address, let length):
            "virtqueue access at \(hex(address)) + \(length) bytes failed"
        }
    }
}

private func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }
