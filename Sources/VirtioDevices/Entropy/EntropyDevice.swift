import CHost
import GuestMemory
import Virtio

/// virtio-rng (virtio 1.2, section 5.4): fills every device-writable buffer the driver
/// offers with bytes from the host kernel's CSPRNG (getrandom).
public final class EntropyDevice: VirtioDevice {
    /// The most Kite hands out per request; a guest asking for more gets this much.
    public static let maxBytesPerRequest = 64 * 1024

    public init() {}

    public var type: VirtioDeviceType { .entropy }
    public var features: UInt64 { 0 }
    public var queueSizes: [UInt16] { [256] }
    public func readConfig(offset: Int, count: Int) -> [UInt8] { [UInt8](repeating: 0, count: count) }
    public func writeConfig(offset: Int, bytes: [UInt8]) {}
    public func activate(features: UInt64, memory: GuestMemory) {}
    public func reset() {}

    public func process(queue index: Int, _ queue: inout Virtqueue, memory: GuestMemory) throws -> Bool {
        var used = false
        while let chain = try queue.nextChain(memory: memory) {
            let count = Int(min(chain.writableLength, UInt64(Self.maxBytesPerRequest)))
            var bytes = [UInt8](repeating: 0, count: count)
            let got = bytes.withUnsafeMutableBytes { host_getrandom($0.baseAddress, UInt($0.count)) }
            let written = got > 0 ? Int(got) : 0
            if written > 0 { try chain.write(Array(bytes.prefix(written)), to: memory) }
            try queue.complete(headIndex: chain.headIndex, writtenLength: UInt32(written), memory: memory)
            used = true
        }
        return used
    }
}
