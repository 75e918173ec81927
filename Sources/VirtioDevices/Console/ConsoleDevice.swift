import GuestMemory
import Synchronization
import Virtio

/// virtio-console (virtio 1.2, section 5.3) with one port and no optional features: the
/// guest's hvc0. Queue 0 (receiveq) carries host input to the guest, queue 1 (transmitq)
/// the guest's output to `output`.
public final class ConsoleDevice: VirtioDevice, @unchecked Sendable {
    public static let receiveQueue = 0
    public static let transmitQueue = 1
    /// Host input held for the guest until it posts receive buffers.
    public static let maxPendingInput = 64 * 1024
    /// The most Kite reads from one transmit chain (larger chains are cut, and logged).
    public static let maxOutputPerChain = 64 * 1024

    private let output: @Sendable ([UInt8]) -> Void
    /// `@unchecked Sendable`: input arrives from the main thread; everything else runs under
    /// the transport's device lock. The input buffer has its own lock.
    private let pending = Mutex<[UInt8]>([])

    public init(output: @escaping @Sendable ([UInt8]) -> Void) { self.output = output }

    public var type: VirtioDeviceType { .console }
    public var features: UInt64 { 0 }
    public var queueSizes: [UInt16] { [256, 256] }
    public func readConfig(offset: Int, count: Int) -> [UInt8] { [UInt8](repeating: 0, count: count) }
    public func writeConfig(offset: Int, bytes: [UInt8]) {}
    public func activate(features: UInt64, memory: GuestMemory) {}
    public func reset() { pending.withLock { $0.removeAll() } }

    /// Room for more host input.
    public var inputSpace: Int { pending.withLock { Self.maxPendingInput - $0.count } }

    /// Queues host input; returns how many bytes fit. The caller then notifies the receive
    /// queue so the device thread delivers them.
    @discardableResult
    public func enqueueInput(_ bytes: [UInt8]) -> Int {
        pending.withLock { p in
            let n = min(bytes.count, Self.maxPendingInput - p.count)
            p += bytes.prefix(n)
            return n
        }
    }

    public func process(queue index: Int, _ queue: inout Virtqueue, memory: GuestMemory) throws -> Bool {
        index == Self.transmitQueue ? try transmit(&queue, memory) : try receive(&queue, memory)
    }

    private func transmit(_ queue: inout Virtqueue, _ memory: GuestMemory) throws -> Bool {
        var used = false
        while let chain = try queue.nextChain(memory: memory) {
            let count = Int(min(chain.readableLength, UInt64(Self.maxOutputPerChain)))
            if count > 0 { output(try chain.read(from: memory, count: count)) }
            try queue.complete(headIndex: chain.headIndex, writtenLength: 0, memory: memory)
            used = true
        }
        return used
    }

    private func receive(_ queue: inout Virtqueue, _ memory: GuestMemory) throws -> Bool {
        var used = false
        while pending.withLock({ !$0.isEmpty }), let chain = try queue.nextChain(memory: memory) {
            let bytes = pending.withLock { p -> [UInt8] in
                let n = Int(min(UInt64(p.count), chain.writableLength))
                defer { p.removeFirst(n) }
                return Array(p.prefix(n))
            }
            try chain.write(bytes, to: memory)
            try queue.complete(headIndex: chain.headIndex, writtenLength: UInt32(bytes.count), memory: memory)
            used = true
        }
        return used
    }
}
