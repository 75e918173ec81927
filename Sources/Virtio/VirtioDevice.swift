import GuestMemory

/// Device types (virtio 1.2, section 5).
public enum VirtioDeviceType: UInt32, Sendable {
    case network = 1, block = 2, console = 3, entropy = 4, vsock = 19
}

/// Feature bits every Kite device offers through the transport.
public enum VirtioFeature {
    public static let version1: UInt64 = 1 << 32          // VIRTIO_F_VERSION_1
    public static let ringIndirectDescriptors: UInt64 = 1 << 28
    public static let ringEventIndex: UInt64 = 1 << 29
}

/// Why a device stopped serving its queues: the transport then sets DEVICE_NEEDS_RESET.
public struct VirtioDeviceError: Error, Equatable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A virtio device behind a transport. The transport owns the registers and queue setup;
/// the device owns its configuration space and serves its queues. All calls for one
/// device come from one thread at a time (the transport serializes them).
public protocol VirtioDevice: AnyObject {
    var type: VirtioDeviceType { get }
    /// Device-specific feature bits (the transport adds VERSION_1 and ring features).
    var features: UInt64 { get }
    /// One entry per queue: the largest size the driver may choose.
    var queueSizes: [UInt16] { get }
    /// Reads the device configuration space (offsets from 0x100 in the MMIO window).
    func readConfig(offset: Int, count: Int) -> [UInt8]
    func writeConfig(offset: Int, bytes: [UInt8])
    /// Called once the driver set DRIVER_OK: `features` are those the driver accepted.
    func activate(features: UInt64, memory: GuestMemory)
    /// Serves every available request on `queue`. Returns true when it used buffers (the
    /// transport then interrupts the driver). Throws when the guest broke the protocol.
    func process(queue index: Int, _ queue: inout Virtqueue, memory: GuestMemory) throws -> Bool
    /// Back to the reset state (driver wrote 0 to Status).
    func reset()
}

/// A device's configuration structure as the driver reads it.
public enum VirtioConfigSpace {
    /// `count` bytes at `offset` of `space`; bytes past the structure, or at a negative
    /// offset, read as zero.
    public static func read(_ space: [UInt8], offset: Int, count: Int) -> [UInt8] {
        guard count > 0 else { return [] }
        return (0..<count).map { i in
            let (at, overflow) = offset.addingReportingOverflow(i)
            return !overflow && at >= 0 && at < space.count ? space[at] : 0
        }
    }
}
