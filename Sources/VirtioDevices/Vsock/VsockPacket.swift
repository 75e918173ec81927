/// virtio-vsock packet operations (virtio 1.2, section 5.10.6).
public enum VsockOp: UInt16, Sendable {
    case request = 1, response = 2, rst = 3, shutdown = 4, rw = 5, creditUpdate = 6, creditRequest = 7
}

/// Flags of a SHUTDOWN packet: the sender will receive (RECEIVE) / send (SEND) no more.
public enum VsockShutdownFlag {
    public static let receive: UInt32 = 1
    public static let send: UInt32 = 2
    public static let both: UInt32 = 3
}

/// `struct virtio_vsock_hdr`: 44 bytes, little-endian, packed. The `len` payload bytes
/// follow it in the same chain.
public struct VsockHeader: Equatable, Sendable {
    public static let size = 44
    /// VIRTIO_VSOCK_TYPE_STREAM, the only socket type Kite carries.
    public static let typeStream: UInt16 = 1

    public var srcCID: UInt64
    public var dstCID: UInt64
    public var srcPort: UInt32
    public var dstPort: UInt32
    public var len: UInt32
    public var type: UInt16
    /// Raw op (unknown values are kept so the device can answer them with RST).
    public var op: UInt16
    public var flags: UInt32
    public var bufAlloc: UInt32
    public var fwdCnt: UInt32

    public init(srcCID: UInt64, dstCID: UInt64, srcPort: UInt32, dstPort: UInt32, len: UInt32 = 0,
                type: UInt16 = VsockHeader.typeStream, op: VsockOp, flags: UInt32 = 0,
                bufAlloc: UInt32 = 0, fwdCnt: UInt32 = 0) {
        self.init(srcCID: srcCID, dstCID: dstCID, srcPort: srcPort, dstPort: dstPort, len: len,
                  type: type, rawOp: op.rawValue, flags: flags, bufAlloc: bufAlloc, fwdCnt: fwdCnt)
    }

    public init(srcCID: UInt64, dstCID: UInt64, srcPort: UInt32, dstPort: UInt32, len: UInt32,
                type: UInt16, rawOp: UInt16, flags: UInt32, bufAlloc: UInt32, fwdCnt: UInt32) {
        self.srcCID = srcCID
        self.dstCID = dstCID
        self.srcPort = srcPort
        self.dstPort = dstPort
        self.len = len
        self.type = type
        self.op = rawOp
        self.flags = flags
        self.bufAlloc = bufAlloc
        self.fwdCnt = fwdCnt
    }

    /// Decodes the first 44 bytes; nil when fewer are given.
    public init?(_ bytes: [UInt8]) {
        guard bytes.count >= Self.size else { return nil }
        func le<T: FixedWidthInteger>(_: T.Type, _ at: Int) -> T {
            var value: T = 0
            for i in 0..<(T.bitWidth / 8) { value |= T(bytes[at + i]) << (8 * i) }
            return value
        }
        self.init(srcCID: le(UInt64.self, 0), dstCID: le(UInt64.self, 8),
                  srcPort: le(UInt32.self, 16), dstPort: le(UInt32.self, 20), len: le(UInt32.self, 24),
                  type: le(UInt16.self, 28), rawOp: le(UInt16.self, 30), flags: le(UInt32.self, 32),
                  bufAlloc: le(UInt32.self, 36), fwdCnt: le(UInt32.self, 40))
    }

    /// The op, or nil for a value the spec does not define.
    public var operation: VsockOp? { VsockOp(rawValue: op) }

    /// The 44 wire bytes.
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(Self.size)
        func append<T: FixedWidthInteger>(_ value: T) {
            for i in 0..<(T.bitWidth / 8) { out.append(UInt8(truncatingIfNeeded: value >> (8 * i))) }
        }
        append(srcCID); append(dstCID); append(srcPort); append(dstPort); append(len)
        append(type); append(op); append(flags); append(bufAlloc); append(fwdCnt)
        return out
    }
}
