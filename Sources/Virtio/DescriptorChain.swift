import GuestMemory

/// One buffer of a descriptor chain, already checked to lie inside guest RAM.
public struct Descriptor: Equatable, Sendable {
    public var address: GuestAddress
    public var length: UInt32
    /// VIRTQ_DESC_F_WRITE: the device writes this buffer (device-writable).
    public var isWriteOnly: Bool

    public init(address: GuestAddress, length: UInt32, isWriteOnly: Bool) {
        self.address = address
        self.length = length
        self.isWriteOnly = isWriteOnly
    }
}

/// A request the driver made available: the device-readable buffers, then the
/// device-writable ones (the virtio spec requires that order). Built only by `Virtqueue`,
/// which has validated every field the guest controls; tests may build one directly.
public struct DescriptorChain: Equatable, Sendable {
    /// The head descriptor index, returned to the driver in the used ring.
    public let headIndex: UInt16
    public let readable: [Descriptor]
    public let writable: [Descriptor]

    public init(headIndex: UInt16, readable: [Descriptor], writable: [Descriptor]) {
        self.headIndex = headIndex
        self.readable = readable
        self.writable = writable
    }

    public var readableLength: UInt64 { readable.reduce(0) { $0 + UInt64($1.length) } }
    public var writableLength: UInt64 { writable.reduce(0) { $0 + UInt64($1.length) } }

    /// Copies `count` device-readable bytes starting `offset` bytes into the chain.
    /// Throws if the chain holds fewer.
    public func read(from memory: GuestMemory, offset: UInt64 = 0, count: Int) throws -> [UInt8] {
        guard offset <= readableLength, UInt64(count) <= readableLength - offset else {
            throw DescriptorChainError.tooShort(wanted: offset + UInt64(count), have: readableLength)
        }
        var out: [UInt8] = []
        out.reserveCapacity(count)
        var skip = offset
        for d in readable where out.count < count {
            let len = UInt64(d.length)
            if skip >= len { skip -= len; continue }
            let take = min(len - skip, UInt64(count - out.count))
            out += try memory.read(at: d.address.adding(skip), count: Int(take))
            skip = 0
        }
        return out
    }

    /// Writes `bytes` into the device-writable buffers starting `offset` bytes in.
    /// Throws if they do not fit.
    public func write(_ bytes: [UInt8], to memory: GuestMemory, offset: UInt64 = 0) throws {
        guard offset <= writableLength, UInt64(bytes.count) <= writableLength - offset else {
            throw DescriptorChainError.tooShort(wanted: offset + UInt64(bytes.count), have: writableLength)
        }
        var done = 0
        var skip = offset
        for d in writable where done < bytes.count {
            let len = UInt64(d.length)
            if skip >= len { skip -= len; continue }
            let take = Int(min(len - skip, UInt64(bytes.count - done)))
            try memory.write(bytes[done..<done + take], at: d.address.adding(skip))
            done += take
            skip = 0
        }
    }
}

public enum DescriptorChainError: Error, Equatable, CustomStringConvertible {
    case tooShort(wanted: UInt64, have: UInt64)
    public var description: String {
        switch self {
        case .tooShort(let w, let h): "descriptor chain holds \(h) bytes, request needs \(w)"
        }
    }
}
